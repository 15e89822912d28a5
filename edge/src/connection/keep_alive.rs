//! Keep-alive deadlines and the one broker-wide sweep that enforces them. Each connection
//! keeps its deadline in one atomic word in its wake-up (`session/wakeup.rs`), moved by input;
//! one task ([`KeepAliveSweep::run`]) sleeps until the earliest deadline it saw and nudges the
//! connections whose deadline has passed, instead of a timer per connection (a boxed 56-byte
//! `smol::Timer` plus its entry in the reactor's timer tree: ~150 bytes in every idle
//! connection that asked for a keep-alive). Invariant: the sweep runs at or after every
//! watched connection's current deadline, and a task checks [`KeepAlive::expired`] after it
//! registers its waker, so no expiry is missed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::FutureExt;

use crate::session::Wakeup;

/// The time of the last input plus one and a half keep-alive periods, shared by the two
/// sides of the connection and the sweep in one atomic word (8 bytes; a limit and a
/// `Mutex<Option<Instant>>` took 32): the keep-alive times 3 (the limit in half seconds, at
/// most 196,605) in the top [`LIMIT_BITS`] bits, the deadline in milliseconds after [`base`]
/// (rounded up; 0: none) in the rest (2^46 ms: over 2,000 years).
#[derive(Debug, Default)]
pub struct KeepAlive(AtomicU64);

const LIMIT_BITS: u32 = 18;
const DEADLINE_BITS: u32 = 64 - LIMIT_BITS;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;

/// The instant keep-alive deadlines count from (the first use's).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since [`base`], rounded down.
fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64
}

impl KeepAlive {
    /// The client's keep-alive (seconds; 0: none) is set and its first deadline starts now.
    pub fn start(&self, keep_alive: u16) {
        // One and a half keep-alive periods without a packet end the connection.
        self.0
            .store((keep_alive as u64 * 3) << DEADLINE_BITS, Ordering::Relaxed);
        self.touch();
    }

    /// Input arrived: the deadline moves.
    pub fn touch(&self) {
        let word = self.0.load(Ordering::Relaxed);
        let deadline = match self.limit() {
            // + 1: never 0, and never before the limit has passed.
            Some(l) => ((base().elapsed() + l).as_millis() as u64 + 1) & DEADLINE_MASK,
            None => 0,
        };
        self.0
            .store(word & !DEADLINE_MASK | deadline, Ordering::Relaxed);
    }

    /// One and a half keep-alive periods; none without a keep-alive.
    pub fn limit(&self) -> Option<Duration> {
        let half_seconds = self.0.load(Ordering::Relaxed) >> DEADLINE_BITS;
        (half_seconds > 0).then(|| Duration::from_millis(half_seconds * 500))
    }

    /// The deadline, in milliseconds after [`base`].
    fn deadline_ms(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) & DEADLINE_MASK {
            0 => None,
            ms => Some(ms),
        }
    }

    #[cfg(test)]
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline_ms()
            .map(|ms| base() + Duration::from_millis(ms))
    }

    /// Has the deadline passed (never without a keep-alive)?
    pub fn expired(&self) -> bool {
        self.deadline_ms().is_some_and(|d| now_ms() >= d)
    }
}

/// The connections that asked for a keep-alive, and the task that wakes them at their
/// deadlines. Each watched wake-up knows its index here ([`Wakeup::sweep_slot`]), so that a
/// connection leaves in O(1) when it ends; the entries are weak, so a task dropped without
/// leaving (shutdown) is forgotten by the next sweep.
#[derive(Debug)]
pub struct KeepAliveSweep {
    watched: Mutex<Vec<Weak<Wakeup>>>,
    /// When the sweep next looks (ms after [`base`]; `u64::MAX`: only when a connection comes).
    next_ms: AtomicU64,
    /// A connection due sooner than `next_ms` came.
    sooner: Event,
}

impl Default for KeepAliveSweep {
    fn default() -> Self {
        KeepAliveSweep {
            watched: Mutex::new(Vec::new()),
            next_ms: AtomicU64::new(u64::MAX),
            sooner: Event::new(),
        }
    }
}

