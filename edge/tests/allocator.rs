//! The broker's allocator as `main` installs it (`memory::CountingAlloc`: mimalloc for small
//! blocks and glibc's malloc for large ones, under a counter), in a process of its own and
//! alone in it (RSS and the counter are the whole process's): the heap in use is counted, and
//! freed small blocks go back to the system once their thread collects its heap, as each
//! executor thread does every second (`heap_trim::collect_each_second`). Moves between the two
//! allocators are tested beside `SplitAlloc`.

use std::time::Instant;

use robustmq_edge::heap_trim::{collect_each_second, collect_this_thread, rss_kb, COLLECT_EVERY};
use robustmq_edge::memory::{heap_in_use, mimalloc_purge_delay_ms, CountingAlloc, PURGE_DELAY_MS};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Small enough for mimalloc.
const BLOCK: usize = 1024;
const BLOCKS: usize = 64 * 1024; // 64 MiB

#[test]
fn the_counted_heap_follows_allocations_and_freed_memory_leaves_rss_at_the_threads_collect() {
    ALLOC.activate();
    assert_eq!(
        mimalloc_purge_delay_ms(),
        PURGE_DELAY_MS,
        "the purge delay option was not set"
    );

    let heap_before = heap_in_use().expect("the counting allocator is the global one");
    let rss_before = rss_kb().expect("statm");
    let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; BLOCK]).collect();
    let heap_full = heap_in_use().expect("counting");
    let rss_full = rss_kb().expect("statm");
    assert!(
        heap_full - heap_before >= BLOCK * BLOCKS,
        "heap in use {heap_before} -> {heap_full} bytes after allocating {} bytes",
        BLOCK * BLOCKS
    );
    assert!(
        rss_full >= rss_before + 60 * 1024,
        "RSS {rss_before} kB -> {rss_full} kB with 64 MiB touched"
    );

    let freed_at = Instant::now();
    drop(blocks);
    collect_this_thread();
    let rss_after = rss_kb().expect("statm");
    let took = freed_at.elapsed();
    assert!(
        heap_in_use().expect("counting") < heap_before + BLOCK,
        "the heap counter did not come back down"
    );
    // No sleep: the collect gives the pages back whatever the purge delay.
    assert!(
        rss_after + 48 * 1024 <= rss_full,
        "RSS {rss_full} kB -> {rss_after} kB {took:?} after freeing 64 MiB: not given back"
    );

    // An executor thread: its tasks free a burst and then idle; the collect beside them gives
    // the pages back within about a second. (Without it they stay resident: the purge delay
    // only runs out when the thread frees or collects again.)
    let rss_before = rss_kb().expect("statm");
    let idle_rss = smol::block_on(smol::future::or(
        async {
            collect_each_second().await;
            0
        },
        async {
            let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; BLOCK]).collect();
            let rss_full = rss_kb().expect("statm");
            assert!(rss_full >= rss_before + 60 * 1024, "64 MiB not resident");
            drop(blocks);
            smol::Timer::after(COLLECT_EVERY + COLLECT_EVERY / 2).await;
            rss_kb().expect("statm")
        },
    ));
    assert!(
        idle_rss < rss_before + 16 * 1024,
        "RSS {rss_before} kB -> {idle_rss} kB 1.5 s after a burst of 64 MiB was freed on an \
         idle executor thread: its collect did not give the pages back"
    );
}
