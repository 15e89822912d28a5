//! Rate limits for logs a hostile client can trigger at will: at most one line a second per
//! call site (each with its own static), so a flood of refusals cannot fill the disk.

use std::sync::atomic::{AtomicU64, Ordering};

/// True at most once a second for `last` (the unix ms of the last allowed line).
pub fn allowed(last: &AtomicU64) -> bool {
    let now = crate::message::now_ms();
    let prev = last.load(Ordering::Relaxed);
    now.saturating_sub(prev) >= 1000
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
