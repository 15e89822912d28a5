//! Unit tests of `config` (kept apart so that the module stays under 600 lines).

use super::*;

#[test]
fn embedded_defaults_parse_and_listen_on_localhost_1883() {
    let cfg = Config::from_toml(DEFAULT_TOML, "embedded").unwrap();
    assert_eq!(cfg.listeners[0].bind.to_string(), "127.0.0.1:1883");
    assert_eq!(cfg.durability, Durability::Immediate);
}

#[test]
fn embedded_document_equals_defaults() {
    let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let err = Config::from_toml("[limits]\nmax_conections = 3\n", "t").unwrap_err();
    assert!(err.to_string().contains("max_conections"), "{err}");
}

#[test]
fn messages_keep_the_documented_shape() {
    let err = Config::from_toml("[limits]\nmax_conections = 3\n", "edge.toml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("configuration error in edge.toml: unknown field `max_conections`"),
        "{text}"
    );
    assert!(
        text.ends_with("(key `limits.max_conections`, line 2, column 1)"),
        "{text}"
    );
    let err = Config::from_toml("[limits]\nreceive_maximum = 0\n", "edge.toml").unwrap_err();
    assert_eq!(
            err.to_string(),
            "configuration error in edge.toml: invalid value for `limits.receive_maximum`: must be at least 1"
        );
}

const SYNC: &str = "[sync]\nnode_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1883\"]\n";

#[test]
fn sync_is_read_in_the_same_pass() {
    let cfg = Config::from_toml(SYNC, "t").unwrap();
    let sync = cfg.sync.expect("[sync] present");
    assert_eq!(sync.node_id, "n1");
    assert_eq!(sync.upstreams[0].to_string(), "tcp://127.0.0.1:1883");
    assert_eq!(sync.keep_alive_secs, 30);
    assert!(Config::from_toml("", "t").unwrap().sync.is_none());
}

#[test]
fn sync_errors_name_the_full_key_path() {
    let cases = [
            // Deserialization: unknown key, wrong type, bad address.
            (format!("{SYNC}[[sync.forward]]\nfilter = \"a/#\"\nqoss = 1\n"), "`sync.forward[0].qoss`"),
            (format!("{SYNC}[[sync.forward]]\nfilter = \"a/#\"\n[[sync.forward]]\nfilter = \"b/#\"\nqos = \"x\"\n"), "`sync.forward[1].qos`"),
            ("[sync]\nnode_id = \"n\"\nupstreams = [\"tcp://a:1\", \"ws://b:1883\"]\n".to_string(), "`sync.upstreams[1]`"),
            // Validation, run at load time.
            (format!("{SYNC}[[sync.forward]]\nfilter = \"a/#\"\n[[sync.forward]]\nfilter = \"b/#\"\nqos = 0\n"), "invalid value for `sync.forward[1].qos`"),
            ("[sync]\nupstreams = [\"tcp://a:1\"]\n".to_string(), "invalid value for `sync.node_id`"),
        ];
    for (text, key) in cases {
        let err = Config::from_toml(&text, "edge.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration error in edge.toml: "),
            "{err}"
        );
        assert!(err.contains(key), "{key} not in: {err}");
    }
}

#[test]
fn anonymous_is_allowed_on_loopback_only_by_default() {
    let cfg = Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:1883\"\n", "t").unwrap();
    assert!(cfg.listeners[0].allows_anonymous());
    let text = "[[listeners]]\nbind = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"0.0.0.0:1884\"\n";
    let err = Config::from_toml(text, "t").unwrap_err().to_string();
    assert!(
        err.contains("`listeners[1]`") && err.contains("0.0.0.0:1884"),
        "{err}"
    );
    let cfg = Config::from_toml(&format!("{text}[auth]\npassword_file = \"pw\"\n"), "t").unwrap();
    assert!(!cfg.listeners[1].allows_anonymous());
    let open = "[[listeners]]\nbind = \"0.0.0.0:1884\"\nallow_anonymous = true\n";
    assert!(Config::from_toml(open, "t").unwrap().listeners[0].allows_anonymous());
}

#[test]
fn identity_as_username_needs_a_client_ca() {
    let text = "[[listeners]]\nbind = \"0.0.0.0:8883\"\n[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nuse_identity_as_username = true\n";
    let err = Config::from_toml(text, "t").unwrap_err().to_string();
    assert!(
        err.contains("listeners[0].tls.use_identity_as_username"),
        "{err}"
    );
    let ok = text.replace("use_identity", "client_ca_file = \"ca\"\nuse_identity");
    assert!(Config::from_toml(&ok, "t").unwrap().listeners[0].uses_identity());
}

#[test]
fn http_listener_defaults_to_loopback_without_tls_or_token() {
    let cfg = Config::from_toml("", "t").unwrap();
    assert!(cfg.http.enabled);
    assert_eq!(cfg.http.bind.to_string(), DEFAULT_HTTP_BIND);
    assert_eq!(cfg.sys_interval, 10);
    let off = Config::from_toml("[http]\nenabled = false\n", "t").unwrap();
    assert!(!off.http.enabled);
}

#[test]
fn http_on_a_public_address_needs_tls_and_a_token_naming_the_key() {
    let public = "[http]\nbind = \"0.0.0.0:9883\"\n";
    let err = Config::from_toml(public, "t").unwrap_err().to_string();
    assert!(
        err.contains("`http.tls`") && err.contains("0.0.0.0:9883"),
        "{err}"
    );
    let tls = format!("{public}[http.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n");
    let err = Config::from_toml(&tls, "t").unwrap_err().to_string();
    assert!(err.contains("`http.token`"), "{err}");
    let short = tls.replace("[http.tls]", "token = \"short\"\n[http.tls]");
    let err = Config::from_toml(&short, "t").unwrap_err().to_string();
    assert!(err.contains("`http.token`") && err.contains("16"), "{err}");
    let ok = tls.replace("[http.tls]", "token = \"0123456789abcdef0123\"\n[http.tls]");
    let cfg = Config::from_toml(&ok, "t").unwrap();
    assert!(cfg.http.tls.is_some());
    // Turned off, a public address is not checked.
    let off = format!("{public}enabled = false\n");
    assert!(Config::from_toml(&off, "t").is_ok());
}

