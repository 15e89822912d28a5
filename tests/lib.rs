//! Harness shared by the end-to-end tests in `tests/tests/`.
//!
//! [`Broker`] starts the real `robustmq-edge` binary on a free 127.0.0.1 port with a temporary
//! data folder, waits until it accepts TCP connections, keeps its stderr/stdout in a log file
//! (printed when a test fails), stops it with SIGTERM, and can `kill -9` it and start it again
//! on the same folder and port.
//!
//! The binary is `$ROBUSTMQ_EDGE_BIN` when set, else `robustmq-edge` next to the test
//! executables' profile folder (so `CARGO_TARGET_DIR` and `--target` are respected), else
//! `$CARGO_TARGET_DIR/debug/robustmq-edge`, else `<workspace>/target/debug/robustmq-edge`.
//! `cargo test` does not build another package's binary: run `cargo build -p robustmq-edge`
//! first (the project's test script does).
//!
//! `E2E_BROKER=mosquitto` runs the same tests against `/usr/sbin/mosquitto` (or
//! `$MOSQUITTO_BIN`) instead: a reference to check the tests themselves. Mosquitto writes its
//! persistence file only on shutdown, so under it [`Broker::crash`] stops with SIGTERM instead of
//! SIGKILL, and tests of our own binary's command line are skipped (see [`Broker::is_edge`]).
//!
//! [`V3Client`] and [`V5Client`] wrap rumqttc's MQTT 3.1.1 and 5.0 clients: a task polls the
//! event loop and forwards every event; helpers wait, with a timeout, for the events a test
//! expects, keeping the others for later waits.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use bytes::Bytes;
pub use rumqttc;

/// Default bound on any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(500);

/// Which broker the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Our `robustmq-edge` binary (the default).
    Edge,
    /// Mosquitto, as a reference for the tests themselves (`E2E_BROKER=mosquitto`).
    Mosquitto,
}

impl BrokerKind {
    pub fn from_env() -> BrokerKind {
        match std::env::var("E2E_BROKER").as_deref() {
            Ok("mosquitto") => BrokerKind::Mosquitto,
            Ok("") | Ok("edge") | Ok("robustmq-edge") | Err(_) => BrokerKind::Edge,
            Ok(other) => panic!("E2E_BROKER={other}: expected `edge` or `mosquitto`"),
        }
    }
}

/// A broker process owned by one test.
pub struct Broker {
    kind: BrokerKind,
    port: u16,
    /// Temporary folder holding the data dir, the log and any generated config.
    root: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    config: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

/// How to start a broker; [`Broker::start`] is `BrokerBuilder::default().start()`.
#[derive(Default)]
pub struct BrokerBuilder {
    config_file: Option<PathBuf>,
    config_text: Option<String>,
    kind: Option<BrokerKind>,
}

impl BrokerBuilder {
    /// Passes `--config FILE` (our broker only; `--listen`/`--data-dir` still override).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Writes `text` to a config file in the broker's temp folder and passes it as `--config`.
    pub fn config_text(mut self, text: impl Into<String>) -> Self {
        self.config_text = Some(text.into());
        self
    }

    /// Chooses the broker regardless of `E2E_BROKER` (e.g. mosquitto as a sync upstream).
    pub fn kind(mut self, kind: BrokerKind) -> Self {
        self.kind = Some(kind);
        self
    }

