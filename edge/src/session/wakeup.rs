//! The wake-up shared by a session and its connection's task: a "look again" flag, the kick
//! (taken over, shutdown) and one waker slot, in one small allocation per connection, which
//! also carries the departure the connection's reader chose. A wake-up is never lost: the task
//! takes the flag before it looks for work and registers its waker before it checks the flag
//! again, so a wake-up in between is found by that check.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::broker::Departure;
use crate::connection::KeepAlive;
use std::task::{Context, Poll};

// `atomic-waker` (smol-rs): the lock-free single-waker slot this needs, already in the tree
// through smol; an `event_listener::Event` allocates a listener list and a listener per wait.
use atomic_waker::AtomicWaker;

/// Why a connection is being closed by the broker from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    TakenOver = 1,
    Shutdown = 2,
}

/// Set by [`Wakeup::wake`], taken by [`Wakeup::take`] and [`Wakeup::poll_woken`].
const WOKEN: u8 = 1;
/// The kick, if any, in the bits above [`WOKEN`] (`Kick as u8`, never cleared).
const KICK_SHIFT: u32 = 1;

/// One connection's wake-up: replies from its reader, deliveries or a free in-flight slot
/// from its session, kicks and the keep-alive sweep all go through it. It also carries the
/// connection's end as its reader chose it and its keep-alive deadline, which the sweep reads
/// (`connection/keep_alive.rs`): 64 bytes with the `Arc`'s counts, one mimalloc size class.
#[derive(Debug)]
pub struct Wakeup {
    state: AtomicU8,
    /// Its index among the connections the keep-alive sweep watches (`u32::MAX`: none).
    sweep_slot: AtomicU32,
    waker: AtomicWaker,
    departure: DepartureSlot,
    keep_alive: KeepAlive,
}

impl Default for Wakeup {
    fn default() -> Self {
        Wakeup {
            state: AtomicU8::new(0),
            sweep_slot: AtomicU32::new(u32::MAX),
            waker: AtomicWaker::new(),
            departure: DepartureSlot::default(),
            keep_alive: KeepAlive::default(),
        }
    }
}

impl Wakeup {
    /// The connection's keep-alive deadline.
    pub fn keep_alive(&self) -> &KeepAlive {
        &self.keep_alive
    }

    /// Its index in the keep-alive sweep's list, if watched.
    pub fn sweep_slot(&self) -> Option<usize> {
        match self.sweep_slot.load(Ordering::Relaxed) {
            u32::MAX => None,
            i => Some(i as usize),
        }
    }

    /// Set by the sweep, under its lock.
    pub fn set_sweep_slot(&self, slot: Option<usize>) {
        let i = slot.map_or(u32::MAX, |i| u32::try_from(i).unwrap_or(u32::MAX - 1));
        self.sweep_slot.store(i, Ordering::Relaxed);
    }

    /// The keep-alive sweep found the deadline passed: the task runs and looks (without the
    /// "look again" flag, so a busy phase is not made to look for work).
    pub fn nudge(&self) {
        self.waker.wake();
    }

    /// Registers the task's waker for kicks, wake-ups and nudges without taking the flag (the
    /// reader's wait; the writer's takes it). Check what the wake-up may signal after this.
    pub fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The connection's end as its reader chose it.
    pub fn departure(&self) -> &DepartureSlot {
        &self.departure
    }

    /// There may be work: the task looks again (now, or at its next wait).
    pub fn wake(&self) {
        self.state.fetch_or(WOKEN, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Asks the connection to close; the kick stays set, the first one wins.
    pub fn kick(&self, why: Kick) {
        let bits = (why as u8) << KICK_SHIFT;
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s >> KICK_SHIFT == 0).then_some(s | bits | WOKEN)
            });
        self.waker.wake();
    }

    /// The kick, if the connection was asked to close.
    pub fn kicked(&self) -> Option<Kick> {
        match self.state.load(Ordering::SeqCst) >> KICK_SHIFT {
            1 => Some(Kick::TakenOver),
            2 => Some(Kick::Shutdown),
            _ => None,
        }
    }

    /// Takes the flag before looking for work: a wake-up from now on is kept for the next
    /// wait. Whether it was set.
    pub fn take(&self) -> bool {
        self.state.fetch_and(!WOKEN, Ordering::SeqCst) & WOKEN != 0
    }

    /// Ready (and the flag taken) once woken since the last [`Wakeup::take`]; otherwise the
    /// task's waker is registered first, then the flag checked again.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.take() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        match self.take() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

