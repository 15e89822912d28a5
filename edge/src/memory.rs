//! The broker-wide memory bound, `limits.max_memory`. The heap in use is counted by the
//! allocator the binary installs ([`CountingAlloc`]: one relaxed atomic add per allocation and
//! free); [`MemoryBudget`] turns it into three decisions: pause publishers (1/2 of the bound),
//! refuse deliveries that would only live in memory (5/8), read session queues back from disk
//! in small steps (past 3/8). The margin above 5/8 is for what the heap does not count: code,
//! stacks, allocator fragmentation. Without the counting allocator (the library inside tests) nothing
//! is measured and the bound never applies.
//!
//! Hand-written rather than a crate: what is needed is one counter around the system
//! allocator, read on every publish; the crates that do this add limits and reporting we
//! would not use.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the bytes it has handed out and not got back.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated besides.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            IN_USE.fetch_add(new_size, Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

impl CountingAlloc {
    /// Declares that this allocator is the global one (call once, first thing in `main`), so
    /// that [`heap_in_use`] is meaningful.
    pub fn activate(&self) {
        COUNTING.store(true, Ordering::Release);
    }
}

/// Heap bytes in use, when the counting allocator is the global one.
pub fn heap_in_use() -> Option<usize> {
    COUNTING
        .load(Ordering::Acquire)
        .then(|| IN_USE.load(Ordering::Relaxed))
}

/// Read-back size of a session's queue while memory is short (see `session::WINDOW`).
const SMALL_REFILL: usize = 16;

/// What `limits.max_memory` decides, from a meter of the heap in use.
pub struct MemoryBudget {
    /// 0: no bound.
    max: usize,
    meter: fn() -> Option<usize>,
    /// Fired when usage falls back under 3/8 of the bound: paused publishers go on.
    relieved: Arc<Event>,
}

impl MemoryBudget {
    pub fn new(max: usize) -> MemoryBudget {
        MemoryBudget::with_meter(max, heap_in_use)
    }

    /// A budget reading `meter` instead of the allocator (tests).
    pub fn with_meter(max: usize, meter: fn() -> Option<usize>) -> MemoryBudget {
        MemoryBudget {
            max,
            meter,
            relieved: Arc::new(Event::new()),
        }
    }

    /// Whether usage is above `num / den` of the bound.
    fn above(&self, num: usize, den: usize) -> bool {
        match (self.max, (self.meter)()) {
            (0, _) | (_, None) => false,
            (max, Some(used)) => used as u128 * den as u128 > max as u128 * num as u128,
        }
    }

    /// Publishers should stop reading until usage is back under 3/8 of the bound.
    pub fn pressed(&self) -> bool {
        self.above(1, 2)
    }

    /// Deliveries that would live in memory only (QoS 0, non-persistent sessions) are refused.
    pub fn exhausted(&self) -> bool {
        self.above(5, 8)
    }

    /// How many deliveries a session's window may read back from disk at once.
    pub fn refill_size(&self) -> usize {
        if self.above(3, 8) {
            SMALL_REFILL
        } else {
            usize::MAX
        }
    }

    /// Usage is at or under 3/8 of the bound (or there is no bound).
    pub fn relieved(&self) -> bool {
        !self.above(3, 8)
    }

    /// The event paused publishers wait on.
    pub fn relieved_event(&self) -> Arc<Event> {
        self.relieved.clone()
    }

    /// Wakes paused publishers once usage is at or under 3/8 of the bound.
    pub fn notify_if_relieved(&self) {
        if self.relieved() {
            self.relieved.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static USED: AtomicUsize = AtomicUsize::new(0);

    fn meter() -> Option<usize> {
        Some(USED.load(Ordering::Relaxed))
    }

    #[test]
    fn pressure_starts_at_half_refusal_at_five_eighths_relief_at_three_eighths() {
        let b = MemoryBudget::with_meter(800, meter);
        USED.store(300, Ordering::Relaxed);
        assert!(!b.pressed() && !b.exhausted());
        assert_eq!(b.refill_size(), usize::MAX);
        USED.store(350, Ordering::Relaxed);
        assert!(!b.pressed());
        assert_eq!(b.refill_size(), SMALL_REFILL, "past 3/8: small reads");
        USED.store(401, Ordering::Relaxed);
        assert!(b.pressed() && !b.exhausted());
        USED.store(501, Ordering::Relaxed);
        assert!(b.pressed() && b.exhausted());
        let relieved = b.relieved_event().listen();
        b.notify_if_relieved();
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(relieved)).is_none()
        );
        USED.store(300, Ordering::Relaxed);
        let relieved = b.relieved_event().listen();
        b.notify_if_relieved();
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(relieved)).is_some()
        );
    }

    #[test]
    fn no_bound_without_a_meter_or_with_zero() {
        assert!(!MemoryBudget::with_meter(800, || None).pressed());
        assert!(!MemoryBudget::with_meter(0, || Some(usize::MAX)).exhausted());
    }
}