    pub fn start(self) -> Broker {
        let kind = self.kind.unwrap_or_else(BrokerKind::from_env);
        let root = tempfile::Builder::new()
            .prefix("robustmq-edge-e2e-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = root.path().join("data");
        fs::create_dir_all(&data_dir).expect("create data dir");
        let log_path = root.path().join("broker.log");
        let mut config = self.config_file;
        if let Some(text) = self.config_text {
            let path = root.path().join("config.toml");
            fs::write(&path, text).expect("write config");
            config = Some(path);
        }
        if kind == BrokerKind::Mosquitto {
            assert!(
                config.is_none(),
                "a robustmq-edge config cannot be given to mosquitto: skip this test under it"
            );
        }
        let mut broker = Broker {
            kind,
            port: free_port(),
            root,
            data_dir,
            log_path,
            config,
            child: None,
            starts: 0,
        };
        broker.spawn_and_wait();
        broker
    }
}

impl Broker {
    /// Starts the broker under test with default settings.
    pub fn start() -> Broker {
        BrokerBuilder::default().start()
    }

    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// True when the broker under test is ours (not the mosquitto reference).
    pub fn is_edge(&self) -> bool {
        self.kind == BrokerKind::Edge
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    /// Everything the broker wrote to stdout/stderr so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Resident set size of the broker process, in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Sends SIGKILL and reaps the process: nothing after the last fsync survives.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait for killed broker");
        self.note("---- harness: broker killed with SIGKILL ----");
    }

    /// Stops the broker as abruptly as the broker under test allows: `kill -9` for ours;
    /// SIGTERM for mosquitto, which persists its state only on shutdown (a reference run then
    /// still checks the rest of the test's logic). Returns a description for messages.
    pub fn crash(&mut self) -> &'static str {
        match self.kind {
            BrokerKind::Edge => {
                self.kill9();
                "kill -9"
            }
            BrokerKind::Mosquitto => {
                eprintln!("mosquitto reference run: stopping with SIGTERM instead of SIGKILL");
                self.stop();
                "SIGTERM (mosquitto reference run)"
            }
        }
    }

    /// Sends SIGTERM and waits (up to 10 s, then SIGKILL) for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker is not running");
        let status = terminate(&mut child, Duration::from_secs(10));
        self.note(&format!("---- harness: broker stopped: {status:?} ----"));
        status
    }

