//! Harness shared by the end-to-end tests in `tests/tests/`.
//!
//! [`Broker`] starts a broker on 127.0.0.1 with a temporary data folder and waits until it
//! serves; it can stop it and start it again on the same folder and port. Our broker runs in one
//! of two ways:
//!
//! - **in process** (the default): `robustmq_edge::server::start` serves on threads of the test
//!   process, bound to `127.0.0.1:0`. No binary to build or spawn, no port race. The broker's
//!   tracing output goes to the test's captured output (shown when the test fails). `stop` is
//!   the clean shutdown SIGTERM triggers in the binary; `restart` starts a new broker on the same
//!   data folder and port.
//! - **as a process** (`Broker::builder().process()`): the real `robustmq-edge` binary, with its
//!   stderr/stdout kept in a log file (printed when a test fails), stopped with SIGTERM. Only a
//!   process can be killed with `kill -9` ([`Broker::kill9`], [`Broker::crash`]), has a pid and a
//!   resident set size ([`Broker::pid`], [`Broker::rss_kib`]), a log to read ([`Broker::log`]) or
//!   an exit status of a failed start ([`Broker::restart_expecting_failure`]); calling these on
//!   an in-process broker panics, naming `.process()`.
//!
//! `E2E_PROCESS=1` runs every test's broker as a process (the binary), as before the in-process
//! mode existed.
//!
//! The binary is `$ROBUSTMQ_EDGE_BIN` when set, else `robustmq-edge` next to the test
//! executables' profile folder (so `CARGO_TARGET_DIR` and `--target` are respected), else
//! `$CARGO_TARGET_DIR/debug/robustmq-edge`, else `<workspace>/target/debug/robustmq-edge`.
//! `cargo test` does not build another package's binary: run `cargo build -p robustmq-edge`
//! first (the project's test script does). Process-mode tests and the command-line tests
//! ([`run_edge`], `sync status`) need it.
//!
//! `E2E_BROKER=mosquitto` runs the same tests against `/usr/sbin/mosquitto` (or
//! `$MOSQUITTO_BIN`) instead, always as a process: a reference to check the tests themselves.
//! Mosquitto writes its persistence file only on shutdown, so under it [`Broker::crash`] stops
//! with SIGTERM instead of SIGKILL, and tests of our own binary's command line are skipped (see
//! [`Broker::is_edge`]).
//!
//! [`V3Client`] and [`V5Client`] wrap rumqttc's MQTT 3.1.1 and 5.0 clients: a task polls the
//! event loop and forwards every event; helpers wait, with a timeout, for the events a test
//! expects, keeping the others for later waits. What the two share is written once, generic
//! over [`MqttEvent`] in [`Client`]; [`AnyClient`] and [`ReceivedPublish`] let one test body
//! check a behaviour for both versions (`tests/tests/both_versions`).
//!
//! [`broker_test`] runs a test body on a fresh broker within a time limit.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::{self, File};
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use robustmq_edge::config::{Config, ListenerConfig, ListenerKind, DEFAULT_TOML};
use robustmq_edge::server;
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
    /// Our `robustmq-edge` (the default).
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

/// True unless `E2E_PROCESS` asks for every broker to run as a process.
fn in_process_by_default() -> bool {
    match std::env::var("E2E_PROCESS").as_deref() {
        Ok("1") | Ok("true") | Ok("yes") => false,
        Ok("") | Ok("0") | Ok("false") | Ok("no") | Err(_) => true,
        Ok(other) => panic!("E2E_PROCESS={other}: expected 1 or 0"),
    }
}

/// A running broker.
enum Instance {
    /// Our binary or mosquitto.
    Process(Child),
    /// `server::start` in this process.
    InProcess(server::Running),
}

/// A broker owned by one test.
pub struct Broker {
    kind: BrokerKind,
    in_process: bool,
    /// 0 before the first in-process start (it binds port 0), then the port it got.
    port: u16,
    /// Temporary folder holding the data dir, the log and any generated config.
    root: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    config: Option<PathBuf>,
    /// A `kind = "websocket"` listener's port beside the plain one
    /// ([`BrokerBuilder::websocket_listener`]); the binary then gets its listeners from the
    /// config file instead of `--listen`.
    ws_port: Option<u16>,
    instance: Option<Instance>,
    starts: u32,
}

/// How to start a broker; [`Broker::start`] is `BrokerBuilder::default().start()`.
#[derive(Default)]
pub struct BrokerBuilder {
    config_file: Option<PathBuf>,
    config_text: Option<String>,
    kind: Option<BrokerKind>,
    in_process: Option<bool>,
    websocket: bool,
}

impl BrokerBuilder {
    /// Also listens for MQTT over WebSocket (ws://127.0.0.1:[`Broker::ws_port`]/mqtt), our
    /// broker only.
    pub fn websocket_listener(mut self) -> Self {
        self.websocket = true;
        self
    }

