//! The one executor every benchmark runs its clients on: `block_on` drives a future on the
//! shared `EX` with extra OS threads that stop as soon as the future is done.

use smol::Executor;

/// The shared executor: tasks spawned on it run on every thread `block_on` started.
pub static EX: Executor<'static> = Executor::new();

/// Runs `fut` on the shared executor with `threads` OS threads (the caller's thread included).
pub fn block_on<T>(threads: usize, fut: impl std::future::Future<Output = T>) -> T {
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let handles: Vec<_> = (1..threads.max(1))
        .map(|_| {
            let rx = stop_rx.clone();
            std::thread::spawn(move || smol::block_on(EX.run(rx.recv())))
        })
        .collect();
    let out = smol::block_on(EX.run(fut));
    drop(stop_tx);
    for h in handles {
        let _ = h.join();
    }
    out
}
