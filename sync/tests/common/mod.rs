//! Test helpers: temporary databases, captures, a real mosquitto on 127.0.0.1, a mosquitto_sub
//! subscriber, a cuttable TCP proxy (to take the "upstream" down and up), and a test LocalBus.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_sync::{DownMessage, LocalBus, LocalMessage, Outbox, SyncConfig};

pub use test_support::{free_port, wait_port};

pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub db: Arc<redb::Database>,
}

impl TestDb {
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("edge.redb")).unwrap());
        TestDb { dir, db }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The outbox on this database for `cfg`.
    /// A new database and an outbox on it, configured by [`cfg`] with `extra`.
    pub fn with_outbox(extra: &str) -> (TestDb, SyncConfig, Arc<Outbox>) {
        let t = TestDb::new();
        let c = cfg(extra);
        let ob = t.outbox(&c);
        (t, c, ob)
    }
    pub fn outbox(&self, cfg: &SyncConfig) -> Arc<Outbox> {
        Outbox::open(self.db.clone(), cfg).unwrap()
    }
    /// A restart: drops `ob` and the database, opens both again from the file.
    pub fn reopen_outbox(self, ob: Arc<Outbox>, cfg: &SyncConfig) -> (TestDb, Arc<Outbox>) {
        drop(ob);
        let t = self.reopen();
        let ob = t.outbox(cfg);
        (t, ob)
    }
    /// Drops the database (all Arcs must be gone) and opens it again.
    pub fn reopen(self) -> TestDb {
        let TestDb { dir, db } = self;
        let db = Arc::try_unwrap(db).unwrap_or_else(|_| panic!("database still shared"));
        drop(db);
        let db = Arc::new(redb::Database::open(dir.path().join("edge.redb")).unwrap());
        TestDb { dir, db }
    }
}

pub fn cfg(extra: &str) -> SyncConfig {
    let s = format!("node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1\"]\n{extra}");
    SyncConfig::from_toml_str(&s).unwrap()
}

pub use edge_mqtt::util::now_ms;

/// A sync configuration for the upstream at 127.0.0.1:`port` with no rate limits and short
/// backoffs, followed by `extra` (rules, overrides).
pub fn sync_cfg(port: u16, extra: &str) -> SyncConfig {
    let s = format!(
        "node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:{port}\"]\nstatus_interval_secs = 1\n\
         max_messages_per_sec = 0\nmax_bytes_per_sec = 0\nmax_inflight = 128\n\
         backoff = {{ initial_ms = 100, max_ms = 400 }}\n{extra}"
    );
    SyncConfig::from_toml_str(&s).unwrap()
}

/// Captures `(topic, payload)` pairs built at run time, all at QoS 1, in one transaction.
pub fn capture_owned(ob: &Outbox, db: &redb::Database, msgs: &[(String, Vec<u8>)]) {
    let refs: Vec<_> = msgs
        .iter()
        .map(|(t, p)| (t.as_str(), p.clone(), 1))
        .collect();
    capture(ob, db, &refs);
}

/// Captures messages `(topic, payload, qos)` in one broker-like transaction.
pub fn capture(ob: &Outbox, db: &redb::Database, msgs: &[(&str, Vec<u8>, u8)]) {
    capture_at(ob, db, msgs, now_ms());
}

/// A local message as the broker hands it to the outbox: not retained, no properties.
pub fn local_message<'a>(topic: &'a str, payload: &'a [u8], qos: u8, at: u64) -> LocalMessage<'a> {
    LocalMessage {
        topic,
        payload,
        qos,
        retain: false,
        user_properties: &[],
        content_type: None,
        received_at_ms: at,
    }
}

/// Captures messages `(topic, payload, qos)` received at `at` (ms) in one broker-like
/// transaction.
pub fn capture_at(ob: &Outbox, db: &redb::Database, msgs: &[(&str, Vec<u8>, u8)], at: u64) {
    let txn = db.begin_write().unwrap();
    for (t, p, q) in msgs {
        if ob.wants(t, *q) && ob.admit(t, p.len()).is_ok() {
            ob.capture(&txn, &local_message(t, p, *q, at)).unwrap();
        }
    }
    txn.commit().unwrap();
    ob.committed(true);
}