/// How the session will see the end the connection's reader chose (none: abnormal: network,
/// panic, kick), shared by the two sides of the connection's task in one atomic word (8 bytes; a `Mutex<Option<Departure>>` takes 24 in every connection):
/// 0 none, 1 abnormal, 2 graceful (bit 2: send the will, bit 3: `expiry` in the high half).
#[derive(Debug, Default)]
pub struct DepartureSlot(AtomicU64);

impl DepartureSlot {
    pub fn set(&self, d: Option<Departure>) {
        let bits = match d {
            None => 0,
            Some(Departure::Abnormal) => 1,
            Some(Departure::Graceful { send_will, expiry }) => {
                let will = if send_will { 4 } else { 0 };
                match expiry {
                    Some(e) => 2 | will | 8 | (e as u64) << 32,
                    None => 2 | will,
                }
            }
        };
        self.0.store(bits, Ordering::Relaxed);
    }

    pub fn take(&self) -> Option<Departure> {
        let bits = self.0.swap(0, Ordering::Relaxed);
        match bits & 3 {
            1 => Some(Departure::Abnormal),
            2 => Some(Departure::Graceful {
                send_will: bits & 4 != 0,
                expiry: (bits & 8 != 0).then_some((bits >> 32) as u32),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// With the `Arc`'s two counts, a wake-up fills one 64-byte block: every connection has
    /// one (it was 56 bytes before it carried the keep-alive deadline and the sweep's slot).
    #[test]
    fn a_wake_up_fits_a_64_byte_block_with_its_counts() {
        assert!(std::mem::size_of::<Wakeup>() + 16 <= 64);
    }

    /// Polls `w` once with a waker that counts its wake-ups.
    fn poll_counting(w: &Wakeup, count: &Arc<std::sync::atomic::AtomicUsize>) -> Poll<()> {
        struct Counter(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Counter {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(Arc::new(Counter(count.clone())));
        w.poll_woken(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_wake_up_between_taking_the_flag_and_waiting_is_not_lost() {
        let w = Wakeup::default();
        assert!(!w.take());
        // The task looked for work and found none; a delivery comes before it waits.
        w.wake();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        assert_eq!(poll_counting(&w, &count), Poll::Ready(()));
        assert_eq!(poll_counting(&w, &count), Poll::Pending, "taken once");
    }

    #[test]
    fn a_wake_up_after_the_task_waits_wakes_its_waker_once() {
        let w = Wakeup::default();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        assert_eq!(poll_counting(&w, &count), Poll::Pending);
        w.wake();
        w.wake();
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "the waker is taken by the first"
        );
        assert_eq!(poll_counting(&w, &count), Poll::Ready(()));
    }

    #[test]
    fn a_kick_wakes_the_task_and_stays_set_and_the_first_kick_wins() {
        let w = Wakeup::default();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        assert_eq!(poll_counting(&w, &count), Poll::Pending);
        assert_eq!(w.kicked(), None);
        w.kick(Kick::TakenOver);
        w.kick(Kick::Shutdown);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(poll_counting(&w, &count), Poll::Ready(()));
        assert!(!w.take());
        assert_eq!(w.kicked(), Some(Kick::TakenOver));
    }

    #[test]
    fn wake_ups_from_another_thread_reach_a_waiting_task() {
        let w = Arc::new(Wakeup::default());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (waker, stop) = (w.clone(), done.clone());
        let t = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                waker.wake();
                std::thread::sleep(Duration::from_micros(20));
            }
        });
        smol::block_on(async {
            for _ in 0..100 {
                futures_lite::future::poll_fn(|cx| w.poll_woken(cx)).await;
            }
        });
        done.store(true, Ordering::SeqCst);
        t.join().expect("waking thread");
    }

    /// Every departure the reader can choose comes back as it was set, once.
    #[test]
    fn the_departure_slot_gives_back_what_was_set_once() {
        let slot = DepartureSlot::default();
        assert!(slot.take().is_none());
        for (send_will, expiry) in [
            (false, None),
            (true, None),
            (false, Some(0)),
            (true, Some(u32::MAX)),
        ] {
            slot.set(Some(Departure::Graceful { send_will, expiry }));
            match slot.take() {
                Some(Departure::Graceful {
                    send_will: w,
                    expiry: e,
                }) => assert_eq!((w, e), (send_will, expiry)),
                _ => panic!("graceful ({send_will}, {expiry:?}) lost"),
            }
            assert!(slot.take().is_none(), "taken once");
        }
        slot.set(Some(Departure::Abnormal));
        assert!(matches!(slot.take(), Some(Departure::Abnormal)));
        slot.set(Some(Departure::Abnormal));
        slot.set(None);
        assert!(slot.take().is_none());
    }
}
