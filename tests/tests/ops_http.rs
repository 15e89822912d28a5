//! The operations side of a running broker, with real tools: `/metrics` checked by
//! `promtool check metrics` (Debian package prometheus) before and after MQTT traffic made by
//! `mosquitto_pub`/`mosquitto_sub`, `/health/*` and `/api/v1/status` over plain HTTP, HTTPS with
//! a bearer token through `curl`, `$SYS/broker/...` read with `mosquitto_sub`, and the status
//! page loaded in headless chromium (screenshot under `target/tmp/ops_http/`).
//!
//! Every broker here listens for HTTP on a free 127.0.0.1 port given in its config.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use robustmq_edge_e2e::*;

mod sync_support;

/// A broker of ours with its HTTP listener on a free port (in process unless `E2E_PROCESS=1`).
fn broker_with_http(extra: &str) -> (Broker, u16) {
    let http = free_port();
    let text = format!("sys_interval = 1\n{extra}\n[http]\nbind = \"127.0.0.1:{http}\"\n");
    let b = Broker::builder()
        .kind(BrokerKind::Edge)
        .config_text(text)
        .start();
    wait_port(http, "HTTP listener");
    (b, http)
}

/// Sample values by full series name (`name{labels}`).
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no series {key} in /metrics"))
}

fn tool(name: &str) -> Command {
    let c = Command::new(name);
    if which(name).is_none() {
        panic!("`{name}` not found: scripts/test.sh installs it (apt-get)");
    }
    c
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run tool")
}

/// [`run`], asserting the tool succeeded; `what` names it, with its stderr, when it did not.
fn run_ok(c: Command, what: &str) -> Output {
    let out = run(c);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `promtool check metrics` on `text`: panics with its complaints.
fn promtool_check(text: &str) {
    let out = run_with_stdin(tool("promtool").args(["check", "metrics"]), text.as_bytes());
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let mut c = tool("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_ok(c, &format!("mosquitto_pub {args:?}"));
}

/// `mosquitto_sub -q 1` until `count` messages or `secs` seconds: (topic, payload) pairs.
fn mosquitto_sub(port: u16, filter: &str, count: usize, secs: u32) -> Vec<(String, String)> {
    let mut c = tool("mosquitto_sub");
    // Topics may hold spaces (`$SYS/broker/retained messages/count`).
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        filter,
    ])
    .args([
        "-F",
        "%t=>%p",
        "-C",
        &count.to_string(),
        "-W",
        &secs.to_string(),
    ]);
    let out = run(c);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("=>"))
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// A CONNECT with protocol level 9: refused (CONNACK 0x01, unsupported version).
fn connect_with_unknown_protocol(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let connect = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 60, 0, 1, b'a',
    ];
    s.write_all(&connect).expect("send CONNECT");
    let mut buf = [0u8; 4];
    let _ = s.read(&mut buf);
}

#[test]
fn metrics_pass_promtool_and_move_with_traffic() {
    let (b, http) = broker_with_http("");
    let (status, before) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    promtool_check(&before);
    let m0 = series(&before);
    assert_eq!(value(&m0, "robustmq_edge_ready"), 1.0);
    assert_eq!(
        value(&m0, "robustmq_edge_max_memory_bytes"),
        (256u64 << 20) as f64
    );

    // A subscriber, three retained QoS 1 publishes (retained: stored, so committed), one
    // refused connection.
    let port = b.port();
    let sub = std::thread::spawn(move || mosquitto_sub(port, "metrics/#", 3, 10));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        mosquitto_pub(
            port,
            &[
                "-q",
                "1",
                "-r",
                "-t",
                &format!("metrics/{i}"),
                "-m",
                "hello",
            ],
        );
    }
    assert_eq!(sub.join().expect("subscriber").len(), 3);
    connect_with_unknown_protocol(port);

    // A PUBACK leaves at the journal's sync, before redb's commit ends and is counted: wait
    // (bounded) for the third commit to be counted before the snapshot.
    let commits = "robustmq_edge_storage_commit_duration_seconds_count";
    let wanted = m0.get(commits).copied().unwrap_or(0.0) + 3.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while value(&series(&http_get(http, "/metrics").1), commits) < wanted
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, after) = http_get(http, "/metrics");
    promtool_check(&after);
    let m1 = series(&after);
    let grew = |key: &str, by: f64| {
        let (a, z) = (m0.get(key).copied().unwrap_or(0.0), value(&m1, key));
        assert!(z >= a + by, "{key}: {a} -> {z}, expected +{by}");
    };
    grew("robustmq_edge_connections_total", 4.0);
    grew("robustmq_edge_messages_received_total{qos=\"1\"}", 3.0);
    grew(
        "robustmq_edge_payload_received_bytes_total{qos=\"1\"}",
        15.0,
    );
    grew("robustmq_edge_messages_sent_total{qos=\"1\"}", 3.0);
    grew("robustmq_edge_packets_received_total", 10.0);
    grew("robustmq_edge_network_sent_bytes_total", 20.0);
    grew(
        "robustmq_edge_connections_refused_total{reason=\"unsupported_protocol_version\"}",
        1.0,
    );
    grew("robustmq_edge_storage_commit_duration_seconds_count", 3.0);
    grew(
        "robustmq_edge_storage_commit_duration_seconds_bucket{le=\"+Inf\"}",
        3.0,
    );
    assert!(value(&m1, "robustmq_edge_retained_messages") >= 3.0);
    assert!(value(&m1, "robustmq_edge_storage_file_bytes") > 0.0);
}