/// Captures one QoS 1 message in a broker transaction that is then rolled back.
pub fn capture_rolled_back(ob: &Outbox, db: &redb::Database, topic: &str, payload: &[u8]) {
    let txn = db.begin_write().unwrap();
    ob.capture(&txn, &local_message(topic, payload, 1, now_ms()))
        .unwrap();
    txn.abort().unwrap();
    ob.committed(false);
}

/// `count` messages on `topic`, payload `i` as text, captured in batches of 500.
pub fn capture_n(ob: &Outbox, db: &redb::Database, topic: &str, start: usize, count: usize) {
    let mut i = start;
    while i < start + count {
        let end = (i + 500).min(start + count);
        let msgs: Vec<(&str, Vec<u8>, u8)> = (i..end)
            .map(|k| (topic, k.to_string().into_bytes(), 1))
            .collect();
        capture(ob, db, &msgs);
        i = end;
    }
}

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto with `extra` config lines after a plain anonymous listener on `port`.
    /// Per-client queues are unbounded (`max_queued_messages 0`): with mosquitto's default of
    /// 1,000 a test subscriber that falls behind under load silently lost every message past
    /// the 1,021st although the uplink had them acknowledged (seen in a CI-like run).
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "per_listener_settings true\nmax_queued_messages 0\nlistener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n"
        );
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto installed at /usr/sbin/mosquitto");
        wait_port(port, "mosquitto");
        Mosquitto { child, port, dir }
    }
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port(), "")
    }
    /// A fresh mosquitto and a `mosquitto_sub` on it reading `filter` (what reached the
    /// upstream).
    pub fn with_subscriber(filter: &str) -> (Mosquitto, Subscriber) {
        let mq = Mosquitto::start();
        let sub = Subscriber::start(mq.port, filter);
        (mq, sub)
    }
    /// [`Mosquitto::with_subscriber`], and a link to it that is down until `Proxy::up`.
    pub fn behind_proxy(filter: &str) -> (Mosquitto, Subscriber, Proxy) {
        let (mq, sub) = Mosquitto::with_subscriber(filter);
        let link = Proxy::new(mq.port);
        (mq, sub, link)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received message as printed by `mosquitto_sub -F '%t|%P|%p'`.
#[derive(Debug, Clone)]
pub struct Got {
    pub topic: String,
    pub props: String,
    pub payload: String,
}

impl Got {
    pub fn msg_id(&self) -> Option<String> {
        self.props
            .split(' ')
            .find_map(|p| p.strip_prefix("edge-msg-id:"))
            .map(str::to_string)
    }
    pub fn seq(&self) -> u64 {
        self.msg_id()
            .and_then(|id| id.rsplit(':').next().and_then(|s| s.parse().ok()))
            .expect("edge-msg-id with a sequence")
    }
}

pub struct Subscriber {
    child: Child,
    pub got: Arc<Mutex<Vec<Got>>>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-V",
                "mqttv5",
                "-h",
                "127.0.0.1",
                "-q",
                "2",
                "-F",
                "%t|%P|%p",
            ])
            .args(["-p", &port.to_string(), "-t", filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub installed");
        let out = child.stdout.take().unwrap();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(3, '|');
                let topic = parts.next().unwrap_or_default().to_string();
                let props = parts.next().unwrap_or_default().to_string();
                let payload = parts.next().unwrap_or_default().to_string();
                g.lock().unwrap().push(Got {
                    topic,
                    props,
                    payload,
                });
            }
        });
        // Make sure the subscription is in place: publish a probe until it is seen.
        let t = Instant::now();
        loop {
            let _ = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-t",
                    "probe/x",
                    "-m",
                    "probe",
                ])
                .status();
            std::thread::sleep(Duration::from_millis(100));
            if got.lock().unwrap().iter().any(|m| m.topic == "probe/x") {
                break;
            }
            if filter != "#" {
                // Probe not covered by the filter: give the subscription a moment instead.
                std::thread::sleep(Duration::from_millis(300));
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "subscriber never ready"
            );
        }
        got.lock().unwrap().retain(|m| m.topic != "probe/x");
        Subscriber { child, got }
    }

    /// The payloads received so far, in arrival order.
    pub fn payloads(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.payload.clone())
            .collect()
    }

    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        let t = Instant::now();
        loop {
            let v = self.got.lock().unwrap().clone();
            if v.len() >= n || t.elapsed() > within {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy 127.0.0.1:listen -> 127.0.0.1:target that can be taken down (connections cut,
/// port closed) and up again: the "upstream link".
pub struct Proxy {
    pub port: u16,
    target: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn new(target: u16) -> Proxy {
        Proxy {
            port: free_port(),
            target,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
            thread: None,
        }
    }

    pub fn up(&mut self) {
        if self.thread.is_some() {
            return;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let up = self.up.clone();
        let conns = self.conns.clone();
        let target = self.target;
        self.thread = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        conns.lock().unwrap().push(client.try_clone().unwrap());
                        conns.lock().unwrap().push(server.try_clone().unwrap());
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Cuts every connection and closes the port.
    pub fn down(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// LocalBus collecting what the downlink delivers (and `$SYS` status messages separately).
#[derive(Default)]
pub struct TestBus {
    pub msgs: Mutex<Vec<DownMessage>>,
    pub status: Mutex<Vec<DownMessage>>,
}

impl LocalBus for TestBus {
    fn publish(
        &self,
        msg: DownMessage,
    ) -> futures_lite::future::Boxed<Result<(), edge_sync::BusError>> {
        if msg.topic.starts_with("$SYS/") {
            let mut s = self.status.lock().unwrap();
            if s.len() < 1000 {
                s.push(msg);
            }
        } else {
            self.msgs.lock().unwrap().push(msg);
        }
        Box::pin(async { Ok(()) })
    }
}

pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn data_dir(p: &Path) -> PathBuf {
    p.to_path_buf()
}

/// Opens the outbox of `cfg` in `t` and starts sync on it with a collecting [`TestBus`].
pub fn start_sync(t: &TestDb, cfg: SyncConfig) -> (Arc<Outbox>, edge_sync::SyncHandle) {
    let ob = t.outbox(&cfg);
    let h = start_uplink(t, &ob, cfg);
    (ob, h)
}

/// Starts sync (uplink and downlink) on the outbox `ob` of `t`, with a test [`LocalBus`].
pub fn start_uplink(t: &TestDb, ob: &Arc<Outbox>, cfg: SyncConfig) -> edge_sync::SyncHandle {
    edge_sync::start(
        ob.clone(),
        cfg,
        t.path().to_path_buf(),
        Arc::new(TestBus::default()),
    )
}

/// A fresh mosquitto with a subscriber on `filter`, and sync (config [`sync_cfg`] with
/// `extra`) connected to it from a new test database.
pub fn connected_sync(
    filter: &str,
    extra: &str,
) -> (
    Mosquitto,
    Subscriber,
    TestDb,
    Arc<Outbox>,
    edge_sync::SyncHandle,
) {
    let (mq, sub) = Mosquitto::with_subscriber(filter);
    let t = TestDb::new();
    let (ob, h) = start_sync(&t, sync_cfg(mq.port, extra));
    assert!(wait_connected(&h), "sync never connected to mosquitto");
    (mq, sub, t, ob, h)
}

/// Waits up to 10 s for the status of `h` to report `n` messages in the outbox.
pub fn wait_backlog(h: &edge_sync::SyncHandle, n: u64) -> bool {
    wait_until(Duration::from_secs(10), || h.status().backlog_messages == n)
}

/// Waits up to `within` for the outbox `ob` to be empty (every message acknowledged upstream).
pub fn outbox_drains(ob: &Outbox, within: Duration) -> bool {
    wait_until(within, || ob.counters().backlog_messages == 0)
}

/// Waits up to 10 s for the uplink to report `Connected`.
pub fn wait_connected(h: &edge_sync::SyncHandle) -> bool {
    wait_until(Duration::from_secs(10), || {
        h.status().link_state == edge_sync::status::LinkState::Connected
    })
}

/// Each `(rule keys, key)`: a forward rule with those keys is refused, naming `key`.
pub fn assert_rule_errors(cases: &[(&str, &str)]) {
    for (extra, key) in cases {
        let s = format!(
            "node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1\"]\n[[forward]]\nfilter = \"a/#\"\n{extra}\n"
        );
        let e = SyncConfig::from_toml_str(&s).unwrap_err().to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
}
