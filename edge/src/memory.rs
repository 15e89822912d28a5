//! The broker-wide memory bound, `limits.max_memory`. The heap in use is counted by the
//! allocator the binary installs ([`CountingAlloc`]: one relaxed atomic add per allocation and
//! free); [`MemoryBudget`] turns it into three decisions: pause publishers (1/2 of the bound),
//! refuse deliveries that would only live in memory (5/8), read session queues back from disk
//! in small steps (past 3/8). The margin above 5/8 is for what the heap does not count: code,
//! stacks, allocator fragmentation. Without the counting allocator (the library inside tests) nothing
//! is measured and the bound never applies.
//!
//! Hand-written rather than a crate: what is needed is one counter around the allocator, read
//! on every publish; the crates that do this add limits and reporting we would not use.
//!
//! Under the counter are two allocators, chosen by the block's size ([`SplitAlloc`]):
//! - blocks up to [`SMALL_MAX`] bytes from mimalloc. A publish allocates and frees a few small
//!   blocks that another thread frees or reuses (the connection's messages, freed after their
//!   commit), and glibc served those through its arena locks and consolidation passes (about a
//!   fifth of the connection thread's CPU in a fill profile); mimalloc's thread-local free lists
//!   made a fill on tmpfs 20-25% faster (BENCHMARKS.md, "The allocator").
//! - larger blocks from glibc's malloc: mimalloc rounds a size up to one of four classes per
//!   power of two, and redb's cached pages (4,096 bytes and a 16-byte `Arc` header) would take
//!   5,120 bytes each, ~4 MB more RSS with a full 16 MiB page cache; glibc rounds to 16 bytes.
//!   Large blocks are few, so their allocator does not matter for speed.
//!
//! `dealloc` and `realloc` get the layout the block was allocated with, so the size says which
//! allocator owns it; a `realloc` across [`SMALL_MAX`] moves the block.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The largest block mimalloc serves (one of its size classes, so nothing is rounded up past
/// it); larger ones are glibc's.
pub const SMALL_MAX: usize = 4096;

/// mimalloc for blocks up to [`SMALL_MAX`] bytes, glibc's malloc (`System`) for larger ones.
pub struct SplitAlloc;

fn small(size: usize) -> bool {
    size <= SMALL_MAX
}

// SAFETY: each block is allocated and freed by the same allocator, picked by its size, which
// `dealloc` and `realloc` are given unchanged; a realloc across the threshold allocates from the
// other allocator, copies the bytes both sizes hold and frees the old block with its own.
unsafe impl GlobalAlloc for SplitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match small(layout.size()) {
            true => MiMalloc.alloc(layout),
            false => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match small(layout.size()) {
            true => MiMalloc.alloc_zeroed(layout),
            false => System.alloc_zeroed(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match small(layout.size()) {
            true => MiMalloc.dealloc(ptr, layout),
            false => System.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (small(layout.size()), small(new_size)) {
            (true, true) => MiMalloc.realloc(ptr, layout, new_size),
            (false, false) => System.realloc(ptr, layout, new_size),
            _ => {
                // SAFETY: the caller guarantees `new_size`, rounded up to `layout.align()`,
                // does not overflow isize, which is what a layout needs.
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

/// [`SplitAlloc`], counting the bytes it has handed out and not got back.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `SplitAlloc`; only a counter is updated besides.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = SplitAlloc.alloc(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = SplitAlloc.alloc_zeroed(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        SplitAlloc.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = SplitAlloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            IN_USE.fetch_add(new_size, Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

impl CountingAlloc {
    /// Declares that this allocator is the global one (call once, first thing in `main`), so
    /// that [`heap_in_use`] is meaningful, and sets mimalloc's options (see [`tune_mimalloc`]).
    pub fn activate(&self) {
        tune_mimalloc();
        COUNTING.store(true, Ordering::Release);
    }
}

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (stable options, v2 and v3 alike);
/// libmimalloc-sys names no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps an emptied page before giving it back, in ms (its 2.x default). With
/// no delay (the tenth session's choice) every page a FIFO of messages emptied went back to the
/// system at once and was faulted in again a moment later: a QoS 0 flood of 4 KB payloads spent
/// ~15% of the broker's CPU in `madvise` and page faults (159k-171k msg/s delivered, 226k-238k
/// with the delay). A delayed purge only happens when its thread next allocates or frees, so an
/// idle thread would keep them: every executor thread collects its own heap each second
/// (`heap_trim::collect_each_second`). `MIMALLOC_PURGE_DELAY` in the environment still wins.
pub const PURGE_DELAY_MS: i64 = 10;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless the environment sets it.
pub fn tune_mimalloc() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's option words; safe at any time, from any thread.
        unsafe {
            libmimalloc_sys::mi_option_set(
                MI_OPTION_PURGE_DELAY,
                PURGE_DELAY_MS as std::ffi::c_long,
            )
        };
    }
}

/// mimalloc's current purge delay in milliseconds.
pub fn mimalloc_purge_delay_ms() -> i64 {
    // SAFETY: reads one of mimalloc's option words.
    #[allow(clippy::useless_conversion)] // `c_long` is 32 bits on armv7
    i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
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
    use std::alloc::GlobalAlloc;

    #[test]
    fn a_block_keeps_its_bytes_when_realloc_moves_it_between_the_allocators() {
        let layout = Layout::from_size_align(SMALL_MAX - 8, 8).expect("layout");
        // SAFETY: each pointer is used within the size it was (re)allocated with, freed once, with
        // the layout it has at that time.
        unsafe {
            let p = SplitAlloc.alloc(layout);
            assert!(!p.is_null());
            for i in 0..layout.size() {
                *p.add(i) = (i % 251) as u8;
            }
            // Small (mimalloc) -> large (glibc): the old bytes are kept.
            let big = 3 * SMALL_MAX;
            let p = SplitAlloc.realloc(p, layout, big);
            assert!(!p.is_null());
            for i in 0..layout.size() {
                assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} after growing");
            }
            *p.add(big - 1) = 7;
            // Large -> large: glibc's own realloc.
            let big_layout = Layout::from_size_align(big, 8).expect("layout");
            let bigger = 5 * SMALL_MAX;
            let p = SplitAlloc.realloc(p, big_layout, bigger);
            assert!(!p.is_null());
            assert_eq!(*p.add(big - 1), 7);
            // Large (glibc) -> small (mimalloc): the first bytes are kept.
            let bigger_layout = Layout::from_size_align(bigger, 8).expect("layout");
            let p = SplitAlloc.realloc(p, bigger_layout, 100);
            assert!(!p.is_null());
            for i in 0..100 {
                assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} after shrinking");
            }
            SplitAlloc.dealloc(p, Layout::from_size_align(100, 8).expect("layout"));

            // An alignment above both allocators' default, on each side of the threshold.
            for size in [64, SMALL_MAX, SMALL_MAX + 1, 64 * 1024] {
                let l = Layout::from_size_align(size, 4096).expect("layout");
                let p = SplitAlloc.alloc_zeroed(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % 4096, 0, "size {size}: misaligned");
                assert!((0..size).all(|i| *p.add(i) == 0), "size {size}: not zeroed");
                SplitAlloc.dealloc(p, l);
            }
        }
    }

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
