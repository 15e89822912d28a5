//! systemd service notifications (`Type=notify`) and the watchdog, without libsystemd.
//!
//! The protocol is the one documented in sd_notify(3): the service manager passes the path of a
//! unix datagram socket in `NOTIFY_SOCKET` (a file system path, or `@name` for the abstract
//! namespace), and the service sends newline-separated `KEY=VALUE` assignments to it in a single
//! datagram. This module implements just that (about as much code as a dependency's glue), so the
//! broker needs no extra crate and the tests can point a [`Notifier`] at a socket of their own.
//!
//! Every public function is a no-op when `NOTIFY_SOCKET` is unset (the broker run by hand, in a
//! container, or under `Type=simple`), and none of them can fail the broker: a notification
//! that cannot be sent is logged and dropped. `NOTIFY_SOCKET` is read at each call and never
//! unset (the broker starts no child processes that could mistake it for theirs).
//!
//! What the broker sends:
//! - `READY=1` once the listeners are bound and the storage is open ([`notify_ready`]);
//! - `STOPPING=1` when a shutdown starts ([`notify_stopping`]);
//! - `RELOADING=1` with `MONOTONIC_USEC` on a reload, then `READY=1` again ([`notify_reloading`]);
//! - `STATUS=...`, a line shown by `systemctl status` ([`status`]);
//! - `EXTEND_TIMEOUT_USEC=...` while a long start step (database repair) runs ([`extend_timeout`]);
//! - `WATCHDOG=1` at half the `WatchdogSec=` interval ([`watchdog`], an async task for the smol
//!   executor: it sleeps on a smol timer and sends without blocking).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use futures_lite::FutureExt;
use smol::Async;

/// Longest a synchronous notification may block when the manager's queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Where notifications go: the socket named by `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct Notifier {
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or `None` when it is unset, empty or of a kind this
    /// module does not speak (e.g. `vsock:` addresses used for virtual machines).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        if value.is_empty() {
            return None;
        }
        match Notifier::new(&value) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(socket = ?value, error = %e, "NOTIFY_SOCKET not usable; systemd notifications off");
                None
            }
        }
    }

    /// A notifier for `socket`: an absolute path, or `@name` for the Linux abstract namespace.
    pub fn new(socket: impl AsRef<OsStr>) -> io::Result<Notifier> {
        let bytes = socket.as_ref().as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(socket.as_ref())?,
            Some(b'@') => abstract_addr(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "notify socket must be an absolute path or @abstract",
                ))
            }
        };
        Ok(Notifier { addr })
    }

    /// Sends `state` (one or more `KEY=VALUE` lines) as one datagram, waiting at most a second
    /// when the manager's queue is full.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        let n = sock.send_to_addr(state.as_bytes(), &self.addr)?;
        check_len(n, state)
    }

    /// Sends `state` without blocking the executor thread: waits for the socket to take it,
    /// giving up after `timeout`.
    pub async fn send_async(&self, state: &str, timeout: Duration) -> io::Result<()> {
        let sock = Async::new(UnixDatagram::unbound()?)?;
        let n = sock
            .write_with(|s| s.send_to_addr(state.as_bytes(), &self.addr))
            .or(async {
                smol::Timer::after(timeout).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        check_len(n, state)
    }
}

fn check_len(n: usize, state: &str) -> io::Result<()> {
    if n == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram truncated",
        ))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// Sends `state` to `NOTIFY_SOCKET`. `Ok(false)`: no socket, nothing sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match Notifier::from_env() {
        None => Ok(false),
        Some(n) => n.send(state).map(|()| true),
    }
}

fn notify_logged(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state = state.lines().next().unwrap_or(""), "systemd notification failed");
    }
}

/// `READY=1`: start-up finished (listeners bound, storage open). Also ends a reload.
pub fn notify_ready() {
    notify_logged("READY=1");
}

/// `STOPPING=1`: a clean shutdown has begun.
pub fn notify_stopping() {
    notify_logged("STOPPING=1");
}

/// `RELOADING=1` with the `MONOTONIC_USEC` timestamp systemd expects (required by
/// `Type=notify-reload`); send [`notify_ready`] when the reload is done.
pub fn notify_reloading() {
    notify_logged(&reloading_message(monotonic_usec()));
}

