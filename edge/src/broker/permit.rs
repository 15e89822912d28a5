//! The connection limit as permits: an accepted connection holds a [`ConnectionPermit`] for
//! its whole life and gives it back by dropping it, on every path out (error, panic,
//! cancellation), so the count cannot leak. Shutdown waits until no permit is held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the live connections against `limits.max_connections`.
#[derive(Debug)]
pub struct Connections {
    active: AtomicUsize,
    /// Changed by a reload; connections over a lowered limit stay, new ones are refused.
    max: AtomicUsize,
}

/// One live connection's place under the limit, freed on drop, or handed over to a holder
/// that frees it with [`Connections::release`].
#[derive(Debug)]
pub struct ConnectionPermit {
    /// None once handed over.
    conns: Option<Arc<Connections>>,
}

impl ConnectionPermit {
    /// The holder now frees the place itself, with [`Connections::release`] (an accepted
    /// connection's block reaches the broker's `Connections` anyway: 8 bytes less each).
    pub fn hand_over(mut self) {
        self.conns = None;
    }
}

impl Connections {
    pub fn new(max: usize) -> Connections {
        Connections {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// The limit now in force.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// A new limit (reload): applies to the next `try_acquire`.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A permit, or `None` when `max` connections already hold one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max()).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            conns: Some(self.clone()),
        })
    }

    /// Frees the place of a [`ConnectionPermit`] handed over.
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections holding a permit now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(c) = &self.conns {
            c.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_run_out_at_the_limit_and_come_back_on_drop() {
        let conns = Arc::new(Connections::new(2));
        let a = conns.try_acquire().expect("first");
        let b = conns.try_acquire().expect("second");
        assert!(conns.try_acquire().is_none(), "a third is over the limit");
        assert_eq!(conns.active(), 2);
        drop(a);
        assert_eq!(conns.active(), 1);
        let c = conns
            .try_acquire()
            .expect("a freed place is available again");
        drop((b, c));
        assert_eq!(conns.active(), 0);
    }

    #[test]
    fn a_raised_limit_admits_more_and_a_lowered_one_keeps_who_is_in() {
        let conns = Arc::new(Connections::new(1));
        let a = conns.try_acquire().expect("first");
        assert!(conns.try_acquire().is_none());
        conns.set_max(2);
        let b = conns.try_acquire().expect("room after raising the limit");
        conns.set_max(1);
        assert_eq!(conns.active(), 2, "lowering the limit drops nobody");
        drop(a);
        assert!(conns.try_acquire().is_none(), "still at the lowered limit");
        drop(b);
        assert!(conns.try_acquire().is_some());
    }

    #[test]
    fn a_limit_of_zero_refuses_every_connection() {
        let conns = Arc::new(Connections::new(0));
        assert!(conns.try_acquire().is_none());
        assert_eq!(conns.active(), 0);
    }
}