/// Spare room kept in the list of watched connections when it shrinks.
const KEEP_SLOTS: usize = 64;

impl KeepAliveSweep {
    fn lock(&self) -> MutexGuard<'_, Vec<Weak<Wakeup>>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches a connection whose keep-alive was started (one without is not watched).
    pub fn watch(&self, wakeup: &Arc<Wakeup>) {
        let Some(deadline) = wakeup.keep_alive().deadline_ms() else {
            return;
        };
        let sooner = {
            let mut watched = self.lock();
            wakeup.set_sweep_slot(Some(watched.len()));
            watched.push(Arc::downgrade(wakeup));
            // Read under the lock the sweep stores it under: a sweep that stored a later time
            // listens before it unlocks, so the notification below reaches it.
            deadline < self.next_ms.load(Ordering::Relaxed)
        };
        if sooner {
            self.sooner.notify(usize::MAX);
        }
    }

    /// The connection ended: it leaves the sweep.
    pub fn unwatch(&self, wakeup: &Wakeup) {
        if wakeup.sweep_slot().is_none() {
            return;
        }
        let mut watched = self.lock();
        // Read again under the lock: a sweep may have moved it.
        let Some(slot) = wakeup.sweep_slot() else {
            return;
        };
        wakeup.set_sweep_slot(None);
        let me = |w: &Weak<Wakeup>| std::ptr::eq(w.as_ptr(), wakeup);
        // Slots are kept exact under the lock; the search is a fallback that never runs.
        let i = match watched.get(slot) {
            Some(w) if me(w) => slot,
            _ => match watched.iter().position(me) {
                Some(i) => i,
                None => return,
            },
        };
        watched.swap_remove(i);
        if let Some(moved) = watched.get(i).and_then(Weak::upgrade) {
            moved.set_sweep_slot(Some(i));
        }
        shrink(&mut watched);
    }

    /// How many connections are watched (dead ones not yet swept included).
    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        self.lock().len()
    }

    /// One sweep at `now` (ms after [`base`]): nudges the connections whose deadline has
    /// passed, forgets the dead ones; the time of the next sweep.
    fn sweep(&self, watched: &mut Vec<Weak<Wakeup>>, now: u64) -> u64 {
        let mut next = u64::MAX;
        let mut i = 0;
        while i < watched.len() {
            let Some(w) = watched[i].upgrade() else {
                watched.swap_remove(i);
                continue;
            };
            // Keeps the slots exact after the removals above.
            w.set_sweep_slot(Some(i));
            let ka = w.keep_alive();
            match (ka.deadline_ms(), ka.limit()) {
                (Some(d), _) if d > now => next = next.min(d),
                (Some(_), Some(limit)) => {
                    w.nudge();
                    // Input after the nudge moves the deadline to at least a limit from now,
                    // which this sweep will not have seen: look again by then.
                    next = next.min(now + limit.as_millis() as u64);
                }
                _ => {}
            }
            i += 1;
        }
        shrink(watched);
        next
    }

    /// Sweeps at each earliest deadline, for as long as it is polled (the server runs it as
    /// one of its background tasks; it never returns).
    pub async fn run(&self) {
        loop {
            let (next, sooner) = {
                let mut watched = self.lock();
                let next = self.sweep(&mut watched, now_ms());
                self.next_ms.store(next, Ordering::Relaxed);
                (next, self.sooner.listen())
            };
            if next == u64::MAX {
                sooner.await;
            } else {
                let at = base() + Duration::from_millis(next);
                sooner
                    .or(async {
                        smol::Timer::at(at).await;
                    })
                    .await;
            }
        }
    }
}

/// Gives back room when most of the list is unused.
fn shrink(watched: &mut Vec<Weak<Wakeup>>) {
    if watched.capacity() > KEEP_SLOTS && watched.len() < watched.capacity() / 4 {
        watched.shrink_to((watched.len() * 2).max(KEEP_SLOTS));
    }
}

#[cfg(test)]
#[path = "keep_alive_tests.rs"]
mod tests;
