use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{future, FutureExt};

use super::{KeepAlive, KeepAliveSweep};
use crate::session::Wakeup;

/// A wake-up with a keep-alive of `secs` started now.
fn started(secs: u16) -> Arc<Wakeup> {
    let w = Arc::new(Wakeup::default());
    w.keep_alive().start(secs);
    w
}

/// Waits as a connection's idle task does (registers, then checks the deadline) on this
/// thread, where only a nudge wakes it; the time it found the deadline passed. Fails the test
/// after 5 s.
fn until_expired(w: &Wakeup) -> Instant {
    let waited = future::poll_fn(|cx| {
        w.register(cx);
        match w.keep_alive().expired() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    });
    smol::block_on(waited.or(async {
        smol::Timer::after(Duration::from_secs(5)).await;
        panic!("not woken within 5 s");
    }));
    Instant::now()
}

/// Waits (as [`until_expired`]) for `w` to be woken, and checks that it was woken at its
/// deadline, not before, with 700 ms of slack for a loaded machine (the faults these tests
/// catch are seconds late). Returns the deadline.
fn assert_woken_at_its_deadline(w: &Wakeup) -> Instant {
    let expired_at = until_expired(w);
    let deadline = w.keep_alive().deadline().expect("a deadline");
    assert!(expired_at >= deadline, "woken before the deadline");
    assert!(
        expired_at < deadline + Duration::from_millis(700),
        "woken {:?} late",
        expired_at - deadline
    );
    deadline
}

/// Runs `sweep` on a thread of its own until dropped.
struct Sweeping(
    Option<smol::channel::Sender<()>>,
    Option<std::thread::JoinHandle<()>>,
);

fn sweeping(sweep: &Arc<KeepAliveSweep>) -> Sweeping {
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let sweep = sweep.clone();
    let thread = std::thread::spawn(move || {
        smol::block_on(sweep.run().or(async {
            let _ = stopped.recv().await;
        }))
    });
    Sweeping(Some(stop), Some(thread))
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        self.0.take();
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// The keep-alive limit and deadline share one word: moving the deadline keeps the limit, up
/// to the largest keep-alive (65,535 s), and no keep-alive has neither.
#[test]
fn the_keep_alive_word_keeps_its_limit_when_the_deadline_moves() {
    let none = KeepAlive::default();
    none.start(0);
    assert!(none.limit().is_none());
    assert!(none.deadline().is_none());
    assert!(!none.expired());
    for secs in [1u16, 60, u16::MAX] {
        let k = KeepAlive::default();
        k.start(secs);
        let limit = Duration::from_millis(secs as u64 * 1500);
        assert_eq!(k.limit(), Some(limit));
        let before = Instant::now();
        k.touch();
        let deadline = k.deadline().expect("a deadline");
        assert!(
            deadline >= before + limit,
            "{secs} s: deadline before the limit"
        );
        assert!(deadline <= Instant::now() + limit + Duration::from_millis(2));
        assert_eq!(k.limit(), Some(limit), "{secs} s: limit kept");
        assert!(!k.expired());
    }
}

/// The sweep wakes a watched connection at its deadline, and not before: input after it was
/// watched moves the deadline, and the sweep waits for the moved one.
#[test]
fn the_sweep_wakes_a_connection_at_its_deadline_moved_by_input() {
    let sweep = Arc::new(KeepAliveSweep::default());
    let w = started(1);
    sweep.watch(&w);
    let first = w.keep_alive().deadline().expect("a deadline");
    let _sweeping = sweeping(&sweep);
    std::thread::sleep(Duration::from_millis(600));
    w.keep_alive().touch();
    let moved_to = assert_woken_at_its_deadline(&w);
    assert!(moved_to > first + Duration::from_millis(500));
}

/// A connection that comes while the sweep sleeps towards a later deadline is still woken at
/// its own.
#[test]
fn a_connection_due_sooner_than_the_sweeps_next_look_is_woken_in_time() {
    let sweep = Arc::new(KeepAliveSweep::default());
    let late = started(60);
    sweep.watch(&late);
    let _sweeping = sweeping(&sweep);
    // The sweep is asleep towards the 90 s deadline by now.
    std::thread::sleep(Duration::from_millis(100));
    let soon = started(1);
    sweep.watch(&soon);
    assert_woken_at_its_deadline(&soon);
    assert!(!late.keep_alive().expired());
}

/// A connection nudged when its deadline passed that then reads input (it was busy) gets a
/// later deadline the sweep had not seen; the sweep still wakes it at that one.
#[test]
fn a_connection_that_was_nudged_and_then_read_input_is_swept_again() {
    let sweep = Arc::new(KeepAliveSweep::default());
    let w = started(1);
    sweep.watch(&w);
    let _sweeping = sweeping(&sweep);
    until_expired(&w);
    // The nudge came; the task found input instead of closing.
    w.keep_alive().touch();
    assert_woken_at_its_deadline(&w);
}

/// Connections leave the sweep in any order and the others' slots stay exact; one dropped
/// without leaving is forgotten by the next sweep; one without a keep-alive is never watched.
#[test]
fn connections_leave_the_sweep_and_dropped_ones_are_forgotten() {
    let sweep = KeepAliveSweep::default();
    let ws: Vec<_> = (0..200).map(|_| started(60)).collect();
    for w in &ws {
        sweep.watch(w);
    }
    let none = started(0);
    sweep.watch(&none);
    assert_eq!(none.sweep_slot(), None);
    assert_eq!(sweep.watched(), 200);
    for w in ws.iter().step_by(3) {
        sweep.unwatch(w);
        assert_eq!(w.sweep_slot(), None);
    }
    // Leaving twice is harmless.
    sweep.unwatch(&ws[0]);
    let left = ws.iter().skip(1).step_by(3).count() + ws.iter().skip(2).step_by(3).count();
    assert_eq!(sweep.watched(), left);
    {
        let watched = sweep.lock();
        for (i, e) in watched.iter().enumerate() {
            let w = e.upgrade().expect("alive");
            assert_eq!(w.sweep_slot(), Some(i), "slot of entry {i}");
        }
    }
    // Dropped without leaving (a task dropped at shutdown).
    let mut ws = ws;
    let dropped = ws.split_off(100);
    drop(dropped);
    let still = ws.iter().filter(|w| w.sweep_slot().is_some()).count();
    let mut watched = sweep.lock();
    sweep.sweep(&mut watched, super::now_ms());
    assert_eq!(watched.len(), still);
    for (i, e) in watched.iter().enumerate() {
        let w = e.upgrade().expect("alive");
        assert_eq!(w.sweep_slot(), Some(i), "slot of entry {i} after the sweep");
    }
}

/// The list gives back its room when most connections have left.
#[test]
fn the_sweep_list_shrinks_when_connections_leave() {
    let sweep = KeepAliveSweep::default();
    let ws: Vec<_> = (0..10_000).map(|_| started(60)).collect();
    for w in &ws {
        sweep.watch(w);
    }
    let grown = sweep.lock().capacity();
    assert!(grown >= 10_000);
    for w in &ws[..9_900] {
        sweep.unwatch(w);
    }
    let capacity = sweep.lock().capacity();
    assert!(
        capacity < 1_000,
        "capacity {capacity} after 9,900 of 10,000 left"
    );
    assert_eq!(sweep.watched(), 100);
}
