//! `startup`: spawns a broker command and measures the time from process start until an MQTT
//! CONNECT is accepted (polling every few ms), plus its RSS at that moment; stops it unless `--keep`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::conn::{Conn, ConnectOpts, Version};
use crate::executor::block_on;
use crate::procmem;

#[derive(Debug)]
pub struct StartupResult {
    pub ready_ms: f64,
    pub pid: u32,
    pub rss_kb: Option<u64>,
    pub kept: bool,
}

fn probe(addr: &str, version: Version) -> bool {
    let opts = ConnectOpts::clean(format!("edge-bench-probe-{}", std::process::id()), 10);
    block_on(1, async {
        match Conn::connect(addr, version, &opts, Duration::from_secs(2)).await {
            Ok((c, _, _)) => {
                c.close().await;
                true
            }
            Err(_) => false,
        }
    })
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL.
pub fn terminate(child: &mut Child, grace: Duration) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run(
    cmd: &str,
    addr: &str,
    version: Version,
    timeout: Duration,
    keep: bool,
    log: Option<&str>,
) -> Result<StartupResult, String> {
    if probe(addr, version) {
        return Err(format!(
            "something already accepts MQTT on {addr}; stop it first"
        ));
    }
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).map_err(|e| format!("log file {p}: {e}"))?),
        None => Stdio::null(),
    };
    let stdout = match log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(|e| format!("log file {p}: {e}"))?,
        ),
        None => Stdio::null(),
    };
    let start = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("spawn {cmd}: {e}"))?;
    let pid = child.id();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "broker exited before accepting a connection: {status}"
            ));
        }
        if probe(addr, version) {
            break;
        }
        if start.elapsed() > timeout {
            terminate(&mut child, Duration::from_secs(5));
            return Err(format!(
                "broker did not accept a CONNECT within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_ms = start.elapsed().as_secs_f64() * 1000.0;
    let rss_kb = procmem::read(pid).map(|m| m.rss_kb);
    if !keep {
        terminate(&mut child, Duration::from_secs(30));
    }
    Ok(StartupResult {
        ready_ms,
        pid,
        rss_kb,
        kept: keep,
    })
}