    /// Starts the broker again on the same port and data folder.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop or kill the broker before restarting it"
        );
        self.spawn_and_wait();
    }

    /// Starts the broker again on the same port and folder, expecting it to fail: returns its
    /// exit status and log, or panics (after stopping it) when it starts serving.
    pub fn restart_expecting_failure(&mut self, limit: Duration) -> (ExitStatus, String) {
        assert!(
            self.child.is_none(),
            "stop or kill the broker before restarting it"
        );
        self.starts += 1;
        let mut cmd = self.command();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status, self.log());
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok()
                || Instant::now() > deadline
            {
                let _ = terminate(&mut child, Duration::from_secs(2));
                panic!(
                    "broker started serving although it was expected to fail:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the process is still alive (it did not crash on what the test did).
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("broker is not running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("broker exited unexpectedly: {status}\n{}", self.log());
        }
    }

    fn note(&self, line: &str) {
        if let Ok(mut f) = fs::OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(f, "{line}");
        }
    }

    fn spawn_and_wait(&mut self) {
        self.starts += 1;
        let mut cmd = self.command();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start broker {cmd:?}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "broker exited before accepting connections ({status}); log:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = terminate(&mut child, Duration::from_secs(2));
                panic!(
                    "broker did not accept on {} within 20 s; log:\n{}",
                    self.addr(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The command line for start number `self.starts`, output appended to the log.
    fn command(&self) -> Command {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        let mut cmd = match self.kind {
            BrokerKind::Edge => {
                let bin = edge_binary();
                let mut cmd = Command::new(&bin);
                if let Some(config) = &self.config {
                    cmd.arg("--config").arg(config);
                }
                cmd.arg("--listen")
                    .arg(self.addr().to_string())
                    .arg("--data-dir")
                    .arg(&self.data_dir);
                self.note(&format!(
                    "---- harness: start #{}: {cmd:?} ----",
                    self.starts
                ));
                cmd
            }
            BrokerKind::Mosquitto => {
                let conf = self.root.path().join("mosquitto.conf");
                fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
                         persistence true\npersistence_location {dir}/\n\
                         max_queued_messages 100000\nlog_dest stderr\nlog_type all\n",
                        port = self.port,
                        dir = self.data_dir.display()
                    ),
                )
                .expect("write mosquitto.conf");
                let bin = std::env::var("MOSQUITTO_BIN")
                    .unwrap_or_else(|_| "/usr/sbin/mosquitto".to_string());
                let mut cmd = Command::new(bin);
                cmd.arg("-c").arg(&conf);
                self.note(&format!(
                    "---- harness: start #{}: {cmd:?} ----",
                    self.starts
                ));
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        cmd
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = terminate(&mut child, Duration::from_secs(5));
            self.note(&format!(
                "---- harness: broker stopped at drop: {status:?} ----"
            ));
        }
        if std::thread::panicking() || std::env::var_os("E2E_SHOW_LOG").is_some() {
            eprintln!(
                "==== broker log ({:?}, port {}, {}) ====\n{}==== end of broker log ====",
                self.kind,
                self.port,
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            eprintln!("broker ignored SIGTERM for {grace:?}: sending SIGKILL");
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Root of the cargo workspace (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of the `robustmq-edge` binary under test; see the crate docs for the search order.
pub fn edge_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ROBUSTMQ_EDGE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "ROBUSTMQ_EDGE_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    let mut candidates = Vec::new();
    // <target>/<profile>/deps/<test-exe> -> <target>/<profile>/robustmq-edge
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(|deps| deps.parent()) {
            candidates.push(profile_dir.join("robustmq-edge"));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
        candidates.push(dir.join("debug").join("robustmq-edge"));
    }
    candidates.push(workspace_root().join("target/debug/robustmq-edge"));
    let bin = candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "robustmq-edge binary not found (looked at {candidates:?}); build it first with \
             `cargo build -p robustmq-edge` or set ROBUSTMQ_EDGE_BIN"
            )
        });
    warn_if_stale(&bin);
    bin
}

fn warn_if_stale(bin: &Path) {
    static WARNED: AtomicU64 = AtomicU64::new(0);
    if WARNED.swap(1, Ordering::Relaxed) != 0 {
        return;
    }
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let newest = newest_mtime(&workspace_root().join("edge/src"));
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "warning: {} is older than edge/src; run `cargo build -p robustmq-edge`",
            bin.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A unique client id / topic component for this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `fut` with a time limit, panicking with `what` when it is exceeded.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Events of one client connection, with a queue of those not consumed yet.
pub struct Events<E> {
    rx: mpsc::UnboundedReceiver<Result<E, String>>,
    pending: VecDeque<E>,
    closed: Option<String>,
}

impl<E: Debug> Events<E> {
    fn new(rx: mpsc::UnboundedReceiver<Result<E, String>>) -> Self {
        Events {
            rx,
            pending: VecDeque::new(),
            closed: None,
        }
    }

    /// Waits up to `limit` for the first event (queued or new) for which `pick` returns
    /// `Some`; other events stay queued. Err when the limit passes or the connection ends.
    pub async fn try_wait_for<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&E) -> Option<T>,
    ) -> Result<T, String> {
        if let Some(i) = self.pending.iter().position(|e| pick(e).is_some()) {
            let e = self.pending.remove(i).expect("index");
            return Ok(pick(&e).expect("picked"));
        }
        if let Some(why) = &self.closed {
            return Err(format!("connection closed: {why}"));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Err(format!("nothing matching within {limit:?}")),
                Ok(None) => {
                    self.closed = Some("event loop ended".into());
                    return Err("connection closed: event loop ended".into());
                }
                Ok(Some(Err(why))) => {
                    self.closed = Some(why.clone());
                    return Err(format!("connection closed: {why}"));
                }
                Ok(Some(Ok(e))) => match pick(&e) {
                    Some(v) => return Ok(v),
                    None => self.pending.push_back(e),
                },
            }
        }
    }

    /// Like [`Events::try_wait_for`], panicking with `what` on failure.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        pick: impl FnMut(&E) -> Option<T>,
    ) -> T {
        match self.try_wait_for(limit, pick).await {
            Ok(v) => v,
            Err(e) => panic!(
                "waiting for {what}: {e}; unconsumed events: {:?}",
                self.pending
            ),
        }
    }

    /// Waits until the connection ends (the event loop reports an error); returns why.
    pub async fn wait_closed(&mut self, limit: Duration) -> Result<String, String> {
        match self.try_wait_for(limit, |_| None::<()>).await {
            Err(e) if e.starts_with("connection closed") => Ok(e),
            Err(e) => Err(e),
            Ok(()) => unreachable!(),
        }
    }

    /// The closing reason when the connection already ended.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }
}

