//! Tests of `[sync]` parsing and validation: defaults, key names in errors, upstream
//! addresses.

use super::*;

fn parse(s: &str) -> Result<SyncConfig, SyncError> {
    SyncConfig::from_toml_str(s)
}

/// The error message of a config that must be refused.
fn refused(s: &str) -> String {
    match parse(s) {
        Ok(_) => panic!("accepted: {s}"),
        Err(e) => e.to_string(),
    }
}

const MIN: &str = "node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1883\"]\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MIN).unwrap();
    assert_eq!(c.protocol, ProtocolVersion::V5);
    assert_eq!(c.full_policy, FullPolicy::DropOldest);
    assert_eq!(c.client_id(), "edge-n1");
    assert!(c.capture_qos0);
}

/// Every refused config names what is wrong: (config, texts its error must contain).
#[test]
fn a_refused_config_names_the_key() {
    let cases: Vec<(String, &[&str])> = vec![
        // Indexed keys of rules.
        (
            format!("{MIN}[[forward]]\nfilter = \"a/#\"\n[[forward]]\nfilter = \"b/#\"\nqos = 0\n"),
            &["sync.forward[1].qos"],
        ),
        (
            format!("{MIN}[[forward]]\nfilter = \"a/#\"\npriority = 4\n"),
            &["sync.forward[0].priority"],
        ),
        (
            format!("{MIN}[[forward]]\nfilter = \"a/#/b\"\n"),
            &["sync.forward[0].filter"],
        ),
        (
            format!("{MIN}[[downlink]]\nfilter = \"cmd/{{node_id}}/#\"\nqos = 3\n"),
            &["sync.downlink[0].qos"],
        ),
        // Unknown keys.
        (
            format!("{MIN}[[forward]]\nfilter = \"a/#\"\nqoss = 1\n"),
            &["sync.forward[0]", "qoss"],
        ),
        (format!("{MIN}bogus = 1\n"), &["bogus"]),
        // Wrong types and values.
        (
            format!("{MIN}[backoff]\ninitial_ms = \"soon\"\n"),
            &["sync.backoff.initial_ms"],
        ),
        (
            format!("{MIN}full_policy = \"drop_newest\"\n"),
            &["sync.full_policy"],
        ),
        (
            "node_id = \"n\"\nupstreams = [\"tcp://a:1\", \"ws://b:1883\"]\n".into(),
            &["sync.upstreams[1]"],
        ),
        // Required keys: missing, or present but empty by default.
        ("upstreams = [\"tcp://a:1\"]\n".into(), &["node_id"]),
        ("node_id = \"n\"\n".into(), &["sync.upstreams"]),
        (
            format!("{MIN}[[forward]]\nqos = 2\n"),
            &["sync.forward[0].filter"],
        ),
        (
            format!("{MIN}[[downlink]]\nqos = 2\n"),
            &["sync.downlink[0].filter"],
        ),
    ];
    for (config, keys) in cases {
        let e = refused(&config);
        for key in keys {
            assert!(e.contains(key), "{config:?}: {e} does not name {key}");
        }
    }
}

#[test]
fn upstreams_are_parsed_once_when_read() {
    let c = parse("node_id = \"n\"\nupstreams = [\"mqtts://a\", \"tcp://[::1]:1884\"]\n").unwrap();
    let expect = vec![
        Upstream {
            http: false,
            tls: true,
            host: "a".into(),
            port: 8883,
        },
        Upstream {
            http: false,
            tls: false,
            host: "::1".into(),
            port: 1884,
        },
    ];
    assert_eq!(c.upstreams, expect);
    assert_eq!(c.upstream_list(), expect);
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = parse(MIN).unwrap();
    let d = SyncConfig::default();
    assert_eq!((c.keep_alive_secs, d.keep_alive_secs), (30, 30));
    assert_eq!(c.session_expiry_secs, 1800);
    assert_eq!(c.max_inflight, 64);
    assert_eq!(c.max_backlog_bytes, 256 * 1024 * 1024);
    assert_eq!(c.backoff, BackoffConfig::default());
    let c = parse(&format!(
        "{MIN}[[forward]]\nfilter = \"a/#\"\n[[downlink]]\nfilter = \"b/#\"\n"
    ))
    .unwrap();
    assert_eq!((c.forward[0].qos, c.forward[0].priority), (1, 0));
    assert_eq!(c.downlink[0].qos, 1);
}

#[test]
fn upstream_parsing() {
    let u = parse_upstream("tls://cloud.example:1885").unwrap();
    assert!(u.tls);
    assert_eq!(u.host, "cloud.example");
    assert_eq!(u.port, 1885);
    let u = parse_upstream("tcp://[::1]:1883").unwrap();
    assert_eq!(u.host, "::1");
    assert_eq!(parse_upstream("tcp://host").unwrap().port, 1883);
    assert!(parse_upstream("tcp://host:x").is_err());
    assert!(parse_upstream("tcp://host:1883/path").is_err());
    assert!(parse_upstream("tcp://:1883").is_err());
}

#[test]
fn mqtt_and_mqtts_schemes_mean_plain_and_tls() {
    let u = parse_upstream("mqtt://broker.local:1884").unwrap();
    assert!(!u.tls);
    assert_eq!((u.host.as_str(), u.port), ("broker.local", 1884));
    let u = parse_upstream("mqtts://cloud.example:1885").unwrap();
    assert!(u.tls);
    assert_eq!(u.port, 1885);
    assert_eq!(parse_upstream("mqtts://cloud.example").unwrap().port, 8883);
    assert_eq!(parse_upstream("mqtt://[::1]").unwrap().host, "::1");
    assert_eq!(parse_upstream("mqtt://[::1]").unwrap().port, 1883);
}

#[test]
fn tenant_over_mqtt311_needs_a_user_name() {
    let s = format!("{MIN}protocol = \"3.1.1\"\ntenant = \"t1\"\n");
    let e = refused(&s);
    assert!(e.contains("sync.tenant") && e.contains("username"), "{e}");
    let s = format!("{MIN}protocol = \"3.1.1\"\ntenant = \"t1\"\nusername = \"u\"\n");
    assert!(parse(&s).is_ok());
    let s = format!("{MIN}tenant = \"a@b\"\n");
    assert!(refused(&s).contains("sync.tenant"));
}
