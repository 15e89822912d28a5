//! Store-and-forward sync against a real RobustMQ 0.4.11 server (`../shared/robustmq`, see its
//! README.md): the edge broker with a `[sync]` table forwards to RobustMQ, and an MQTT 5
//! observer subscribed on RobustMQ reads what arrives. The edge runs in the test process, except
//! in the test that kills it with `kill -9` (there it is the `robustmq-edge` binary).
//!
//! One RobustMQ runs for the whole test binary: its ports other than MQTT are fixed (TLS 1885,
//! HTTP 58080, gRPC 1228, ...), so only one instance fits on a machine. It is started on first
//! use in a fresh folder (`<target>/<profile>/robustmq-e2e`) on a free MQTT port, and stopped
//! when the test process exits. Tests share it through a read/write lock: each uses its own
//! node id, topics and client ids, and the test that stops and restarts the server holds the
//! lock exclusively. A file lock in the temp folder keeps two such test processes (e.g. from two
//! checkouts) from starting a server at the same time.
//!
//! What RobustMQ does that shapes these tests (README of `../shared/robustmq`):
//! - a topic is spread over 3 partitions, so messages do not arrive in publish order: the
//!   order is restored by the sequence in `edge-msg-id = "<node_id>:<seq>"`;
//! - a new subscriber can be handed messages stored before it subscribed: topics are unique per
//!   test and messages are counted by `edge-msg-id`;
//! - the certificate in `../shared/robustmq/certs` expired on 2026-10-12, so a verifying client
//!   refuses it (the edge reports "invalid peer certificate: certificate expired"). The server
//!   is therefore given a certificate for `localhost` signed by a CA generated here (through
//!   RobustMQ's `ROBUST_MQ_SERVER_BROKER_NETWORK_TLS_CERT` / `_TLS_KEY` overrides), and the TLS
//!   test trusts that CA.
//!
//! When `../shared/robustmq` is missing, the tests print why and pass, except under CI (`CI`
//! set, e.g. `CI=true`), where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use robustmq_edge_e2e::rumqttc;
use robustmq_edge_e2e::*;
use rumqttc::v5::mqttbytes::QoS as Q5;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

mod sync_support;
use sync_support::*;

/// RobustMQ's default user (README of `../shared/robustmq`).
const USER: &str = "admin";
const PASSWORD: &str = "robustmq";
/// RobustMQ's fixed MQTT-over-TLS and HTTP admin ports.
const TLS_PORT: u16 = 1885;
const HTTP_PORT: u16 = 58080;
/// Waits for RobustMQ: generous, it is a debug build on a shared machine.
const LONG: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------
// The RobustMQ server
// ------------------------------------------------------------------------------------------

/// The RobustMQ server of this test process.
struct RobustMq {
    /// `../shared/robustmq/run.sh`.
    script: PathBuf,
    /// Its folder (config, data, logs, pid).
    dir: PathBuf,
    /// MQTT over TCP on 127.0.0.1.
    port: u16,
    /// CA of the certificate served on the TLS port (generated here).
    tls_ca: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
}