/// Spawns a task that polls a rumqttc event loop and forwards every event, ending (without
/// reconnecting) at the first error.
macro_rules! forward_events {
    ($eventloop:expr, $disconnect:pat, $close_after_disconnect:expr) => {{
        let mut eventloop = $eventloop;
        let close_after_disconnect: Arc<AtomicBool> = $close_after_disconnect;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(e) => {
                        // The event comes after the DISCONNECT was flushed to the socket.
                        let close = matches!(e, $disconnect)
                            && close_after_disconnect.load(Ordering::Relaxed);
                        if tx.send(Ok(e)).is_err() {
                            break;
                        }
                        if close {
                            // [MQTT-3.14.4-1]: the client closes the connection after
                            // DISCONNECT (dropping the event loop closes the socket).
                            let _ = tx.send(Err(CLOSED_BY_CLIENT.to_string()));
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                }
            }
        });
        (rx, task)
    }};
}

/// Closing reason when the client itself closed the socket after sending DISCONNECT.
pub const CLOSED_BY_CLIENT: &str = "closed by the client after DISCONNECT";

/// Time from the moment the client's DISCONNECT was flushed until the broker closed the
/// connection, for a client that (like rumqttc's own event loop) waits for the server to close.
async fn server_close_delay<E: Debug>(
    events: &mut Events<E>,
    is_disconnect: impl Fn(&E) -> bool,
) -> Duration {
    events
        .wait_for("our DISCONNECT to be written", WAIT, |e| {
            is_disconnect(e).then_some(())
        })
        .await;
    let sent = Instant::now();
    match events.wait_closed(Duration::from_secs(30)).await {
        Ok(_) => sent.elapsed(),
        Err(e) => panic!("broker did not close the connection after DISCONNECT: {e}"),
    }
}

// ------------------------------------------------------------------------------------------
// MQTT 3.1.1 client
// ------------------------------------------------------------------------------------------

/// A connected rumqttc MQTT 3.1.1 client.
pub struct V3Client {
    pub client: rumqttc::AsyncClient,
    pub events: Events<rumqttc::Event>,
    pub connack: rumqttc::ConnAck,
    task: JoinHandle<()>,
    close_after_disconnect: Arc<AtomicBool>,
}

/// MQTT 3.1.1 options for `id` against `broker` (keep alive 30 s, 1 MiB packets).
pub fn v3_options(broker: &Broker, id: &str, clean_session: bool) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, broker.host(), broker.port());
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(clean_session)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(100);
    o
}

