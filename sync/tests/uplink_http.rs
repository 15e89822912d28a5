//! HTTP uplink against a small test server shaped like RobustMQ's HTTP API
//! (`POST /api/cluster/message/send` -> `{code, message, data{offsets}}`, `POST /api/v1/login`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use edge_sync::{start, LinkState, Outbox, SyncConfig};
use serde_json::{json, Value};

#[derive(Default)]
struct Api {
    /// Stored messages: (tenant, topic, payload).
    stored: Mutex<Vec<(String, String, String)>>,
    /// Requests to answer with HTTP 500, then with `code` 1, before storing.
    fail_500: AtomicU64,
    fail_code: AtomicU64,
    /// When set, `send` needs `Authorization: Bearer <token>`.
    token: Option<String>,
    requests: AtomicU64,
}

fn serve(api: Arc<Api>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let api = api.clone();
            std::thread::spawn(move || {
                let _ = conn(&api, s);
            });
        }
    });
    port
}

fn conn(api: &Api, s: TcpStream) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let (mut len, mut auth) = (0usize, String::new());
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        api.requests.fetch_add(1, Ordering::SeqCst);
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, reply) = if path == "/api/v1/login" {
            if v["username"] == "edge" && v["password"] == "pw" {
                (200, json!({"code": 0, "message": "ok", "data": api.token}))
            } else {
                (
                    200,
                    json!({"code": 1, "message": "bad credentials", "data": null}),
                )
            }
        } else if api
            .token
            .as_ref()
            .is_some_and(|t| auth != format!("Bearer {t}"))
        {
            (401, json!({"code": 401, "message": "unauthorized"}))
        } else if api.fail_500.load(Ordering::SeqCst) > 0 {
            api.fail_500.fetch_sub(1, Ordering::SeqCst);
            (500, json!({"code": 500, "message": "storage busy"}))
        } else if api.fail_code.load(Ordering::SeqCst) > 0 {
            api.fail_code.fetch_sub(1, Ordering::SeqCst);
            (
                200,
                json!({"code": 1, "message": "tenant not ready", "data": null}),
            )
        } else {
            let mut st = api.stored.lock().unwrap();
            st.push((
                v["tenant"].as_str().unwrap_or("").into(),
                v["topic"].as_str().unwrap_or("").into(),
                v["payload"].as_str().unwrap_or("").into(),
            ));
            let off = st.len() as u64 - 1;
            (
                200,
                json!({"code": 0, "message": "success", "data": {"offsets": [off]}}),
            )
        };
        let body = reply.to_string();
        write!(
            w,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
}

fn http_cfg(port: u16, extra: &str) -> SyncConfig {
    let s = format!(
        "node_id = \"n1\"\nupstreams = [\"http://127.0.0.1:{port}\"]\ntenant = \"plant-1\"\n\
         status_interval_secs = 1\nbackoff = {{ initial_ms = 50, max_ms = 200 }}\n{extra}\n\
         [[forward]]\nfilter = \"m/#\"\nprefix = \"edge/\"\n"
    );
    SyncConfig::from_toml_str(&s).unwrap()
}

fn run_until_stored(
    api: &Arc<Api>,
    c: SyncConfig,
    n: usize,
) -> (TestDb, Arc<Outbox>, edge_sync::SyncHandle) {
    let t = TestDb::new();
    let ob = t.outbox(&c);
    let msgs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("m/{}", i % 3),
                format!("{{\"i\":{i}}}").into_bytes(),
            )
        })
        .collect();
    capture_owned(&ob, &t.db, &msgs);
    let dir = t.path().to_path_buf();
    let h = start(ob.clone(), c, dir, Arc::new(TestBus::default()));
    assert!(wait_until(Duration::from_secs(20), || api
        .stored
        .lock()
        .unwrap()
        .len()
        >= n));
    assert!(outbox_drains(&ob, Duration::from_secs(5)));
    (t, ob, h)
}

fn expected(n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            (
                "plant-1".into(),
                format!("edge/m/{}", i % 3),
                format!("{{\"i\":{i}}}"),
            )
        })
        .collect()
}

#[test]
fn records_are_posted_in_order_and_removed_after_code_0() {
    let api = Arc::new(Api::default());
    let port = serve(api.clone());
    let (_t, ob, h) = run_until_stored(&api, http_cfg(port, ""), 200);
    assert_eq!(*api.stored.lock().unwrap(), expected(200));
    let st = h.status();
    assert_eq!(st.link_state, LinkState::Connected);
    assert_eq!(
        st.current_upstream.as_deref(),
        Some(format!("http://127.0.0.1:{port}").as_str())
    );
    assert_eq!(ob.counters().acked, 200);
    assert_eq!(ob.counters().last_offset, Some(199));
    smol::block_on(h.shutdown());
}

