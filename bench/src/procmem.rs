//! Broker memory readings from /proc/PID/status (VmRSS, VmHWM), a peak-RSS reset through
//! /proc/PID/clear_refs, and a background sampler that records the peak RSS during a test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn read(pid: u32) -> Option<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:").unwrap_or(0),
    })
}

/// Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0, needs permission).
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Samples VmRSS every `interval` until stopped; combines it with VmHWM when that was reset.
pub struct Sampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    hwm_reset: bool,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, interval: Duration) -> Sampler {
        let hwm_reset = reset_hwm(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(read(pid).map_or(0, |m| m.rss_kb)));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(m) = read(pid) {
                    p.fetch_max(m.rss_kb, Ordering::Relaxed);
                }
                std::thread::sleep(interval);
            }
        });
        Sampler {
            pid,
            stop,
            peak,
            hwm_reset,
            handle: Some(handle),
        }
    }

    /// Stops sampling; returns (peak RSS kB, RSS now kB).
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let now = read(self.pid).unwrap_or_default();
        let mut peak = self.peak.load(Ordering::Relaxed).max(now.rss_kb);
        if self.hwm_reset {
            peak = peak.max(now.hwm_kb);
        }
        (peak, now.rss_kb)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_status() {
        let m = super::read(std::process::id()).expect("own /proc status");
        assert!(m.rss_kb > 0);
        assert!(m.hwm_kb >= m.rss_kb);
    }
}