#[test]
fn websocket_listeners_default_to_path_mqtt_and_bad_paths_name_the_key() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:8080\"\nkind = \"websocket\"\n";
    let cfg = Config::from_toml(text, "t").unwrap();
    assert_eq!(cfg.listeners[0].kind, ListenerKind::Websocket);
    assert_eq!(cfg.listeners[0].websocket_path(), "/mqtt");
    let cfg = Config::from_toml(&format!("{text}websocket_path = \"/ws/mqtt\"\n"), "t").unwrap();
    assert_eq!(cfg.listeners[0].websocket_path(), "/ws/mqtt");
    for bad in ["mqtt", "/a b", "/a?b", ""] {
        let err = Config::from_toml(&format!("{text}websocket_path = \"{bad}\"\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`listeners[0].websocket_path`"),
            "{bad}: {err}"
        );
    }
    let err = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\nwebsocket_path = \"/mqtt\"\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`listeners[0].websocket_path`") && err.contains("websocket"),
        "{err}"
    );
    let err = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:1\"\nkind = \"http\"\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("key `listeners[0].kind`"), "{err}");
}

#[test]
fn trusted_proxies_take_addresses_and_ranges_on_websocket_listeners_only() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:8080\"\nkind = \"websocket\"\n";
    let cfg = Config::from_toml(
        &format!("{text}trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n"),
        "t",
    )
    .unwrap();
    let got: Vec<String> = cfg.listeners[0]
        .trusted_proxies
        .iter()
        .map(|p| p.0.to_string())
        .collect();
    assert_eq!(got, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
    let err = Config::from_toml(
        &format!("{text}trusted_proxies = [\"10.0.0.0/8\", \"nginx\"]\n"),
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("listeners[0].trusted_proxies[1]") && err.contains("`nginx`"),
        "{err}"
    );
    let err = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`listeners[0].trusted_proxies`") && err.contains("websocket"),
        "{err}"
    );
    // With the PROXY protocol they are who may connect, on an MQTT listener too.
    let c = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\nproxy_protocol = true\n\
         trusted_proxies = [\"10.0.0.2\"]\n",
        "t",
    )
    .unwrap();
    assert!(c.listeners[0].proxy_protocol);
    assert_eq!(c.listeners[0].trusted_proxies.len(), 1);
}

#[test]
fn invalid_value_is_an_error_naming_the_key() {
    let err = Config::from_toml("[limits]\nreceive_maximum = 0\n", "t").unwrap_err();
    assert!(err.to_string().contains("limits.receive_maximum"), "{err}");
    let err = Config::from_toml("durability = \"sometimes\"\n", "t").unwrap_err();
    assert!(err.to_string().contains("durability"), "{err}");
}

/// `[section]\nkey = v` reads back as `v` for each of `ok` (through `get`), and is an error
/// naming `section.key` for each of `bad`.
fn accepts_only(section: &str, key: &str, ok: &[&str], bad: &[&str], get: fn(&Config) -> u64) {
    for v in ok {
        let c = Config::from_toml(&format!("[{section}]\n{key} = {v}\n"), "t").unwrap();
        assert_eq!(get(&c).to_string(), *v);
    }
    for v in bad {
        let err = Config::from_toml(&format!("[{section}]\n{key} = {v}\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{section}.{key}")), "{v}: {err}");
    }
}

#[test]
fn the_journal_size_is_zero_or_between_one_mebibyte_and_one_gibibyte() {
    accepts_only(
        "storage",
        "journal_bytes",
        &["0", "1048576", "16777216", "1073741824"],
        &["4096", "1048575", "1073741825"],
        |c| c.storage.journal_bytes,
    );
}

#[test]
fn the_queue_byte_bound_is_at_least_one_and_may_pass_four_gibibytes() {
    // u64, not usize: a 32-bit build (armhf) refused 4294967296 as out of range.
    accepts_only(
        "limits",
        "max_queued_bytes",
        &["1", "16777216", "4294967296", "18446744073709551615"],
        &["0", "-1"],
        |c| c.limits.max_queued_bytes,
    );
}

#[test]
fn the_subscriber_stall_time_is_between_100_ms_and_an_hour() {
    assert_eq!(Config::default().limits.subscriber_stall_ms, 2000);
    accepts_only(
        "limits",
        "subscriber_stall_ms",
        &["100", "2000", "3600000"],
        &["0", "99", "3600001"],
        |c| c.limits.subscriber_stall_ms,
    );
}

#[test]
fn on_damaged_is_set_aside_by_default_or_stop_and_nothing_else() {
    use crate::config::OnDamaged;
    assert_eq!(Config::default().storage.on_damaged, OnDamaged::SetAside);
    for (v, want) in [
        ("set_aside", OnDamaged::SetAside),
        ("stop", OnDamaged::Stop),
    ] {
        let c = Config::from_toml(&format!("[storage]\non_damaged = \"{v}\"\n"), "t").unwrap();
        assert_eq!(c.storage.on_damaged, want);
    }
    for v in ["\"delete\"", "\"SetAside\"", "true"] {
        let err = Config::from_toml(&format!("[storage]\non_damaged = {v}\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.on_damaged"), "{v}: {err}");
    }
}