#[test]
fn failures_are_retried_with_nothing_lost_or_reordered() {
    let api = Arc::new(Api::default());
    api.fail_500.store(3, Ordering::SeqCst);
    api.fail_code.store(2, Ordering::SeqCst);
    let port = serve(api.clone());
    let (_t, ob, h) = run_until_stored(&api, http_cfg(port, ""), 50);
    assert_eq!(*api.stored.lock().unwrap(), expected(50));
    assert!(h.status().last_error.unwrap().contains("tenant not ready"));
    assert_eq!(ob.counters().acked, 50);
    smol::block_on(h.shutdown());
}

#[test]
fn login_gets_a_bearer_token_when_the_api_wants_one() {
    let api = Arc::new(Api {
        token: Some("jwt-123".into()),
        ..Api::default()
    });
    let port = serve(api.clone());
    let (_t, _ob, h) = run_until_stored(
        &api,
        http_cfg(port, "username = \"edge\"\npassword = \"pw\""),
        20,
    );
    assert_eq!(*api.stored.lock().unwrap(), expected(20));
    smol::block_on(h.shutdown());
}

#[test]
fn payloads_the_api_cannot_carry_are_dropped_as_invalid() {
    let api = Arc::new(Api::default());
    let port = serve(api.clone());
    let c = http_cfg(port, "max_backlog_bytes = 16777216");
    let t = TestDb::new();
    let ob = t.outbox(&c);
    let big = vec![b'x'; 1024 * 1024 + 1];
    capture(
        &ob,
        &t.db,
        &[
            ("m/a", b"first".to_vec(), 1),
            ("m/a", vec![0xff, 0xfe], 1),
            ("m/a", big, 1),
            ("m/a", b"last".to_vec(), 1),
        ],
    );
    let h = start_uplink(&t, &ob, c);
    assert!(outbox_drains(&ob, Duration::from_secs(10)));
    let got: Vec<String> = api
        .stored
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.2.clone())
        .collect();
    assert_eq!(got, ["first", "last"]);
    assert_eq!(h.status().dropped.invalid, 2);
    smol::block_on(h.shutdown());
}

#[test]
fn http_upstream_configuration_is_checked() {
    let base = "node_id = \"n1\"\n";
    let c = SyncConfig::from_toml_str(&format!("{base}upstreams = [\"https://cloud.example\"]\n"))
        .unwrap();
    assert!(c.upstreams[0].http && c.upstreams[0].tls);
    assert_eq!(c.upstreams[0].port, 443);
    assert_eq!(c.upstreams[0].to_string(), "https://cloud.example:443");
    for (extra, key) in [
        (
            "upstreams = [\"http://a:8080\", \"tcp://b:1883\"]",
            "sync.upstreams",
        ),
        (
            "upstreams = [\"http://a:8080\"]\n[[downlink]]\nfilter = \"c/#\"",
            "sync.downlink",
        ),
    ] {
        let e = SyncConfig::from_toml_str(&format!("{base}{extra}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
}

/// A rule with a schedule over HTTP: its records wait while the others are posted, then go in
/// order when the window opens (manual clock).
#[test]
fn scheduled_rule_records_wait_for_their_window_over_http() {
    use edge_sync::schedule::ManualClock;
    const MONDAY_NOON: u64 = 1_704_067_200_000 + 12 * 3_600_000;
    let api = Arc::new(Api::default());
    let port = serve(api.clone());
    let c = http_cfg(
        port,
        "[[forward]]\nfilter = \"logs/#\"\nschedule = { windows = [\"01:00-05:00\"] }\n",
    );
    let t = TestDb::new();
    let ob = t.outbox(&c);
    for i in 0..50 {
        let p = format!("{i}").into_bytes();
        capture(&ob, &t.db, &[("logs/a", p.clone(), 1), ("m/0", p, 1)]);
    }
    let clock = Arc::new(ManualClock::new(MONDAY_NOON));
    let h = edge_sync::start_with_clock(
        ob.clone(),
        c,
        t.path().to_path_buf(),
        Arc::new(TestBus::default()),
        clock.clone(),
    );
    let topics = |prefix: &str| -> Vec<String> {
        let stored = api.stored.lock().unwrap();
        stored
            .iter()
            .filter(|(_, t, _)| t.starts_with(prefix))
            .map(|(_, _, p)| p.clone())
            .collect()
    };
    assert!(wait_until(Duration::from_secs(20), || topics("edge/m/")
        .len()
        == 50));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        topics("logs/").is_empty(),
        "logs posted out of their window"
    );
    assert_eq!(ob.counters().backlog_messages, 50);
    clock.set(MONDAY_NOON + 14 * 3_600_000);
    assert!(wait_until(Duration::from_secs(20), || topics("logs/")
        .len()
        == 50));
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(topics("logs/"), want);
    assert_eq!(topics("edge/m/"), want);
    smol::block_on(h.shutdown());
}