    /// Uses this config file (our broker only); the listener and `data_dir` are still the
    /// harness's (`--listen`/`--data-dir` for the binary).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Writes `text` to a config file in the broker's temp folder and uses it as
    /// [`BrokerBuilder::config_file`].
    pub fn config_text(mut self, text: impl Into<String>) -> Self {
        self.config_text = Some(text.into());
        self
    }

    /// Chooses the broker regardless of `E2E_BROKER` (e.g. mosquitto as a sync upstream).
    pub fn kind(mut self, kind: BrokerKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Runs our broker as a process of its own (the binary): for tests that `kill -9` it, read
    /// its pid, memory or log, or its exit status. Same as `in_process(false)`.
    pub fn process(self) -> Self {
        self.in_process(false)
    }

    /// In the test process (`true`, the default unless `E2E_PROCESS=1`) or as the binary.
    /// Mosquitto always runs as a process.
    pub fn in_process(mut self, yes: bool) -> Self {
        self.in_process = Some(yes);
        self
    }

    pub fn start(self) -> Broker {
        let kind = self.kind.unwrap_or_else(BrokerKind::from_env);
        let in_process = match kind {
            BrokerKind::Edge => self.in_process.unwrap_or_else(in_process_by_default),
            BrokerKind::Mosquitto => {
                assert!(
                    self.in_process != Some(true),
                    "mosquitto cannot run in the test process"
                );
                false
            }
        };
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
                config.is_none() && !self.websocket,
                "a robustmq-edge config cannot be given to mosquitto: skip this test under it"
            );
        }
        let port = if in_process { 0 } else { free_port() };
        let ws_port = self.websocket.then(free_port);
        if let (Some(ws), false) = (ws_port, in_process) {
            // `--listen` would replace every listener: the file names both.
            let mut text = match &config {
                Some(path) => fs::read_to_string(path).expect("read config"),
                None => String::new(),
            };
            text.push_str(&format!(
                "\n[[listeners]]\nbind = \"127.0.0.1:{port}\"\n\
                 [[listeners]]\nbind = \"127.0.0.1:{ws}\"\nkind = \"websocket\"\n"
            ));
            let path = root.path().join("config-listeners.toml");
            fs::write(&path, text).expect("write config");
            config = Some(path);
        }
        let mut broker = Broker {
            kind,
            in_process,
            port,
            root,
            data_dir,
            log_path,
            config,
            ws_port,
            instance: None,
            starts: 0,
        };
        broker.launch();
        broker
    }
}

impl Broker {
    /// Starts the broker under test with default settings (in process unless `E2E_PROCESS=1`
    /// or `E2E_BROKER=mosquitto`).
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