fn reloading_message(usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// `STATUS=text`: one line shown by `systemctl status` (newlines are replaced by spaces).
pub fn status(text: &str) {
    notify_logged(&status_message(text));
}

fn status_message(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

/// `EXTEND_TIMEOUT_USEC`: asks for `by` more time than `TimeoutStartSec=`/`TimeoutStopSec=`
/// from now, for a long start or stop step (e.g. repairing the database). Repeat it before
/// `by` elapses if the step goes on.
pub fn extend_timeout(by: Duration) {
    notify_logged(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1_000)
}

/// The watchdog timeout systemd set (`WATCHDOG_USEC`, from `WatchdogSec=`), or `None` when the
/// watchdog is off or meant for another process (`WATCHDOG_PID` names a different pid).
pub fn watchdog_timeout() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The watchdog task: when systemd enabled the watchdog (`WatchdogSec=` in the unit) and
/// `NOTIFY_SOCKET` is set, sends `WATCHDOG=1` every half timeout for as long as it runs (spawn
/// it on the broker's executor, cancel it at shutdown); otherwise returns at once.
///
/// `alive` is asked before each ping: return `false` when the broker is wedged (e.g. no tick
/// or commit progress) and systemd, missing the pings, restarts it. Pings come from a task on
/// the broker's own executor, so a stalled executor also stops them.
pub async fn watchdog<F: FnMut() -> bool>(alive: F) {
    let (Some(notifier), Some(timeout)) = (Notifier::from_env(), watchdog_timeout()) else {
        return;
    };
    tracing::info!(
        timeout_ms = timeout.as_millis() as u64,
        "systemd watchdog enabled"
    );
    run_watchdog(&notifier, timeout / 2, alive).await;
}

/// The watchdog loop behind [`watchdog`], with the socket and the interval given.
pub async fn run_watchdog<F: FnMut() -> bool>(notifier: &Notifier, every: Duration, mut alive: F) {
    let every = every.max(Duration::from_millis(10));
    let mut failing = false;
    loop {
        if alive() {
            match notifier.send_async("WATCHDOG=1", every).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "systemd watchdog ping failed");
                }
                Err(_) => {}
            }
        } else {
            tracing::warn!("broker not alive: withholding the systemd watchdog ping");
        }
        smol::Timer::after(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Tests that read the process environment hold this lock. None of them writes it: the
    /// env-driven cases run in a child process of this test binary (see `env_child`), since
    /// `set_var` in a multi-threaded test binary races with every other thread's getenv.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn bound_socket(dir: &std::path::Path) -> (std::path::PathBuf, UnixDatagram) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_arrive_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sock) = bound_socket(dir.path());
        let n = Notifier::new(&path).unwrap();
        n.send("READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
        n.send(&status_message("2 clients\nconnected")).unwrap();
        assert_eq!(recv(&sock), "STATUS=2 clients connected");
        n.send(&reloading_message(42)).unwrap();
        assert_eq!(recv(&sock), "RELOADING=1\nMONOTONIC_USEC=42");
        smol::block_on(n.send_async("STOPPING=1", Duration::from_secs(1))).unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_arrive_on_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "robustmq-edge-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(format!("@{name}"))
            .unwrap()
            .send("READY=1")
            .unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn bad_socket_names_are_refused() {
        assert!(Notifier::new("relative/path").is_err());
        assert!(Notifier::new("vsock:2:1234").is_err());
        assert!(Notifier::new("").is_err());
    }

    #[test]
    fn sending_to_a_missing_socket_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("absent.sock")).unwrap();
        assert!(n.send("READY=1").is_err());
    }

    #[test]
    fn watchdog_settings() {
        let s = |usec, pid| parse_watchdog(usec, pid, 100);
        assert_eq!(s(Some("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(
            s(Some("500000"), Some("100")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            s(Some("500000"), Some("101")),
            None,
            "another process's watchdog"
        );
        assert_eq!(s(Some("0"), None), None);
        assert_eq!(s(Some("soon"), None), None);
        assert_eq!(s(None, Some("100")), None);
        assert_eq!(s(Some("500000"), Some("x")), None);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_usec() > a && a > 0);
    }

    #[test]
    fn watchdog_pings_at_the_interval_on_smol_and_withholds_when_not_alive() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sock) = bound_socket(dir.path());
        sock.set_nonblocking(true).unwrap();
        let n = Notifier::new(&path).unwrap();
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        let ex = smol::LocalExecutor::new();
        let task = ex.spawn(async move {
            run_watchdog(&n, Duration::from_millis(50), move || {
                flag.load(std::sync::atomic::Ordering::SeqCst)
            })
            .await
        });
        let count = |sock: &UnixDatagram| {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while let Ok(len) = sock.recv(&mut buf) {
                assert_eq!(&buf[..len], b"WATCHDOG=1");
                n += 1;
            }
            n
        };
        // The executor thread is never blocked: a concurrent timer on it keeps firing.
        smol::block_on(ex.run(async {
            let start = Instant::now();
            let mut ticks = 0;
            while start.elapsed() < Duration::from_millis(320) {
                smol::Timer::after(Duration::from_millis(10)).await;
                ticks += 1;
            }
            assert!(ticks >= 10, "executor starved: {ticks} ticks");
        }));
        let pings = count(&sock);
        assert!((3..=9).contains(&pings), "{pings} pings in 320 ms at 50 ms");
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        smol::block_on(ex.run(smol::Timer::after(Duration::from_millis(60))));
        count(&sock); // a ping may have been in flight when the flag changed
        smol::block_on(ex.run(smol::Timer::after(Duration::from_millis(200))));
        assert_eq!(count(&sock), 0, "pinged while not alive");
        drop(task);
    }

    #[test]
    fn watchdog_returns_at_once_without_systemd() {
        let _env = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return; // the test run itself is under systemd; env_child covers this case
        }
        let done = smol::block_on(
            async {
                watchdog(|| true).await;
                true
            }
            .or(async {
                smol::Timer::after(Duration::from_secs(2)).await;
                false
            }),
        );
        assert!(done);
        assert!(!notify("READY=1").unwrap(), "sent without NOTIFY_SOCKET");
        notify_ready(); // and the logged variants are silent no-ops
        notify_stopping();
    }

    /// The env-driven public API, run in a child copy of this test binary with its own
    /// environment, so nothing here mutates the environment of the test process.
    #[test]
    fn env_driven_api_in_a_child_process() {
        let _env = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (path, sock) = bound_socket(dir.path());
        let run = |extra: &[(&str, &str)]| {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "systemd::tests::env_child", "--nocapture"])
                .env("ROBUSTMQ_EDGE_SYSTEMD_CHILD", "1")
                .env("NOTIFY_SOCKET", &path)
                .env_remove("WATCHDOG_PID");
            for (k, v) in extra {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "child failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[("WATCHDOG_USEC", "100000")]);
        assert_eq!(recv(&sock), "READY=1");
        let st = recv(&sock);
        assert_eq!(st, "STATUS=accepting connections");
        let rl = recv(&sock);
        let usec: u64 = rl
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{rl:?}"))
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(recv(&sock), "EXTEND_TIMEOUT_USEC=90000000");
        // The watchdog task, run by the child for 260 ms at WATCHDOG_USEC=100 ms: pings
        // every 50 ms.
        let mut pings = 0;
        loop {
            let m = recv(&sock);
            if m == "STOPPING=1" {
                break;
            }
            assert_eq!(m, "WATCHDOG=1");
            pings += 1;
        }
        assert!((3..=7).contains(&pings), "{pings} watchdog pings");
        // A watchdog meant for another pid: no pings, only the other messages.
        run(&[("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")]);
        let mut got = Vec::new();
        loop {
            let m = recv(&sock);
            let last = m == "STOPPING=1";
            got.push(m);
            if last {
                break;
            }
        }
        assert!(!got.iter().any(|m| m == "WATCHDOG=1"), "{got:?}");
    }

    /// Runs only as the child of `env_driven_api_in_a_child_process`.
    #[test]
    fn env_child() {
        if std::env::var_os("ROBUSTMQ_EDGE_SYSTEMD_CHILD").is_none() {
            return;
        }
        notify_ready();
        status("accepting connections");
        notify_reloading();
        extend_timeout(Duration::from_secs(90));
        smol::block_on(watchdog(|| true).or(async {
            smol::Timer::after(Duration::from_millis(260)).await;
        }));
        notify_stopping();
    }
}