impl V3Client {
    pub async fn connect(broker: &Broker, id: &str, clean_session: bool) -> V3Client {
        Self::connect_with(v3_options(broker, id, clean_session)).await
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect_with(options: rumqttc::MqttOptions) -> V3Client {
        match Self::try_connect_with(options).await {
            Ok(c) => c,
            Err(e) => panic!("MQTT 3.1.1 connect failed: {e}"),
        }
    }

    /// Connects; Err with the reason when the broker refuses or nothing arrives in time.
    pub async fn try_connect_with(options: rumqttc::MqttOptions) -> Result<V3Client, String> {
        let (client, eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let close_after_disconnect = Arc::new(AtomicBool::new(true));
        let (rx, task) = forward_events!(
            eventloop,
            rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect),
            close_after_disconnect.clone()
        );
        let mut events = Events::new(rx);
        let connack = events
            .try_wait_for(WAIT, |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) => Some(c.clone()),
                _ => None,
            })
            .await;
        match connack {
            Ok(connack) => Ok(V3Client {
                client,
                events,
                connack,
                task,
                close_after_disconnect,
            }),
            Err(e) => {
                task.abort();
                Err(e)
            }
        }
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        self.events
            .wait_for(&format!("SUBACK for {filter}"), WAIT, |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => {
                    Some(s.return_codes.clone())
                }
                _ => None,
            })
            .await
    }

    /// Subscribes and asserts the broker granted `qos`.
    pub async fn subscribe_ok(&mut self, filter: &str, qos: rumqttc::QoS) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(
            codes,
            vec![rumqttc::SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter}"
        );
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        self.events
            .wait_for(&format!("UNSUBACK for {filter}"), WAIT, |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(_)) => Some(()),
                _ => None,
            })
            .await
    }

    /// Publishes and waits for the end of its flow: the packet written (QoS 0), PUBACK
    /// (QoS 1) or PUBCOMP (QoS 2). Only one publish of this client may be outstanding.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: rumqttc::QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("queue PUBLISH");
        let what = format!("end of {qos:?} publish flow on {topic}");
        self.events
            .wait_for(&what, WAIT, |e| match (qos, e) {
                (
                    rumqttc::QoS::AtMostOnce,
                    rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)),
                ) => Some(()),
                (
                    rumqttc::QoS::AtLeastOnce,
                    rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)),
                ) => Some(()),
                (
                    rumqttc::QoS::ExactlyOnce,
                    rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_)),
                ) => Some(()),
                _ => None,
            })
            .await
    }

    /// Publishes `payloads` at QoS 1 on `topic` and waits for every PUBACK.
    pub async fn publish_all_qos1(&mut self, topic: &str, payloads: &[Vec<u8>], limit: Duration) {
        for p in payloads {
            self.client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, p.clone())
                .await
                .expect("queue PUBLISH");
        }
        let deadline = Instant::now() + limit;
        for n in 0..payloads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("PUBACK {} of {}", n + 1, payloads.len());
            self.events
                .wait_for(&what, left, |e| match e {
                    rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => Some(()),
                    _ => None,
                })
                .await;
        }
    }

    /// The next PUBLISH received from the broker.
    pub async fn recv(&mut self, limit: Duration) -> rumqttc::Publish {
        self.events
            .wait_for("an incoming PUBLISH", limit, |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
    }

    /// The next PUBLISH, or None when none arrives within `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<rumqttc::Publish> {
        self.events
            .try_wait_for(limit, |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
            .ok()
    }

    /// Asserts no PUBLISH arrives within `limit`.
    pub async fn expect_no_publish(&mut self, limit: Duration, context: &str) {
        if let Some(p) = self.try_recv(limit).await {
            panic!("{context}: unexpected PUBLISH {p:?}");
        }
    }

    /// Sends DISCONNECT, then closes the connection as the spec asks of clients.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        let _ = self.events.wait_closed(WAIT).await;
        self.task.abort();
    }

    /// Sends DISCONNECT and, like rumqttc's event loop left to itself, keeps the connection
    /// open until the broker closes it; returns how long the broker took.
    pub async fn disconnect_and_time_server_close(mut self) -> Duration {
        self.close_after_disconnect.store(false, Ordering::Relaxed);
        self.client.disconnect().await.expect("queue DISCONNECT");
        server_close_delay(&mut self.events, |e| {
            matches!(e, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))
        })
        .await
    }

    /// Drops the TCP connection without DISCONNECT (like a crashed client).
    pub fn drop_connection(self) {
        self.task.abort();
    }
}

impl Drop for V3Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------------------------
// MQTT 5.0 client
// ------------------------------------------------------------------------------------------

pub use rumqttc::v5::mqttbytes::v5 as v5bytes;