    /// True when the broker serves on threads of the test process (not as a process).
    pub fn is_in_process(&self) -> bool {
        self.in_process
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

    /// The WebSocket listener's port ([`BrokerBuilder::websocket_listener`]).
    pub fn ws_port(&self) -> u16 {
        self.ws_port
            .expect("started without BrokerBuilder::websocket_listener")
    }

    /// Panics, naming `.process()`, when the broker runs in the test process.
    fn process_only(&self, what: &str) {
        assert!(
            !self.in_process,
            "Broker::{what} needs the broker to run as a process, but this one runs inside the \
             test process: start it with `Broker::builder().process()`"
        );
    }

    fn child(&self) -> &Child {
        match &self.instance {
            Some(Instance::Process(child)) => child,
            Some(Instance::InProcess(_)) => unreachable!("checked by process_only"),
            None => panic!("broker is not running"),
        }
    }

    fn take_child(&mut self) -> Child {
        match self.instance.take() {
            Some(Instance::Process(child)) => child,
            Some(Instance::InProcess(_)) => unreachable!("checked by process_only"),
            None => panic!("broker is not running"),
        }
    }

    /// Process id of the running broker (process mode only).
    pub fn pid(&self) -> u32 {
        self.process_only("pid");
        self.child().id()
    }

    /// Everything the broker process wrote to stdout/stderr so far, all runs (process mode
    /// only: in process, the broker's log is part of the test's output).
    pub fn log(&self) -> String {
        self.process_only("log");
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Resident set size of the broker process, in KiB, from `/proc/<pid>/status` (process
    /// mode only).
    pub fn rss_kib(&self) -> u64 {
        self.process_only("rss_kib");
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Sends SIGKILL and reaps the process: nothing after the last fsync survives (process
    /// mode only).
    pub fn kill9(&mut self) {
        self.process_only("kill9");
        let mut child = self.take_child();
        child.kill().expect("SIGKILL");
        child.wait().expect("wait for killed broker");
        self.note("---- harness: broker killed with SIGKILL ----");
    }

    /// Stops the broker as abruptly as the broker under test allows: `kill -9` for ours
    /// (process mode only); SIGTERM for mosquitto, which persists its state only on shutdown (a
    /// reference run then still checks the rest of the test's logic). Returns a description
    /// for messages.
    pub fn crash(&mut self) -> &'static str {
        match self.kind {
            BrokerKind::Edge => {
                self.process_only("crash");
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

    /// Stops the broker cleanly and waits until it has: a process gets SIGTERM (SIGKILL after
    /// 10 s); in process, the shutdown SIGTERM triggers in the binary, reported as exit status
    /// 0 when it succeeds and 1 (the binary's exit code for a run error) when it does not.
    pub fn stop(&mut self) -> ExitStatus {
        let status = match self.instance.take().expect("broker is not running") {
            Instance::Process(mut child) => terminate(&mut child, Duration::from_secs(10)),
            Instance::InProcess(running) => {
                match futures_lite::future::block_on(running.shutdown()) {
                    Ok(()) => ExitStatus::from_raw(0),
                    Err(e) => {
                        eprintln!("in-process broker shutdown failed: {e}");
                        ExitStatus::from_raw(1 << 8)
                    }
                }
            }
        };
        self.note(&format!("---- harness: broker stopped: {status:?} ----"));
        status
    }

    /// Starts the broker again on the same port and data folder, the same way as before.
    pub fn restart(&mut self) {
        assert!(
            self.instance.is_none(),
            "stop or kill the broker before restarting it"
        );
        self.launch();
    }

    /// Starts the broker process again on the same port and folder, expecting it to fail:
    /// returns its exit status and log, or panics (after stopping it) when it starts serving
    /// (process mode only).
    pub fn restart_expecting_failure(&mut self, limit: Duration) -> (ExitStatus, String) {
        self.process_only("restart_expecting_failure");
        assert!(
            self.instance.is_none(),
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

    /// Asserts the broker is still alive and serving (it did not crash on what the test did).
    pub fn assert_running(&mut self) {
        match self.instance.as_mut().expect("broker is not running") {
            Instance::Process(child) => {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("broker exited unexpectedly: {status}\n{}", self.log());
                }
            }
            Instance::InProcess(_) => {
                if let Err(e) = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2)) {
                    panic!("the in-process broker no longer accepts connections: {e}");
                }
            }
        }
    }

    /// A harness line in the broker's log: the log file of a process, the test's output for a
    /// broker in process (where the broker's own log goes).
    fn note(&self, line: &str) {
        if self.in_process {
            eprintln!("{line}");
        } else if let Ok(mut f) = fs::OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Start number `self.starts + 1`, in process or as a process.
    fn launch(&mut self) {
        self.starts += 1;
        if self.in_process {
            self.start_in_process();
        } else {
            self.spawn_and_wait();
        }
    }

    /// The configuration the binary would load with `--config`/`--listen`/`--data-dir`.
    fn in_process_config(&self) -> Config {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path),
            None => Config::from_toml(DEFAULT_TOML, "embedded defaults"),
        }
        .unwrap_or_else(|e| panic!("broker config: {e}"));
        // As the binary's `--listen`: the first listener's `allow_anonymous` carries over.
        let allow_anonymous = cfg.listeners.first().and_then(|l| l.allow_anonymous);
        cfg.listeners = vec![ListenerConfig {
            bind: self.addr(),
            allow_anonymous,
            ..ListenerConfig::default()
        }];
        if let Some(ws) = self.ws_port {
            cfg.listeners.push(ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], ws)),
                kind: ListenerKind::Websocket,
                allow_anonymous,
                ..ListenerConfig::default()
            });
        }
        cfg.data_dir = self.data_dir.clone();
        cfg
    }

    fn start_in_process(&mut self) {
        init_in_process_logging();
        let cfg = self.in_process_config();
        self.note(&format!(
            "---- harness: start #{} in process on {}, data dir {} ----",
            self.starts,
            self.addr(),
            self.data_dir.display()
        ));
        let running =
            server::start(cfg).unwrap_or_else(|e| panic!("broker did not start in process: {e}"));
        self.port = running.addrs()[0].port();
        self.instance = Some(Instance::InProcess(running));
    }

    fn spawn_and_wait(&mut self) {
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
        self.instance = Some(Instance::Process(child));
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
                if self.ws_port.is_none() {
                    cmd.arg("--listen").arg(self.addr().to_string());
                }
                cmd.arg("--data-dir").arg(&self.data_dir);
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
        match self.instance.take() {
            Some(Instance::Process(mut child)) => {
                let status = terminate(&mut child, Duration::from_secs(5));
                self.note(&format!(
                    "---- harness: broker stopped at drop: {status:?} ----"
                ));
            }
            // Dropping `Running` shuts the broker down and waits for it.
            Some(Instance::InProcess(running)) => drop(running),
            None => {}
        }
        if self.in_process {
            return;
        }
        if std::thread::panicking() || std::env::var_os("E2E_SHOW_LOG").is_some() {
            eprintln!(
                "==== broker log ({:?}, port {}, {}) ====\n{}==== end of broker log ====",
                self.kind,
                self.port,
                self.log_path.display(),
                fs::read_to_string(&self.log_path).unwrap_or_default()
            );
        }
    }
}

/// Installs (once per test binary) the tracing subscriber of the in-process brokers: their log
/// lines go to libtest's capture of the test that started them (threads inherit it), printed
/// when that test fails. `RUST_LOG` sets the filter (default `info`, as the default config).
fn init_in_process_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .with_ansi(false)
            .with_thread_names(true)
            .try_init();
    });
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