#[test]
fn health_and_status_api_describe_the_running_broker() {
    let (b, http) = broker_with_http("");
    assert_eq!(http_get(http, "/health/live"), (200, "live\n".to_string()));
    assert_eq!(
        http_get(http, "/health/ready"),
        (200, "ready\n".to_string())
    );
    assert_eq!(http_get(http, "/nothing").0, 404);
    // A persistent session left offline with a queued message.
    let port = b.port();
    let mut c = tool("mosquitto_sub");
    c.args(["-p", &port.to_string(), "-i", "keeper", "-c", "-q", "1"])
        .args(["-t", "status/#", "-E"]);
    run_ok(c, "mosquitto_sub -c (persistent session)");
    mosquitto_pub(port, &["-q", "1", "-t", "status/x", "-m", "queued"]);
    let (status, body) = http_get(http, "/api/v1/status");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let broker = &v["broker"];
    assert_eq!(broker["sessions"]["offline_persistent"], 1, "{body}");
    assert_eq!(broker["queued"]["messages"], 1, "{body}");
    assert!(
        broker["queued"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{body}"
    );
    assert!(
        broker["connections"]["total"].as_u64().unwrap_or(0) >= 2,
        "{body}"
    );
    assert!(broker["subscriptions"].as_u64().unwrap_or(0) >= 1, "{body}");
    assert_eq!(v["ready"], true);
    assert!(v["history"]["samples"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
}

#[test]
fn sync_backlog_and_link_state_are_in_metrics_and_status() {
    let down = free_port(); // nothing listens there: the link never comes up
    let sync = format!(
        "[sync]\nnode_id = \"gw1\"\nupstreams = [\"tcp://127.0.0.1:{down}\"]\n\
         [[sync.forward]]\nfilter = \"up/#\"\nqos = 1\n"
    );
    let (b, http) = broker_with_http(&sync);
    for i in 0..5 {
        mosquitto_pub(
            b.port(),
            &["-q", "1", "-t", &format!("up/{i}"), "-m", "12345"],
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    let (_, text) = http_get(http, "/metrics");
    promtool_check(&text);
    let m = series(&text);
    assert_eq!(value(&m, "robustmq_edge_sync_backlog_messages"), 5.0);
    assert!(value(&m, "robustmq_edge_sync_backlog_bytes") > 0.0);
    assert!(value(&m, "robustmq_edge_sync_backlog_oldest_age_seconds") >= 1.0);
    assert_eq!(
        value(&m, "robustmq_edge_sync_link_state{state=\"connected\"}"),
        0.0
    );
    let states: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("robustmq_edge_sync_link_state{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(states, 1.0, "exactly one link state is current");
    assert_eq!(
        value(
            &m,
            "robustmq_edge_sync_rule_messages_in_total{rule=\"0\",filter=\"up/#\"}"
        ),
        5.0
    );
    let (_, body) = http_get(http, "/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["sync"]["backlog_messages"], 5, "{body}");
    assert_eq!(v["sync"]["node_id"], "gw1");
}

/// The HTTP status code curl gets for `url`, trusting only `ca` (and sending `token` as a
/// bearer token when given).
fn curl_status(url: &str, ca: &Path, token: Option<&str>) -> String {
    let mut c = tool("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ])
    .arg("--cacert")
    .arg(ca)
    .arg(url);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    String::from_utf8_lossy(&run(c).stdout).into_owned()
}

#[test]
fn https_listener_wants_the_bearer_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = sync_support::make_pki("ops-http");
    let ca_path = sync_support::write_pem(dir.path(), "ca.pem", &ca);
    let cert_path = sync_support::write_pem(dir.path(), "server.pem", &cert);
    let key_path = sync_support::write_pem(dir.path(), "server.key", &key);
    let http = free_port();
    let token = "s3cret-token-0123456789";
    let text = format!(
        "[http]\nbind = \"127.0.0.1:{http}\"\ntoken = \"{token}\"\n[http.tls]\n\
         cert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let _b = Broker::builder()
        .kind(BrokerKind::Edge)
        .config_text(text)
        .start();
    wait_port(http, "HTTP listener");
    let curl = |path: &str, auth: Option<&str>, scheme: &str| -> String {
        curl_status(
            &format!("{scheme}://localhost:{http}{path}"),
            &ca_path,
            auth,
        )
    };
    assert_eq!(curl("/metrics", None, "https"), "401");
    assert_eq!(
        curl("/api/v1/status", Some("wrong-token-0123456789"), "https"),
        "401"
    );
    assert_eq!(curl("/metrics", Some(token), "https"), "200");
    assert_eq!(curl("/api/v1/status", Some(token), "https"), "200");
    assert_eq!(
        curl("/health/ready", None, "https"),
        "200",
        "probes carry no token"
    );
    assert_ne!(
        curl("/health/ready", None, "http"),
        "200",
        "no plain HTTP on a TLS port"
    );
}

#[test]
fn a_public_http_bind_without_tls_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("edge.toml");
    std::fs::write(&cfg, "[http]\nbind = \"0.0.0.0:9883\"\n").expect("write config");
    let out = run({
        let mut c = Command::new(edge_binary());
        c.arg("check-config").arg("--config").arg(&cfg);
        c
    });
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`http.tls`"), "{err}");
}

/// The `$SYS/broker/...` topics a `$SYS/#` subscriber finds: retained, mosquitto's names and
/// formats, and invisible to `#`.
#[test]
fn sys_topics_are_retained_with_mosquitto_names_and_hidden_from_hash() {
    let (b, _http) = broker_with_http("");
    let port = b.port();
    mosquitto_pub(port, &["-q", "1", "-r", "-t", "plain/topic", "-m", "x"]);
    // A client may not write $SYS (v5: PUBACK 0x87; the value stays the broker's).
    let mut c = tool("mosquitto_pub");
    c.args(["-p", &port.to_string(), "-V", "5", "-q", "1"])
        .args(["-t", "$SYS/broker/version", "-m", "forged"]);
    let _ = run(c);
    std::thread::sleep(Duration::from_millis(1500));
    let got: BTreeMap<String, String> = mosquitto_sub(port, "$SYS/broker/#", 1000, 3)
        .into_iter()
        .collect();
    for name in [
        "clients/connected",
        "messages/received",
        "messages/sent",
        "load/messages/received/1min",
        "bytes/received",
        "bytes/sent",
        "subscriptions/count",
        "retained messages/count",
        "uptime",
        "version",
    ] {
        assert!(
            got.contains_key(&format!("$SYS/broker/{name}")),
            "$SYS/broker/{name} missing from {got:?}"
        );
    }
    let version = &got["$SYS/broker/version"];
    assert!(version.starts_with("robustmq-edge version "), "{version}");
    let uptime = &got["$SYS/broker/uptime"];
    assert!(
        uptime.ends_with(" seconds")
            && uptime
                .split(' ')
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok()),
        "{uptime}"
    );
    let received: u64 = got["$SYS/broker/publish/messages/received"]
        .parse()
        .expect("a number");
    assert!(received >= 1, "{got:?}");
    // `#` gets the ordinary retained message and nothing from $SYS [MQTT-4.7.2-1].
    let all = mosquitto_sub(port, "#", 1000, 2);
    assert_eq!(all, vec![("plain/topic".to_string(), "x".to_string())]);
}

#[test]
fn sys_interval_zero_publishes_nothing() {
    let http = free_port();
    let b = Broker::builder()
        .kind(BrokerKind::Edge)
        .config_text(format!(
            "sys_interval = 0\n[http]\nbind = \"127.0.0.1:{http}\"\n"
        ))
        .start();
    std::thread::sleep(Duration::from_millis(300));
    assert!(mosquitto_sub(b.port(), "$SYS/broker/#", 1, 2).is_empty());
}

/// Loads the status page from a running broker in headless chromium, lets its script fetch
/// `/api/v1/status`, and checks the figures in the DOM; saves a screenshot.
#[test]
fn status_page_shows_the_figures_in_headless_chromium() {
    let (b, http) = broker_with_http("");
    let port = b.port();
    for i in 0..4 {
        mosquitto_pub(port, &["-q", "1", "-t", &format!("page/{i}"), "-m", "hi"]);
    }
    let mut c = tool("mosquitto_sub");
    c.args([
        "-p",
        &port.to_string(),
        "-i",
        "page-keeper",
        "-c",
        "-q",
        "1",
    ])
    .args(["-t", "page/#", "-E"]);
    run_ok(c, "mosquitto_sub -c (persistent session)");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops_http");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let url = format!("http://127.0.0.1:{http}/");
    let dom = chromium(&url, &out_dir, &["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    let field = |id: &str| -> String {
        let start = text
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} in the page:\n{text}"));
        let rest = &text[start..];
        let open = rest.find('>').map(|i| i + 1).unwrap_or(0);
        let close = rest.find('<').unwrap_or(rest.len());
        rest[open..close.max(open)].trim().to_string()
    };
    assert_eq!(
        field("state"),
        "ok",
        "the script ran and read the API:\n{text}"
    );
    assert_eq!(field("sessions-offline"), "1");
    assert!(
        field("received-total").parse::<u64>().is_ok_and(|n| n >= 4),
        "{}",
        field("received-total")
    );
    assert_eq!(field("sync-state"), "off");
    assert!(field("version").starts_with("0."), "{}", field("version"));
    assert!(text.contains("<svg"), "the chart is drawn");
    let shot = out_dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    chromium(&url, &out_dir, &[&arg, "--window-size=1200,900"]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!("screenshot: {}", shot.display());
}

/// With a token, the page reads `/api/v1/status` only with the token from its URL fragment
/// and says so when it has none.
#[test]
fn status_page_sends_the_token_from_its_url_fragment() {
    let http = free_port();
    let token = "page-token-0123456789";
    let _b = Broker::builder()
        .kind(BrokerKind::Edge)
        .config_text(format!(
            "[http]\nbind = \"127.0.0.1:{http}\"\ntoken = \"{token}\"\n"
        ))
        .start();
    wait_port(http, "HTTP listener");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops_http");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let state = |url: &str| -> String {
        let dom = chromium(url, &out_dir, &["--dump-dom"]);
        let text = String::from_utf8_lossy(&dom.stdout).into_owned();
        let start = text.find("id=\"state\"").expect("#state in the page");
        let rest = &text[start..];
        let open = rest.find('>').map(|i| i + 1).unwrap_or(0);
        let close = rest.find('<').unwrap_or(rest.len()).max(open);
        rest[open..close].trim().to_string()
    };
    let base = format!("http://127.0.0.1:{http}/");
    assert_eq!(state(&base), "token needed");
    assert_eq!(
        state(&format!("{base}#token=wrong-token-000000")),
        "token needed"
    );
    assert_eq!(state(&format!("{base}#token={token}")), "ok");
}

/// Runs headless chromium on `url` with a fresh profile; the virtual time budget lets the
/// page's fetches finish before the DOM is dumped or the screenshot taken.
fn chromium(url: &str, out_dir: &Path, args: &[&str]) -> Output {
    let profile = tempfile::tempdir_in(out_dir).expect("profile dir");
    let mut c = tool("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url);
    run_ok(c, "chromium")
}

/// SIGHUP re-reads `[http.tls]`: after the certificate files are replaced by ones from another
/// CA, new HTTPS connections are served with the new certificate (verified against the new CA
/// only), without a restart.
#[test]
fn sighup_reloads_the_https_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca1, cert1, key1) = sync_support::make_pki("ops-http-old");
    let (ca2, cert2, key2) = sync_support::make_pki("ops-http-new");
    let ca1_path = sync_support::write_pem(dir.path(), "ca1.pem", &ca1);
    let ca2_path = sync_support::write_pem(dir.path(), "ca2.pem", &ca2);
    let cert_path = sync_support::write_pem(dir.path(), "server.pem", &cert1);
    let key_path = sync_support::write_pem(dir.path(), "server.key", &key1);
    let http = free_port();
    let text = format!(
        "[http]\nbind = \"127.0.0.1:{http}\"\ntoken = \"s3cret-token-0123456789\"\n[http.tls]\n\
         cert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let b = Broker::builder()
        .kind(BrokerKind::Edge)
        .process()
        .config_text(text)
        .start();
    wait_port(http, "HTTP listener");
    let ready_with =
        |ca: &Path| curl_status(&format!("https://localhost:{http}/health/ready"), ca, None);
    assert_eq!(ready_with(&ca1_path), "200");
    assert_ne!(ready_with(&ca2_path), "200", "not yet the new certificate");
    sync_support::write_pem(dir.path(), "server.pem", &cert2);
    sync_support::write_pem(dir.path(), "server.key", &key2);
    let before = b.log().matches("reload done").count();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.log().matches("reload done").count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ready_with(&ca2_path), "200", "{}", b.log());
    assert_ne!(ready_with(&ca1_path), "200", "the old certificate is gone");
}
