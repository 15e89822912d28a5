//! Freed heap goes back to the system. The broker's heap is split by block size (`memory.rs`):
//! - small blocks are mimalloc's, which gives an emptied page back [`memory::PURGE_DELAY_MS`]
//!   later, but only when the page's thread next allocates or frees: every thread that
//!   allocates collects its own heap when it may go idle, so an idle broker holds no freed
//!   pages for much longer than a second: each executor thread (and sync's, on smol's global
//!   executor) once a second ([`collect_each_second`]), the storage writer after a second
//!   without commits; the blocking threads that read backlogs purge theirs as they exit, idle
//!   (a collect at the end of each read measured no lower RSS after a drain of 1,000,000 and
//!   cost 2.5% of the broker's CPU during it);
//! - large ones are glibc's, which keeps freed memory mapped in its arenas unless it sits at an
//!   arena's top, so after a burst RSS would stay near the burst's peak: once a minute
//!   `malloc_trim(0)` hands every free page of every arena back (madvise), and `mi_collect(true)`
//!   on that thread takes what exited threads left. Measured when glibc held the whole heap,
//!   after two minutes of `edge-bench soak --churn 100`: RSS 13.0 MB -> 11.4 MB with one call.
//!   The trim is a no-op where the C library is not glibc.
//!
//! [`memory::PURGE_DELAY_MS`]: crate::memory::PURGE_DELAY_MS

use std::time::{Duration, Instant};

/// Time between two releases.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// What one release did (for the log).
#[derive(Debug, Clone, Copy)]
pub struct Released {
    /// Resident set before and after, in kB (None where /proc/self/statm is not readable).
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub took: Duration,
}

/// The process's resident set in kB, from `/proc/self/statm`.
pub fn rss_kb() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size() / 1024)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Gives the free pages of both allocators (`memory.rs`) back to the system: mimalloc's small
/// blocks (it purges empty pages by itself; this also purges what other threads left) and
/// glibc's large ones (and what C code, or the library in tests and embedders, allocates).
pub fn release() -> Released {
    let rss_before_kb = rss_kb();
    let start = Instant::now();
    // SAFETY: mi_collect only frees and purges mimalloc's own free memory; thread-safe.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas to the kernel; it takes
    // the arenas' locks, so it is safe while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
    Released {
        rss_before_kb,
        rss_after_kb: rss_kb(),
        took: start.elapsed(),
    }
}

/// How often each executor thread collects its own mimalloc heap.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Gives the calling thread's free mimalloc pages back to the system now (whatever their purge
/// delay) and returns how long that took.
pub fn collect_this_thread() -> Duration {
    let start = Instant::now();
    // SAFETY: mi_collect frees and purges the calling thread's own free mimalloc memory.
    unsafe { libmimalloc_sys::mi_collect(true) };
    start.elapsed()
}

/// Collects the heap of the thread that polls it every [`COLLECT_EVERY`], for ever: each
/// executor thread runs one beside its tasks (`server.rs`), since a task may move between
/// threads; sync's tasks get one on smol's global executor (`sync_bridge.rs`).
pub async fn collect_each_second() {
    loop {
        smol::Timer::after(COLLECT_EVERY).await;
        let took = collect_this_thread();
        if took > Duration::from_millis(1) {
            tracing::debug!(
                took_us = took.as_micros() as u64,
                "freed heap pages given back"
            );
        }
    }
}

/// Releases every [`INTERVAL`], on a blocking thread (a trim walks every arena).
pub async fn run() {
    loop {
        smol::Timer::after(INTERVAL).await;
        let r = smol::unblock(release).await;
        tracing::debug!(rss_before_kb = ?r.rss_before_kb, rss_after_kb = ?r.rss_after_kb,
            took_us = r.took.as_micros() as u64, "free heap given back to the system");
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn freed_heap_in_the_middle_of_an_arena_goes_back_to_the_system() {
        // On a thread of its own (an arena of its own): 64 KiB blocks, under glibc's mmap
        // threshold, every other one freed, the last one kept so the arena's top stays in use.
        // Only a trim can return the freed half (~12 MiB).
        let (before, after) = std::thread::spawn(|| {
            let mut blocks: Vec<Option<Vec<u8>>> =
                (0..400).map(|i| Some(vec![i as u8; 64 * 1024])).collect();
            for b in blocks.iter_mut().step_by(2) {
                *b = None;
            }
            let before = rss_kb().expect("statm");
            let r = release();
            let after = rss_kb().expect("statm");
            assert!(r.took < Duration::from_secs(1), "{r:?}");
            drop(blocks);
            (before, after)
        })
        .join()
        .expect("thread");
        assert!(
            before.saturating_sub(after) >= 6 * 1024,
            "RSS {before} kB -> {after} kB: at least half of the freed 12.5 MiB should be returned"
        );
    }
}