pub use test_support::{free_port, run_with_stdin, wait_port};

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

/// Runs a test body on a fresh default broker ([`Broker::start`]) in a tokio runtime of its own
/// (the one `#[tokio::test]` would build), failing the test when the body takes longer than
/// `limit`. The body owns the broker; it is stopped when the body ends.
pub fn broker_test<F: Future<Output = ()>>(limit: Duration, body: impl FnOnce(Broker) -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for the test");
    runtime.block_on(async {
        let broker = Broker::start();
        within(limit, "test", body(broker)).await
    })
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

/// What the generic client code needs to know about the events of one protocol version
/// (`rumqttc::Event` for MQTT 3.1.1, `rumqttc::v5::Event` for 5.0).
pub trait MqttEvent: Debug + Send + 'static {
    /// The PUBLISH packet of this version.
    type Publish: Debug + Clone + ReceivedPublish;
    /// The PUBLISH of an incoming PUBLISH event.
    fn incoming_publish(&self) -> Option<&Self::Publish>;
    /// What an outgoing event wrote (the same type for both versions).
    fn outgoing(&self) -> Option<&rumqttc::Outgoing>;
    /// True for an incoming PUBCOMP.
    fn is_incoming_pubcomp(&self) -> bool;
    /// For an incoming PUBACK: Ok, or Err describing a failure reason code.
    fn puback(&self) -> Option<Result<(), String>>;
    /// The UNSUBACK packet of this version.
    type UnsubAck: Debug + Clone;
    /// The UNSUBACK of an incoming UNSUBACK event.
    fn unsuback(&self) -> Option<Self::UnsubAck>;

    /// True when our DISCONNECT was written to the socket.
    fn is_outgoing_disconnect(&self) -> bool {
        matches!(self.outgoing(), Some(rumqttc::Outgoing::Disconnect))
    }

    /// True for the event ending a publish flow at QoS `qos`: the PUBLISH written (0),
    /// PUBACK (1), PUBCOMP (2).
    fn ends_publish_flow(&self, qos: u8) -> bool {
        match qos {
            0 => matches!(self.outgoing(), Some(rumqttc::Outgoing::Publish(_))),
            1 => self.puback().is_some(),
            _ => self.is_incoming_pubcomp(),
        }
    }
}

impl MqttEvent for rumqttc::Event {
    type Publish = rumqttc::Publish;

    fn incoming_publish(&self) -> Option<&rumqttc::Publish> {
        match self {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p),
            _ => None,
        }
    }

    fn outgoing(&self) -> Option<&rumqttc::Outgoing> {
        match self {
            rumqttc::Event::Outgoing(o) => Some(o),
            _ => None,
        }
    }

    fn is_incoming_pubcomp(&self) -> bool {
        matches!(self, rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_)))
    }

    type UnsubAck = rumqttc::UnsubAck;
    fn unsuback(&self) -> Option<rumqttc::UnsubAck> {
        match self {
            rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(u)) => Some(u.clone()),
            _ => None,
        }
    }

    fn puback(&self) -> Option<Result<(), String>> {
        match self {
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => Some(Ok(())),
            _ => None,
        }
    }
}

impl MqttEvent for rumqttc::v5::Event {
    type Publish = v5bytes::Publish;

    fn incoming_publish(&self) -> Option<&v5bytes::Publish> {
        match self {
            rumqttc::v5::Event::Incoming(V5Packet::Publish(p)) => Some(p),
            _ => None,
        }
    }

    fn outgoing(&self) -> Option<&rumqttc::Outgoing> {
        match self {
            rumqttc::v5::Event::Outgoing(o) => Some(o),
            _ => None,
        }
    }

    fn is_incoming_pubcomp(&self) -> bool {
        matches!(self, rumqttc::v5::Event::Incoming(V5Packet::PubComp(_)))
    }

    type UnsubAck = v5bytes::UnsubAck;
    fn unsuback(&self) -> Option<v5bytes::UnsubAck> {
        match self {
            rumqttc::v5::Event::Incoming(V5Packet::UnsubAck(u)) => Some(u.clone()),
            _ => None,
        }
    }

    fn puback(&self) -> Option<Result<(), String>> {
        match self {
            rumqttc::v5::Event::Incoming(V5Packet::PubAck(a)) => Some(match a.reason {
                v5bytes::PubAckReason::Success | v5bytes::PubAckReason::NoMatchingSubscribers => {
                    Ok(())
                }
                _ => Err(format!("{a:?}")),
            }),
            _ => None,
        }
    }
}