impl RobustMq {
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `run.sh start DIR PORT` (same folder and port every time), with the generated TLS
    /// certificate; returns once MQTT accepts connections (and the TLS port too).
    fn start(&self) -> Result<(), String> {
        // RobustMQ splices these values into its TOML config: they must be quoted strings.
        let out = Command::new(&self.script)
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .env(
                "ROBUST_MQ_SERVER_BROKER_NETWORK_TLS_CERT",
                format!("\"{}\"", self.tls_cert.display()),
            )
            .env(
                "ROBUST_MQ_SERVER_BROKER_NETWORK_TLS_KEY",
                format!("\"{}\"", self.tls_key.display()),
            )
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`{} start {} {}` failed ({}):\n{}{}",
                self.script.display(),
                self.dir.display(),
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", TLS_PORT)).is_err() {
            if t.elapsed() > LONG {
                return Err(format!("RobustMQ TLS port {TLS_PORT} never opened"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `run.sh stop DIR`: SIGTERM to exactly the pid it started, SIGKILL after 10 s.
    fn stop(&self) {
        let out = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output()
            .expect("run robustmq run.sh stop");
        assert!(
            out.status.success(),
            "run.sh stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log_hint(&self) -> String {
        format!(
            "RobustMQ logs: {0}/server.log and {0}/data/logs/",
            self.dir.display()
        )
    }
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

static SERVER: OnceLock<Result<RobustMq, String>> = OnceLock::new();
/// `run.sh` and the server folder, for the stop at exit (set before the first start).
static STOP_AT_EXIT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
/// Shared by tests that only use the server; held exclusively by tests that stop it.
static USE: RwLock<()> = RwLock::const_new(());

/// Stops the server when the test process exits (libtest ends through `exit`).
extern "C" fn stop_server_at_exit() {
    if let Some((script, dir)) = STOP_AT_EXIT.get() {
        let _ = Command::new(script).arg("stop").arg(dir).output();
    }
}

/// The server, started on first use; None (after saying why) when `../shared/robustmq` is
/// missing outside CI.
fn server(test: &str) -> Option<&'static RobustMq> {
    let shared = workspace_root().join("../shared/robustmq");
    let script = shared.join("run.sh");
    if !script.is_file() {
        let why = format!(
            "{test}: no RobustMQ server at {} (run.sh missing)",
            shared.display()
        );
        assert!(!under_ci(), "{why}; these tests must run under CI");
        // Straight to stderr: libtest would hide an eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{why}: skipped (under CI=true this is a failure)"
        );
        return None;
    }
    match SERVER.get_or_init(|| start_server(script)) {
        Ok(s) => Some(s),
        Err(e) => panic!("RobustMQ did not start: {e}"),
    }
}

fn start_server(script: PathBuf) -> Result<RobustMq, String> {
    take_machine_lock()?;
    // <target>/<profile>/deps/<test exe> -> <target>/<profile>/robustmq-e2e
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("test executable has no profile folder")?
        .join("robustmq-e2e");
    // A server left by an aborted run of this binary (pid file in the same folder) goes first;
    // then a fresh cluster: RobustMQ keeps topics and messages in DIR/data.
    let _ = Command::new(&script).arg("stop").arg(&dir).output();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
    let (ca, cert, key) = make_pki("robustmq-e2e");
    let s = RobustMq {
        script,
        port: free_port(),
        tls_ca: write_pem(&tls, "ca.pem", &ca),
        tls_cert: write_pem(&tls, "cert.pem", &cert),
        tls_key: write_pem(&tls, "key.pem", &key),
        dir,
    };
    if STOP_AT_EXIT.set((s.script.clone(), s.dir.clone())).is_ok() {
        // SAFETY: registers a plain `extern "C" fn` without arguments.
        unsafe {
            libc::atexit(stop_server_at_exit);
        }
    }
    let t = Instant::now();
    // Its fixed ports may still be held by a server another test process just stopped, or by
    // an earlier test's client socket in TIME_WAIT (seen in CI: "Admin HTTP server failed to
    // start on port 58080"): wait until they can be bound (TIME_WAIT ends within 60 s), and
    // try a second time if the first start fails.
    wait_fixed_ports_free(Duration::from_secs(75));
    if let Err(first) = s.start() {
        eprintln!("RobustMQ start failed, trying once more: {first}");
        let _ = Command::new(&s.script).arg("stop").arg(&s.dir).output();
        wait_fixed_ports_free(Duration::from_secs(75));
        s.start()?;
    }
    eprintln!(
        "RobustMQ started on 127.0.0.1:{} in {:?} ({})",
        s.port,
        t.elapsed(),
        s.dir.display()
    );
    Ok(s)
}

/// Waits up to `limit` until RobustMQ's fixed TCP ports can be bound. A connect probe is not
/// enough: a client socket of an earlier test, or its TIME_WAIT (60 s), may hold the port as
/// its ephemeral local port without listening, and RobustMQ's bind then fails (seen in CI).
fn wait_fixed_ports_free(limit: Duration) {
    let t = Instant::now();
    let busy = || {
        [HTTP_PORT, 1228, 1778, TLS_PORT]
            .into_iter()
            .filter(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_err())
            .collect::<Vec<_>>()
    };
    let mut said = false;
    loop {
        let taken = busy();
        if taken.is_empty() {
            return;
        }
        if t.elapsed() >= limit {
            eprintln!("RobustMQ's fixed ports {taken:?} still cannot be bound after {limit:?}");
            return;
        }
        if !said {
            eprintln!("waiting for RobustMQ's fixed ports {taken:?} to become free");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Holds an exclusive `flock` on a file in the temp folder for the rest of the process, so two
/// test processes never run RobustMQ at once (its fixed ports would collide).
fn take_machine_lock() -> Result<(), String> {
    let path = std::env::temp_dir().join("robustmq-edge-e2e-robustmq.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let t = Instant::now();
    let mut said = false;
    // SAFETY: flock(2) on a descriptor we own.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if !said {
            eprintln!(
                "waiting for another test process using RobustMQ ({} is locked)",
                path.display()
            );
            said = true;
        }
        if t.elapsed() > Duration::from_secs(600) {
            return Err(format!("{} still locked after 10 minutes", path.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Released when the process exits.
    std::mem::forget(f);
    Ok(())
}

/// A test's hold on the server: shared, or exclusive for tests that stop it.
struct Rmq<G> {
    s: &'static RobustMq,
    /// The test may stop the server.
    exclusive: bool,
    _guard: G,
}

impl<G> std::ops::Deref for Rmq<G> {
    type Target = RobustMq;
    fn deref(&self) -> &RobustMq {
        self.s
    }
}

impl<G> Drop for Rmq<G> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.s.log_hint());
        }
        // A test that stopped the server and failed before starting it again: start it for
        // the tests still to come (the lock is still held here).
        if self.exclusive && TcpStream::connect(("127.0.0.1", self.s.port)).is_err() {
            eprintln!("RobustMQ is down at the end of a test: starting it again");
            if let Err(e) = self.s.start() {
                eprintln!("RobustMQ restart failed: {e}");
            }
        }
    }
}

/// `shared(test)` or `exclusive(test)` for the test it is written in, returning from the test
/// when it is skipped.
macro_rules! server_or_skip {
    ($access:ident) => {
        match $access(test_name!()).await {
            Some(rmq) => rmq,
            None => return,
        }
    };
}

/// The name of the function it is written in (a test), read from the type name of a function
/// declared there: `sync_robustmq::NAME::{{closure}}::here` (an async test body is a closure).
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        path.trim_end_matches("::here")
            .trim_end_matches("::{{closure}}")
            .rsplit("::")
            .next()
            .unwrap_or(path)
    }};
}

async fn shared(test: &str) -> Option<Rmq<RwLockReadGuard<'static, ()>>> {
    let s = server(test)?;
    Some(Rmq {
        s,
        exclusive: false,
        _guard: USE.read().await,
    })
}

async fn exclusive(test: &str) -> Option<Rmq<RwLockWriteGuard<'static, ()>>> {
    let s = server(test)?;
    Some(Rmq {
        s,
        exclusive: true,
        _guard: USE.write().await,
    })
}

// ------------------------------------------------------------------------------------------
// RobustMQ's HTTP admin API (127.0.0.1 needs no login)
// ------------------------------------------------------------------------------------------

/// One HTTP/1.1 request to 127.0.0.1:58080; returns the body parsed as JSON.
fn http(method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", HTTP_PORT)).expect("connect to RobustMQ HTTP");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{HTTP_PORT}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send HTTP request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read HTTP response");
    let text = String::from_utf8_lossy(&raw);
    let (head, mut payload) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP header end in {text:?}"));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path}: {head}\n{payload}"
    );
    let dechunked;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunked = dechunk(payload);
        payload = &dechunked;
    }
    serde_json::from_str(payload)
        .unwrap_or_else(|e| panic!("{method} {path}: reply is not JSON ({e}): {payload}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `POST path` with `body`; panics unless RobustMQ answers `code` 0 (or, when `exists_ok`,
/// an error saying the object already exists).
fn admin_post(path: &str, body: &str, exists_ok: bool) {
    let r = http("POST", path, Some(body));
    let ok = r["code"] == 0 || (exists_ok && r.to_string().to_ascii_lowercase().contains("exist"));
    assert!(ok, "POST {path} {body}: {r}");
}

/// RobustMQ's view of the connections of `client_id` (`GET /api/mqtt/client/list`).
fn clients_named(client_id: &str) -> Vec<serde_json::Value> {
    let r = http("GET", "/api/mqtt/client/list?limit=10000&page=1", None);
    assert_eq!(r["code"], 0, "client list: {r}");
    r["data"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("client list without data.data: {r}"))
        .iter()
        .filter(|c| c["client_id"] == client_id)
        .cloned()
        .collect()
}

/// The connection of `client_id` that has a live network connection (RobustMQ also lists
/// connections whose socket is gone).
fn live_client(client_id: &str) -> serde_json::Value {
    let all = clients_named(client_id);
    all.iter()
        .find(|c| !c["network_connection"].is_null())
        .cloned()
        .unwrap_or_else(|| panic!("RobustMQ lists no live connection of `{client_id}`: {all:?}"))
}

/// Creates tenant `tenant` with user `user` (not a superuser) and waits until that user can
/// log in to it over MQTT 5.
async fn ensure_tenant_user(rmq: &RobustMq, tenant: &str, user: &str, password: &str) {
    admin_post(
        "/api/cluster/tenant/create",
        &format!(r#"{{"tenant_name":"{tenant}","desc":"robustmq-edge e2e"}}"#),
        true,
    );
    admin_post(
        "/api/cluster/user/create",
        &format!(
            r#"{{"tenant":"{tenant}","username":"{user}","password":"{password}","is_superuser":false}}"#
        ),
        true,
    );
    let t = Instant::now();
    loop {
        let mut o = observer_options(rmq.port);
        o.set_credentials(user, password)
            .set_user_properties(vec![("tenant".into(), tenant.into())]);
        let err = match V5Client::try_connect_with(o).await {
            Ok(c) if c.connack.code == v5bytes::ConnectReturnCode::Success => {
                c.disconnect().await;
                return;
            }
            Ok(c) => format!("{:?}", c.connack.code),
            Err(e) => e,
        };
        assert!(
            t.elapsed() < LONG,
            "user {user} of tenant {tenant} cannot log in: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Edge and observer helpers
// ------------------------------------------------------------------------------------------

/// Forward rule: local `sensors/#` -> `e2e/<test>/<node_id>/sensors/#` at `qos`.
fn sensors_rule(test: &str, qos: u8) -> String {
    format!(
        "[[sync.forward]]\nfilter = \"sensors/#\"\nprefix = \"e2e/{test}/{{node_id}}/\"\nqos = {qos}\n"
    )
}

/// The edge's configuration forwarding `sensors/#` at `qos` to `rmq` as node `node` (see
/// [`sensors_rule`]), with `sync_extra` in `[sync]`.
fn sensors_config(rmq: &RobustMq, node: &str, sync_extra: &str, test: &str, qos: u8) -> String {
    edge_config_for(node, "", &rmq.url(), sync_extra, &sensors_rule(test, qos))
}

/// An observer on `e2e/{test}/#`, then the edge (in this process) forwarding there as in
/// [`sensors_config`].
async fn observed_sensors_edge(
    rmq: &RobustMq,
    node: &str,
    sync_extra: &str,
    test: &str,
    qos: u8,
) -> (Observer, Broker) {
    let obs = observer(rmq, &format!("e2e/{test}/#")).await;
    let edge = start_edge(sensors_config(rmq, node, sync_extra, test, qos));
    (obs, edge)
}

/// `[sync]` keys for RobustMQ's default user, no drain pacing; `more` may end with tables
/// such as `[sync.tls]`.
fn login(more: &str) -> String {
    format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n{UNPACED}{more}")
}

/// An MQTT 5 observer logged in as RobustMQ's default user (tenant `default`).
async fn observer(rmq: &RobustMq, filter: &str) -> Observer {
    let mut o = observer_options(rmq.port);
    o.set_credentials(USER, PASSWORD);
    Observer::start_with(o, &[filter]).await
}

/// Waits until `n` distinct `edge-msg-id`s arrived.
async fn wait_ids(obs: &Observer, n: usize, limit: Duration) -> Vec<Got> {
    obs.wait(&format!("{n} distinct edge-msg-ids"), limit, |g| {
        g.iter()
            .filter_map(Got::msg_id)
            .collect::<BTreeSet<_>>()
            .len()
            >= n
    })
    .await
}

/// What arrived for one node, deduplicated by `edge-msg-id`.
struct BySeq {
    /// Payload number by sequence.
    by_seq: BTreeMap<u64, usize>,
    duplicates: usize,
    /// True when first arrivals already came in sequence order.
    arrived_in_order: bool,
}

/// Checks what arrived upstream from `node`: every message carries `edge-msg-id =
/// "<node>:<seq>"`, one id always carries one payload, the payload numbers are exactly
/// `expected` (none missing, none extra), and sorting by seq gives them in publish order.
fn check_complete_by_seq(got: &[Got], node: &str, expected: Range<usize>) -> BySeq {
    let mut by_seq = BTreeMap::new();
    let mut first = Vec::new();
    let mut duplicates = 0;
    for g in got {
        let (seq, n) = (g.seq_of(node), g.number());
        match by_seq.insert(seq, n) {
            Some(prev) => {
                assert_eq!(prev, n, "edge-msg-id {node}:{seq} carried two payloads");
                duplicates += 1;
            }
            None => first.push(seq),
        }
    }
    let seen: BTreeSet<usize> = by_seq.values().copied().collect();
    let want: BTreeSet<usize> = expected.clone().collect();
    let missing: Vec<_> = want.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} of {} messages missing on RobustMQ: {missing:?}; unexpected: {extra:?}",
        missing.len(),
        want.len()
    );
    assert_eq!(
        by_seq.len(),
        want.len(),
        "one payload under two edge-msg-ids"
    );
    let restored: Vec<usize> = by_seq.values().copied().collect();
    let order: Vec<usize> = expected.collect();
    assert_eq!(
        restored, order,
        "sorting by the seq of edge-msg-id does not restore publish order"
    );
    BySeq {
        by_seq,
        duplicates,
        arrived_in_order: first.windows(2).all(|w| w[0] < w[1]),
    }
}

fn is_connected(s: &str) -> bool {
    json_str(s, "link_state").as_deref() == Some("connected")
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn skip_messages_name_the_test_they_come_from() {
    assert_eq!(test_name!(), "skip_messages_name_the_test_they_come_from");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_forwarding_tags_edge_msg_ids_sends_the_tenant_and_records_the_offset() {
    let rmq = server_or_skip!(shared);
    const NODE: &str = "rmq-v5";
    const N: usize = 100;
    // A tenant of its own whose only user is the edge's: logging in proves the tenant was sent
    // (that user does not exist in tenant `default`), and the observer only sees the tenant's
    // topics.
    let (tenant, user, password) = ("edge-e2e", "edge-e2e-user", "edge-e2e-pw");
    ensure_tenant_user(&rmq, tenant, user, password).await;
    let mut o = observer_options(rmq.port);
    o.set_credentials(user, password)
        .set_user_properties(vec![("tenant".into(), tenant.into())]);
    let obs = Observer::start_with(o, &["e2e/v5/#"]).await;

    let edge = start_edge(sensors_config(
        &rmq,
        NODE,
        &format!(
            "username = \"{user}\"\npassword = \"{password}\"\ntenant = \"{tenant}\"\n{UNPACED}"
        ),
        "v5",
        1,
    ));
    let s = wait_status(edge.data_dir(), "link connected", LONG, is_connected).await;
    assert_eq!(json_str(&s, "protocol").as_deref(), Some("5"), "{s}");
    assert_eq!(
        json_str(&s, "current_upstream").as_deref(),
        Some(format!("tcp://127.0.0.1:{}", rmq.port).as_str()),
        "{s}"
    );

    publish_all(edge.port(), "sensors/temp", 0..N, 0).await;
    let got = wait_ids(&obs, N, LONG).await;
    let d = check_complete_by_seq(&got, NODE, 0..N);
    assert!(
        got.iter().all(|g| g.topic == "e2e/v5/rmq-v5/sensors/temp"),
        "{:?}",
        got.iter().map(|g| &g.topic).collect::<BTreeSet<_>>()
    );
    eprintln!(
        "{N} messages on RobustMQ: seqs {:?}..={:?}, {} duplicates, arrived in seq order: {}",
        d.by_seq.keys().next(),
        d.by_seq.keys().last(),
        d.duplicates,
        d.arrived_in_order
    );

    let s = wait_drained(edge.data_dir(), LONG, Some(N as u64)).await;
    let offset = json_opt_u64(&s, "last_offset");
    assert!(
        offset.is_some(),
        "RobustMQ's PUBACK offset not recorded: {s}"
    );
    eprintln!("last_offset {offset:?}");

    let c = live_client("edge-rmq-v5");
    assert_eq!(c["mqtt_connection"]["tenant"], tenant, "{c}");
    assert_eq!(c["mqtt_connection"]["login_user"], user, "{c}");
    assert_eq!(c["network_connection"]["protocol"], "MQTT5", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_built_while_robustmq_is_down_survives_edge_kill_9_and_arrives_complete() {
    let rmq = server_or_skip!(exclusive);
    const NODE: &str = "rmq-down";
    const N: usize = 200;
    let mut edge = start_edge_process(sensors_config(&rmq, NODE, &login(""), "down", 1));
    wait_status(edge.data_dir(), "link connected", LONG, is_connected).await;

    rmq.stop();
    let s = wait_status(edge.data_dir(), "link lost", LONG, |s| !is_connected(s)).await;
    eprintln!("RobustMQ stopped; edge: {:?}", json_str(&s, "last_error"));
    publish_all(edge.port(), "sensors/bulk", 0..N, 0).await;
    let s = wait_status(edge.data_dir(), "all buffered", LONG, |s| {
        json_u64(s, "backlog_messages") == N as u64
    })
    .await;
    assert_eq!(json_u64(&s, "acked"), 0, "{s}");
    edge.kill9();

    let t = Instant::now();
    rmq.start()
        .unwrap_or_else(|e| panic!("RobustMQ restart: {e}"));
    eprintln!("RobustMQ restarted in {:?}", t.elapsed());
    let obs = observer(&rmq, "e2e/down/#").await;
    edge.restart();
    let t = Instant::now();
    let got = wait_ids(&obs, N, Duration::from_secs(90)).await;
    let d = check_complete_by_seq(&got, NODE, 0..N);
    eprintln!(
        "{N} buffered messages arrived {:?} after the edge restart: {} duplicates, arrived in seq \
         order: {}",
        t.elapsed(),
        d.duplicates,
        d.arrived_in_order
    );
    let s = wait_drained(edge.data_dir(), LONG, None).await;
    assert_eq!(json_u64(&s, "acked"), N as u64, "{s}");
    assert_eq!(json_u64(&s, "full") + json_u64(&s, "ttl"), 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlink_carries_robustmq_commands_to_local_subscribers() {
    let rmq = server_or_skip!(shared);
    let rules = "[[sync.downlink]]\nfilter = \"cmd/{node_id}/#\"\nqos = 1\n";
    let edge = start_edge(edge_config_for(
        "rmq-cmd",
        "",
        &rmq.url(),
        &login(""),
        rules,
    ));
    let mut local = V5Client::subscribed(&edge, "local", "cmd/rmq-cmd/#", Q5::AtLeastOnce).await;
    wait_status(edge.data_dir(), "link connected", LONG, is_connected).await;

    let mut o = observer_options(rmq.port);
    o.set_credentials(USER, PASSWORD);
    let mut cloud = V5Client::connect_with(o).await;
    probe_downlink(
        &mut cloud,
        &mut local,
        "cmd/rmq-cmd/probe",
        Q5::AtLeastOnce,
        Duration::from_millis(500),
        LONG,
    )
    .await;

    let commands = [
        ("cmd/rmq-cmd/reboot", Q5::AtLeastOnce, false, "now"),
        ("cmd/rmq-cmd/price/7", Q5::AtLeastOnce, false, "3.99"),
    ];
    assert_sent_down(&mut cloud, &mut local, "cmd/rmq-cmd/probe", LONG, &commands).await;
    wait_status(edge.data_dir(), "downlink counted", LONG, |s| {
        json_u64(s, "downlink_delivered") >= 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_forward_rule_delivers_every_message_at_qos2() {
    let rmq = server_or_skip!(shared);
    const NODE: &str = "rmq-q2";
    const N: usize = 100;
    let (obs, edge) = observed_sensors_edge(&rmq, NODE, &login(""), "q2", 2).await;
    publish_all(edge.port(), "sensors/sale", 0..N, 0).await;
    let got = wait_ids(&obs, N, LONG).await;
    let d = check_complete_by_seq(&got, NODE, 0..N);
    let qos: BTreeSet<u8> = got.iter().map(|g| g.qos).collect();
    assert_eq!(
        qos,
        BTreeSet::from([2]),
        "QoS of the copies a QoS 2 subscriber got"
    );
    let s = wait_drained(edge.data_dir(), LONG, Some(N as u64)).await;
    assert!(
        json_opt_u64(&s, "last_offset").is_some(),
        "offset of RobustMQ's PUBREC not recorded: {s}"
    );
    eprintln!(
        "QoS 2: {N} arrived, {} duplicates, in seq order: {}",
        d.duplicates, d.arrived_in_order
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_verified_against_the_ca_forwards() {
    let rmq = server_or_skip!(shared);
    const NODE: &str = "rmq-tls";
    const N: usize = 50;
    let obs = observer(&rmq, "e2e/tls/#").await;
    let tls = format!("[sync.tls]\nca_file = \"{}\"\n", rmq.tls_ca.display());
    let edge = start_edge(edge_config_for(
        NODE,
        "",
        &format!("mqtts://localhost:{TLS_PORT}"),
        &login(&tls),
        &sensors_rule("tls", 1),
    ));
    publish_all(edge.port(), "sensors/door", 0..N, 0).await;
    let got = wait_ids(&obs, N, LONG).await;
    check_complete_by_seq(&got, NODE, 0..N);
    let s = wait_status(edge.data_dir(), "all acknowledged", LONG, |s| {
        json_u64(s, "acked") == N as u64
    })
    .await;
    assert_eq!(
        json_str(&s, "current_upstream").as_deref(),
        Some(format!("tls://localhost:{TLS_PORT}").as_str()),
        "{s}"
    );
    let c = live_client("edge-rmq-tls");
    assert_eq!(c["network_connection"]["connection_type"], "Tls", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_as_not_authorized_and_the_backlog_is_kept() {
    let rmq = server_or_skip!(shared);
    const N: usize = 20;
    let (obs, edge) = observed_sensors_edge(
        &rmq,
        "rmq-badpw",
        &format!("username = \"{USER}\"\npassword = \"not-the-password\"\n{UNPACED}"),
        "badpw",
        1,
    )
    .await;
    publish_all(edge.port(), "sensors/x", 0..N, 0).await;
    let s = wait_status(edge.data_dir(), "refusal reported", LONG, |s| {
        json_str(s, "last_error").is_some() && json_u64(s, "backlog_messages") == N as u64
    })
    .await;
    let err = json_str(&s, "last_error").unwrap();
    assert!(
        err.contains("not authorized") && err.contains("0x87"),
        "last_error does not say \"not authorized (reason code 0x87)\": {err}"
    );
    // Refused again and again (backoff at most 500 ms): nothing dropped, nothing sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = sync_status(edge.data_dir());
    assert!(!is_connected(&s), "{s}");
    assert_eq!(json_u64(&s, "backlog_messages"), N as u64, "{s}");
    assert_eq!(json_u64(&s, "acked"), 0, "{s}");
    for k in ["full", "ttl", "rejected", "invalid"] {
        assert_eq!(json_u64(&s, k), 0, "dropped.{k}: {s}");
    }
    assert!(
        json_str(&s, "last_error").is_some_and(|e| e.contains("not authorized")),
        "{s}"
    );
    assert_eq!(obs.len(), 0, "something reached RobustMQ");
    eprintln!("wrong password: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_forwarding_logs_in_as_tenant_at_user() {
    let rmq = server_or_skip!(shared);
    const N: usize = 50;
    let (obs, edge) = observed_sensors_edge(
        &rmq,
        "rmq-v311",
        &login("protocol = \"3.1.1\"\ntenant = \"default\"\n"),
        "v311",
        1,
    )
    .await;
    publish_all(edge.port(), "sensors/hum", 0..N, 0).await;
    // No properties in 3.1.1: no edge-msg-id, so messages are told apart by payload.
    let got = obs
        .wait(&format!("{N} distinct payloads"), LONG, |g| {
            g.iter().map(Got::number).collect::<BTreeSet<_>>().len() >= N
        })
        .await;
    let seen: BTreeSet<usize> = got.iter().map(Got::number).collect();
    assert_eq!(seen, (0..N).collect::<BTreeSet<_>>());
    assert!(
        got.iter().all(|g| g.msg_id().is_none()),
        "edge-msg-id over MQTT 3.1.1?"
    );
    let s = wait_drained(edge.data_dir(), LONG, Some(N as u64)).await;
    assert_eq!(json_str(&s, "protocol").as_deref(), Some("3.1.1"), "{s}");
    assert_eq!(json_opt_u64(&s, "last_offset"), None, "{s}");
    let c = live_client("edge-rmq-v311");
    assert_eq!(c["mqtt_connection"]["login_user"], "default@admin", "{c}");
    assert_eq!(c["mqtt_connection"]["tenant"], "default", "{c}");
    assert_eq!(c["network_connection"]["protocol"], "MQTT4", "{c}");
}

/// Every string in a JSON value, depth first.
fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

/// The HTTP uplink against RobustMQ's own `POST /api/cluster/message/send`: every record is
/// acknowledged (2xx and code 0) and stored, as `POST /api/cluster/message/read` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_uplink_stores_every_record_through_robustmqs_api() {
    let _rmq = server_or_skip!(shared);
    const N: usize = 30;
    let edge = start_edge(edge_config_for(
        "rmq-http",
        "",
        &format!("http://127.0.0.1:{HTTP_PORT}"),
        &format!("tenant = \"default\"\n{UNPACED}"),
        &sensors_rule("http", 1),
    ));
    // Payloads `i|xxxx...` are told apart from the other strings of the read reply.
    publish_all(edge.port(), "sensors/http", 0..N, 16).await;
    let s = wait_drained(edge.data_dir(), LONG, Some(N as u64)).await;
    assert_eq!(json_u64(&s, "sent"), N as u64, "{s}");
    let topic = "e2e/http/rmq-http/sensors/http";
    let body = format!("{{\"tenant\":\"default\",\"topic\":\"{topic}\",\"offset\":0}}");
    let reply = http("POST", "/api/cluster/message/read", Some(&body));
    let mut strings = Vec::new();
    json_strings(&reply, &mut strings);
    let stored: BTreeSet<usize> = strings
        .iter()
        .filter_map(|s| s.split_once('|'))
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert_eq!(stored, (0..N).collect::<BTreeSet<_>>(), "{reply}");
}
