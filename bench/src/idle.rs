//! `connections`: opens many idle MQTT connections and reads the broker's RSS before and after, to
//! get memory per connection; also `rlimit` raising so the tool itself can hold 10,000+ sockets.

use std::time::{Duration, Instant};

use smol::Timer;

use crate::conn::{Conn, ConnectOpts, Version};
use crate::executor::{block_on, EX};
use crate::procmem;

#[derive(Clone, Debug)]
pub struct IdleOpts {
    pub addr: String,
    pub version: Version,
    pub count: usize,
    pub concurrency: usize,
    pub hold: Duration,
    pub settle: Duration,
    pub io_timeout: Duration,
    pub broker_pid: Option<u32>,
    pub client_prefix: String,
    /// The Keep Alive each connection asks for (0: none).
    pub keep_alive: u16,
}

#[derive(Debug)]
pub struct IdleResult {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub connect_s: f64,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    /// (after - before) / connected, in bytes.
    pub bytes_per_conn: Option<f64>,
}

/// Raises this process's open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

pub fn run(o: IdleOpts, threads: usize) -> IdleResult {
    block_on(threads, run_async(o))
}

async fn run_async(o: IdleOpts) -> IdleResult {
    let before = o.broker_pid.and_then(procmem::read).map(|m| m.rss_kb);
    let start = Instant::now();
    let workers = o.concurrency.clamp(1, o.count.max(1));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let o = o.clone();
            EX.spawn(async move {
                let mut conns = Vec::new();
                let mut failed = 0usize;
                let mut first_error = None;
                let mut i = w;
                while i < o.count {
                    let opts =
                        ConnectOpts::clean(format!("{}-c{i}", o.client_prefix), o.keep_alive);
                    match Conn::connect(&o.addr, o.version, &opts, o.io_timeout).await {
                        Ok((c, _, _)) => conns.push(c),
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                    i += workers;
                }
                (conns, failed, first_error)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(o.count);
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        let (c, f, e) = t.await;
        all.extend(c);
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    Timer::after(o.settle).await;
    let mut after = o.broker_pid.and_then(procmem::read).map(|m| m.rss_kb);
    if !o.hold.is_zero() {
        Timer::after(o.hold).await;
        let later = o.broker_pid.and_then(procmem::read).map(|m| m.rss_kb);
        after = after.max(later);
    }
    let connected = all.len();
    for c in all {
        c.close().await;
    }
    let bytes_per_conn = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    IdleResult {
        requested: o.count,
        connected,
        failed,
        first_error,
        connect_s,
        rss_before_kb: before,
        rss_after_kb: after,
        bytes_per_conn,
    }
}