impl<E: MqttEvent> Events<E> {
    /// The next PUBLISH received from the broker.
    pub async fn recv_publish(&mut self, limit: Duration) -> E::Publish {
        self.wait_for("an incoming PUBLISH", limit, |e| {
            e.incoming_publish().cloned()
        })
        .await
    }

    /// The next PUBLISH, or None when none arrives within `limit`.
    pub async fn try_recv_publish(&mut self, limit: Duration) -> Option<E::Publish> {
        self.try_wait_for(limit, |e| e.incoming_publish().cloned())
            .await
            .ok()
    }

    /// Asserts no PUBLISH arrives within `limit`.
    pub async fn expect_no_publish(&mut self, limit: Duration, context: &str) {
        if let Some(p) = self.try_recv_publish(limit).await {
            panic!("{context}: unexpected PUBLISH {p:?}");
        }
    }

    /// Waits for the end of the flow of a publish at QoS `qos` (see [`MqttEvent`]).
    async fn wait_publish_flow(&mut self, qos: u8, topic: &str) {
        let what = format!("end of QoS {qos} publish flow on {topic}");
        self.wait_for(&what, WAIT, |e| e.ends_publish_flow(qos).then_some(()))
            .await
    }

    /// Waits, within `limit` in all, for `n` PUBACKs, each of which must be a success.
    async fn wait_pubacks(&mut self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        for i in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("PUBACK {} of {n}", i + 1);
            if let Err(ack) = self.wait_for(&what, left, |e| e.puback()).await {
                panic!("PUBACK {i} is not a success: {ack}");
            }
        }
    }

    /// Time from the moment the client's DISCONNECT was flushed until the broker closed the
    /// connection, for a client that (like rumqttc's own event loop) waits for the server to
    /// close.
    async fn server_close_delay(&mut self) -> Duration {
        self.wait_for("our DISCONNECT to be written", WAIT, |e| {
            e.is_outgoing_disconnect().then_some(())
        })
        .await;
        let sent = Instant::now();
        match self.wait_closed(Duration::from_secs(30)).await {
            Ok(_) => sent.elapsed(),
            Err(e) => panic!("broker did not close the connection after DISCONNECT: {e}"),
        }
    }
}

/// A rumqttc event loop of either version, polled by the task of [`Link`].
trait EventSource: Send + 'static {
    type Event: MqttEvent;
    fn next_event(&mut self) -> impl Future<Output = Result<Self::Event, String>> + Send;
}

impl EventSource for rumqttc::EventLoop {
    type Event = rumqttc::Event;
    async fn next_event(&mut self) -> Result<rumqttc::Event, String> {
        self.poll().await.map_err(|e| e.to_string())
    }
}

impl EventSource for rumqttc::v5::EventLoop {
    type Event = rumqttc::v5::Event;
    async fn next_event(&mut self) -> Result<rumqttc::v5::Event, String> {
        self.poll().await.map_err(|e| e.to_string())
    }
}

/// Closing reason when the client itself closed the socket after sending DISCONNECT.
pub const CLOSED_BY_CLIENT: &str = "closed by the client after DISCONNECT";

/// The task polling one connection's event loop; aborted (closing the socket) at drop.
struct Link {
    task: JoinHandle<()>,
    /// Whether the client closes the socket once its DISCONNECT is written (it does unless a
    /// test times the server's close).
    close_after_disconnect: Arc<AtomicBool>,
}