/// A connected rumqttc MQTT 5.0 client.
pub struct V5Client {
    pub client: rumqttc::v5::AsyncClient,
    pub events: Events<rumqttc::v5::Event>,
    pub connack: v5bytes::ConnAck,
    task: JoinHandle<()>,
    close_after_disconnect: Arc<AtomicBool>,
}

/// MQTT 5 options for `id` (keep alive 30 s, clean start, 1 MiB incoming packets).
pub fn v5_options(broker: &Broker, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, broker.host(), broker.port());
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_max_packet_size(Some(1 << 20));
    o
}

type V5Packet = rumqttc::v5::mqttbytes::v5::Packet;

impl V5Client {
    pub async fn connect(broker: &Broker, id: &str) -> V5Client {
        Self::connect_with(v5_options(broker, id)).await
    }

    pub async fn connect_with(options: rumqttc::v5::MqttOptions) -> V5Client {
        match Self::try_connect_with(options).await {
            Ok(c) => c,
            Err(e) => panic!("MQTT 5 connect failed: {e}"),
        }
    }

    pub async fn try_connect_with(options: rumqttc::v5::MqttOptions) -> Result<V5Client, String> {
        let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
        let close_after_disconnect = Arc::new(AtomicBool::new(true));
        let (rx, task) = forward_events!(
            eventloop,
            rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect),
            close_after_disconnect.clone()
        );
        let mut events = Events::new(rx);
        let connack = events
            .try_wait_for(WAIT, |e| match e {
                rumqttc::v5::Event::Incoming(V5Packet::ConnAck(c)) => Some(c.clone()),
                _ => None,
            })
            .await;
        match connack {
            Ok(connack) => Ok(V5Client {
                client,
                events,
                connack,
                task,
                close_after_disconnect,
            }),
            Err(e) => {
                task.abort();
                Err(e)
            }
        }
    }

    /// Subscribes with full options and properties; returns the SUBACK.
    pub async fn subscribe_with(
        &mut self,
        filter: v5bytes::Filter,
        props: Option<v5bytes::SubscribeProperties>,
    ) -> v5bytes::SubAck {
        let what = format!("SUBACK for {}", filter.path);
        match props {
            Some(p) => {
                self.client
                    .subscribe_many_with_properties(vec![filter], p)
                    .await
            }
            None => self.client.subscribe_many(vec![filter]).await,
        }
        .expect("queue SUBSCRIBE");
        self.events
            .wait_for(&what, WAIT, |e| match e {
                rumqttc::v5::Event::Incoming(V5Packet::SubAck(s)) => Some(s.clone()),
                _ => None,
            })
            .await
    }

    /// Subscribes and asserts the broker granted `qos`.
    pub async fn subscribe_ok(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) {
        let ack = self
            .subscribe_with(v5bytes::Filter::new(filter, qos), None)
            .await;
        assert_eq!(
            ack.return_codes,
            vec![v5bytes::SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter}"
        );
    }

    pub async fn unsubscribe(&mut self, filter: &str) -> v5bytes::UnsubAck {
        self.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        self.events
            .wait_for(&format!("UNSUBACK for {filter}"), WAIT, |e| match e {
                rumqttc::v5::Event::Incoming(V5Packet::UnsubAck(u)) => Some(u.clone()),
                _ => None,
            })
            .await
    }

    /// Publishes with properties and waits for the end of its flow (see [`V3Client::publish`]).
    pub async fn publish_with(
        &mut self,
        topic: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        props: Option<v5bytes::PublishProperties>,
    ) {
        let payload: Bytes = payload.into();
        match props {
            Some(p) => {
                self.client
                    .publish_with_properties(topic, qos, retain, payload, p)
                    .await
            }
            None => self.client.publish(topic, qos, retain, payload).await,
        }
        .expect("queue PUBLISH");
        use rumqttc::v5::mqttbytes::QoS;
        let what = format!("end of {qos:?} publish flow on {topic}");
        self.events
            .wait_for(&what, WAIT, |e| match (qos, e) {
                (QoS::AtMostOnce, rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                    Some(())
                }
                (QoS::AtLeastOnce, rumqttc::v5::Event::Incoming(V5Packet::PubAck(_))) => Some(()),
                (QoS::ExactlyOnce, rumqttc::v5::Event::Incoming(V5Packet::PubComp(_))) => Some(()),
                _ => None,
            })
            .await
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) {
        self.publish_with(topic, qos, retain, payload, None).await
    }

    /// Publishes `payloads` at QoS 1 on `topic` and waits for every PUBACK, each of which
    /// must carry a success reason code.
    pub async fn publish_all_qos1(&mut self, topic: &str, payloads: &[Vec<u8>], limit: Duration) {
        use rumqttc::v5::mqttbytes::QoS;
        for p in payloads {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, p.clone())
                .await
                .expect("queue PUBLISH");
        }
        let deadline = Instant::now() + limit;
        for n in 0..payloads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("PUBACK {} of {}", n + 1, payloads.len());
            let ack = self
                .events
                .wait_for(&what, left, |e| match e {
                    rumqttc::v5::Event::Incoming(V5Packet::PubAck(a)) => Some(a.clone()),
                    _ => None,
                })
                .await;
            assert!(
                matches!(
                    ack.reason,
                    v5bytes::PubAckReason::Success | v5bytes::PubAckReason::NoMatchingSubscribers
                ),
                "PUBACK {n} is not a success: {ack:?}"
            );
        }
    }

    pub async fn recv(&mut self, limit: Duration) -> v5bytes::Publish {
        self.events
            .wait_for("an incoming PUBLISH", limit, |e| match e {
                rumqttc::v5::Event::Incoming(V5Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
    }

    pub async fn try_recv(&mut self, limit: Duration) -> Option<v5bytes::Publish> {
        self.events
            .try_wait_for(limit, |e| match e {
                rumqttc::v5::Event::Incoming(V5Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
            .ok()
    }

    pub async fn expect_no_publish(&mut self, limit: Duration, context: &str) {
        if let Some(p) = self.try_recv(limit).await {
            panic!("{context}: unexpected PUBLISH {p:?}");
        }
    }

    /// Sends DISCONNECT, then closes the connection as the spec asks of clients.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        let _ = self.events.wait_closed(WAIT).await;
        self.task.abort();
    }

    /// See [`V3Client::disconnect_and_time_server_close`].
    pub async fn disconnect_and_time_server_close(mut self) -> Duration {
        self.close_after_disconnect.store(false, Ordering::Relaxed);
        self.client.disconnect().await.expect("queue DISCONNECT");
        server_close_delay(&mut self.events, |e| {
            matches!(
                e,
                rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)
            )
        })
        .await
    }

    pub fn drop_connection(self) {
        self.task.abort();
    }
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Vec<u8>` payloads "0".."n-1" used by the bulk tests.
pub fn numbered_payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| i.to_string().into_bytes()).collect()
}

/// Parses a payload made by [`numbered_payloads`].
pub fn payload_number(payload: &[u8]) -> usize {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {payload:?}"))
}

/// Writes `text` to a fresh file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
    path
}

/// What a run of the broker binary printed.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `robustmq-edge ARGS` to completion (killed after `limit`, which is a failure), for
/// commands such as `print-config` and `check-config` or a start expected to fail.
pub fn run_edge(args: &[&str], limit: Duration) -> RunOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(edge_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start robustmq-edge");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "robustmq-edge {args:?} still running after {limit:?}; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    RunOutput {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// True when the tests run against mosquitto; prints why `test` is skipped then.
pub fn skip_unless_edge(test: &str) -> bool {
    if BrokerKind::from_env() == BrokerKind::Edge {
        return false;
    }
    eprintln!("{test}: skipped under the mosquitto reference (checks robustmq-edge itself)");
    true
}