impl Link {
    /// Spawns a task that polls `eventloop` and forwards every event, ending (without
    /// reconnecting) at the first error, then waits for the CONNACK `connack` picks.
    async fn open<L: EventSource, C>(
        mut eventloop: L,
        connack: impl FnMut(&L::Event) -> Option<C>,
    ) -> Result<(Link, Events<L::Event>, C), String> {
        let close_after_disconnect = Arc::new(AtomicBool::new(true));
        let close = close_after_disconnect.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.next_event().await {
                    Ok(e) => {
                        // The event comes after the DISCONNECT was flushed to the socket.
                        let closing = e.is_outgoing_disconnect() && close.load(Ordering::Relaxed);
                        if tx.send(Ok(e)).is_err() {
                            break;
                        }
                        if closing {
                            // [MQTT-3.14.4-1]: the client closes the connection after
                            // DISCONNECT (dropping the event loop closes the socket).
                            let _ = tx.send(Err(CLOSED_BY_CLIENT.to_string()));
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let link = Link {
            task,
            close_after_disconnect,
        };
        let mut events = Events::new(rx);
        // On error `link` is dropped, which aborts the task.
        let ack = events.try_wait_for(WAIT, connack).await?;
        Ok((link, events, ack))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------------------------
// Client of either version
// ------------------------------------------------------------------------------------------

/// What the version-independent client methods need of rumqttc's 3.1.1 and 5.0 clients.
pub trait ClientApi: Send + 'static {
    type Event: MqttEvent;
    type ConnAck: Debug + Clone;
    /// Queues a QoS 1 PUBLISH.
    fn publish_qos1(&self, topic: &str, payload: Vec<u8>) -> impl Future<Output = ()> + Send;
    /// Queues DISCONNECT.
    fn queue_disconnect(&self) -> impl Future<Output = ()> + Send;
    /// Queues UNSUBSCRIBE from `filter`.
    fn queue_unsubscribe(&self, filter: &str) -> impl Future<Output = ()> + Send;
}

/// `ClientApi` for one of rumqttc's two clients: their request methods have the same names and
/// shapes, with the QoS type of their version.
macro_rules! client_api {
    ($client:ty, $event:ty, $connack:ty, $qos1:expr) => {
        impl ClientApi for $client {
            type Event = $event;
            type ConnAck = $connack;
            async fn publish_qos1(&self, topic: &str, payload: Vec<u8>) {
                self.publish(topic, $qos1, false, payload)
                    .await
                    .expect("queue PUBLISH")
            }
            async fn queue_disconnect(&self) {
                self.disconnect().await.expect("queue DISCONNECT")
            }
            async fn queue_unsubscribe(&self, filter: &str) {
                self.unsubscribe(filter).await.expect("queue UNSUBSCRIBE")
            }
        }
    };
}

client_api!(
    rumqttc::AsyncClient,
    rumqttc::Event,
    rumqttc::ConnAck,
    rumqttc::QoS::AtLeastOnce
);
client_api!(
    rumqttc::v5::AsyncClient,
    rumqttc::v5::Event,
    v5bytes::ConnAck,
    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
);

/// A connected rumqttc client ([`V3Client`] or [`V5Client`]): the methods here are the same
/// for both versions, those of one version are on its alias.
pub struct Client<C: ClientApi> {
    pub client: C,
    pub events: Events<C::Event>,
    pub connack: C::ConnAck,
    link: Link,
}

impl<C: ClientApi> Client<C> {
    /// Publishes `payloads` at QoS 1 on `topic` and waits for every PUBACK, each of which
    /// must carry a success reason code.
    pub async fn publish_all_qos1(&mut self, topic: &str, payloads: &[Vec<u8>], limit: Duration) {
        for p in payloads {
            self.client.publish_qos1(topic, p.clone()).await;
        }
        self.events.wait_pubacks(payloads.len(), limit).await
    }

    /// The next PUBLISH received from the broker.
    pub async fn recv(&mut self, limit: Duration) -> <C::Event as MqttEvent>::Publish {
        self.events.recv_publish(limit).await
    }

    /// The next PUBLISH, or None when none arrives within `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<<C::Event as MqttEvent>::Publish> {
        self.events.try_recv_publish(limit).await
    }

    /// Asserts no PUBLISH arrives within `limit`.
    pub async fn expect_no_publish(&mut self, limit: Duration, context: &str) {
        self.events.expect_no_publish(limit, context).await
    }

    /// The topics and (UTF-8) payloads of the next `n` PUBLISHes, sorted; panics, naming the
    /// receiver `who` and listing what came, when one does not arrive within `limit`.
    pub async fn recv_sorted(
        &mut self,
        n: usize,
        limit: Duration,
        who: &str,
    ) -> Vec<(String, String)> {
        let mut got = Vec::new();
        while got.len() < n {
            let p = self
                .try_recv(limit)
                .await
                .unwrap_or_else(|| panic!("{who} received only {got:?} of {n} messages"));
            got.push((p.topic(), String::from_utf8_lossy(p.payload()).into_owned()));
        }
        got.sort();
        got
    }

    /// Unsubscribes from `filter` and returns the UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) -> <C::Event as MqttEvent>::UnsubAck {
        self.client.queue_unsubscribe(filter).await;
        self.events
            .wait_for(&format!("UNSUBACK for {filter}"), WAIT, |e| e.unsuback())
            .await
    }

    /// Sends DISCONNECT, then closes the connection as the spec asks of clients.
    pub async fn disconnect(mut self) {
        self.client.queue_disconnect().await;
        let _ = self.events.wait_closed(WAIT).await;
    }

    /// Sends DISCONNECT and, like rumqttc's event loop left to itself, keeps the connection
    /// open until the broker closes it; returns how long the broker took.
    pub async fn disconnect_and_time_server_close(mut self) -> Duration {
        self.link
            .close_after_disconnect
            .store(false, Ordering::Relaxed);
        self.client.queue_disconnect().await;
        self.events.server_close_delay().await
    }

    /// Drops the TCP connection without DISCONNECT (like a crashed client).
    pub fn drop_connection(self) {
        drop(self.link);
    }
}

// ------------------------------------------------------------------------------------------
// Either version, seen the same way
// ------------------------------------------------------------------------------------------

/// A received PUBLISH of either version, read the same way by the behaviours tested for both
/// versions (QoS as `rumqttc::QoS`).
pub trait ReceivedPublish {
    fn topic(&self) -> String;
    fn payload(&self) -> &[u8];
    fn qos(&self) -> rumqttc::QoS;
    fn retain(&self) -> bool;
    fn dup(&self) -> bool;
}

impl ReceivedPublish for rumqttc::Publish {
    fn topic(&self) -> String {
        self.topic.clone()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn qos(&self) -> rumqttc::QoS {
        self.qos
    }
    fn retain(&self) -> bool {
        self.retain
    }
    fn dup(&self) -> bool {
        self.dup
    }
}

impl ReceivedPublish for v5bytes::Publish {
    fn topic(&self) -> String {
        String::from_utf8(self.topic.to_vec()).expect("utf-8 topic")
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn qos(&self) -> rumqttc::QoS {
        v3_qos(self.qos)
    }
    fn retain(&self) -> bool {
        self.retain
    }
    fn dup(&self) -> bool {
        self.dup
    }
}

/// The MQTT 5 QoS as the MQTT 3.1.1 one (the same three levels).
pub fn v3_qos(qos: rumqttc::v5::mqttbytes::QoS) -> rumqttc::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match qos {
        Q5::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Q5::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        Q5::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// The MQTT 3.1.1 QoS as the MQTT 5 one.
pub fn v5_qos(qos: rumqttc::QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match qos {
        rumqttc::QoS::AtMostOnce => Q5::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => Q5::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => Q5::ExactlyOnce,
    }
}

/// What a behaviour tested for both versions does with a client ([`V3Client`] or
/// [`V5Client`]) besides the methods of [`Client`]: a clean connection, SUBSCRIBE, PUBLISH,
/// with QoS as `rumqttc::QoS`. Generic code names the client `Client<C>` with
/// `where Client<C>: AnyClient`; code of one version calls its own methods of the same names.
pub trait AnyClient: Sized {
    /// Connects `id` with a clean session (3.1.1) / clean start (5.0).
    fn connect_clean(broker: &Broker, id: &str) -> impl Future<Output = Self>;
    /// Subscribes and asserts the broker granted `qos`.
    fn subscribe_ok(&mut self, filter: &str, qos: rumqttc::QoS) -> impl Future<Output = ()>;
    /// Publishes and waits for the end of its flow.
    fn publish(
        &mut self,
        topic: &str,
        qos: rumqttc::QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> impl Future<Output = ()>;
}

impl AnyClient for V3Client {
    async fn connect_clean(broker: &Broker, id: &str) -> V3Client {
        V3Client::connect(broker, id, true).await
    }
    async fn subscribe_ok(&mut self, filter: &str, qos: rumqttc::QoS) {
        V3Client::subscribe_ok(self, filter, qos).await
    }
    async fn publish(&mut self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: Vec<u8>) {
        V3Client::publish(self, topic, qos, retain, payload).await
    }
}

impl AnyClient for V5Client {
    async fn connect_clean(broker: &Broker, id: &str) -> V5Client {
        V5Client::connect(broker, id).await
    }
    async fn subscribe_ok(&mut self, filter: &str, qos: rumqttc::QoS) {
        V5Client::subscribe_ok(self, filter, v5_qos(qos)).await
    }
    async fn publish(&mut self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: Vec<u8>) {
        V5Client::publish(self, topic, v5_qos(qos), retain, payload).await
    }
}

// ------------------------------------------------------------------------------------------
// MQTT 3.1.1 client
// ------------------------------------------------------------------------------------------

/// rumqttc's MQTT 3.1.1 client, the parameter of [`V3Client`] (and of generic tests).
pub type V3Api = rumqttc::AsyncClient;

/// A connected rumqttc MQTT 3.1.1 client.
pub type V3Client = Client<V3Api>;

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

    /// Connects `id` again with a persistent session (clean session 0) and asserts the broker
    /// still had it (CONNACK session present), naming `context` when it did not.
    pub async fn resume(broker: &Broker, id: &str, context: &str) -> V3Client {
        let c = Self::connect(broker, id, false).await;
        assert!(
            c.connack.session_present,
            "{context} (no session present for {id})"
        );
        c
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
        let (link, events, connack) = Link::open(eventloop, |e| match e {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) => Some(c.clone()),
            _ => None,
        })
        .await?;
        Ok(V3Client {
            client,
            events,
            connack,
            link,
        })
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

    /// A new client `unique(name)` with a clean session, subscribed to `filter` at `qos`
    /// (granted).
    pub async fn subscribed(
        broker: &Broker,
        name: &str,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> V3Client {
        let mut c = V3Client::connect(broker, &unique(name), true).await;
        c.subscribe_ok(filter, qos).await;
        c
    }

    /// A new persistent session `id` (clean session off) subscribed to `filter` at QoS 1
    /// (granted).
    pub async fn persistent_subscriber(broker: &Broker, id: &str, filter: &str) -> V3Client {
        let mut c = V3Client::connect(broker, id, false).await;
        c.subscribe_ok(filter, rumqttc::QoS::AtLeastOnce).await;
        c
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

    /// Publishes at QoS 1 a message the broker must refuse: MQTT 3.1.1 has no negative
    /// PUBACK, so the broker closes the connection without acknowledging it. Panics, naming
    /// `when`, if the connection stays open or a PUBACK arrives.
    pub async fn publish_refused_by_close(&mut self, topic: &str, payload: Vec<u8>, when: &str) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("queue PUBLISH");
        if let Err(e) = self.events.wait_closed(WAIT).await {
            panic!("v3.1.1 publisher not disconnected {when}: {e}");
        }
        let puback = self
            .events
            .try_wait_for(Duration::ZERO, |e| {
                matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
            })
            .await;
        assert!(puback.is_err(), "v3.1.1 publisher got a PUBACK {when}");
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
        self.events.wait_publish_flow(qos as u8, topic).await
    }
}

// ------------------------------------------------------------------------------------------
// MQTT 5.0 client
// ------------------------------------------------------------------------------------------

pub use rumqttc::v5::mqttbytes::v5 as v5bytes;

/// rumqttc's MQTT 5.0 client, the parameter of [`V5Client`] (and of generic tests).
pub type V5Api = rumqttc::v5::AsyncClient;

/// A connected rumqttc MQTT 5.0 client.
pub type V5Client = Client<V5Api>;

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
        let (link, events, connack) = Link::open(eventloop, |e| match e {
            rumqttc::v5::Event::Incoming(V5Packet::ConnAck(c)) => Some(c.clone()),
            _ => None,
        })
        .await?;
        Ok(V5Client {
            client,
            events,
            connack,
            link,
        })
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

    /// Subscribes to `filter` with default options and returns the SUBACK reason codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> Vec<v5bytes::SubscribeReasonCode> {
        self.subscribe_with(v5bytes::Filter::new(filter, qos), None)
            .await
            .return_codes
    }

    /// A new client `unique(name)` with a clean start, subscribed to `filter` at `qos`
    /// (granted).
    pub async fn subscribed(
        broker: &Broker,
        name: &str,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> V5Client {
        let mut c = V5Client::connect(broker, &unique(name)).await;
        c.subscribe_ok(filter, qos).await;
        c
    }

    /// Subscribes and asserts the broker granted `qos`.
    pub async fn subscribe_ok(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(
            codes,
            vec![v5bytes::SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter}"
        );
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
        self.events.wait_publish_flow(qos as u8, topic).await
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
}

/// Asserts a connection attempt (the result of a `try_connect_with`) was refused with a
/// reason naming `code` (e.g. `"NotAuthorized"`); `case` names the attempt in the failure.
pub fn assert_refused<C>(attempt: Result<C, String>, code: &str, case: &str) {
    match attempt {
        Ok(_) => panic!("{case}: accepted, expected a refusal with {code}"),
        Err(e) => assert!(e.contains(code), "{case}: expected {code}, got: {e}"),
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

/// An MQTT 3.1.1 CONNECT (clean session, no will, no credentials) of a short client id.
pub fn v311_connect_packet(id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    connect
}

/// A raw MQTT 3.1.1 client (clean session, `keep_alive` seconds) connected to 127.0.0.1:`port`,
/// its CONNACK read and checked; TCP_NODELAY. For tests that talk raw MQTT: the harness's
/// clients keep every event, are too slow for hundreds of thousands of messages and hide the
/// order in which packets arrive.
pub fn raw_v311_client(port: u16, id: &str, keep_alive: u16) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(&v311_connect_packet(id, keep_alive))
        .expect("send CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("read CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK for {id}");
    s
}

/// One plain HTTP/1.1 GET (`Connection: close`) to 127.0.0.1: status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "Broker::builder().process()")]
    fn a_process_only_method_on_an_in_process_broker_names_process() {
        let mut broker = Broker::builder()
            .kind(BrokerKind::Edge)
            .in_process(true)
            .start();
        broker.kill9();
    }

    #[test]
    fn an_in_process_broker_stops_and_restarts_on_the_same_port_and_folder() {
        let mut broker = Broker::builder()
            .kind(BrokerKind::Edge)
            .in_process(true)
            .start();
        assert!(broker.is_in_process());
        let port = broker.port();
        assert_ne!(port, 0, "the port bound in process is known");
        assert!(broker.stop().success(), "clean in-process shutdown");
        assert!(
            TcpStream::connect(broker.addr()).is_err(),
            "nothing serves after stop"
        );
        broker.restart();
        assert_eq!(broker.port(), port);
        broker.assert_running();
        assert!(broker.data_dir().join("edge.redb").is_file());
    }
}
