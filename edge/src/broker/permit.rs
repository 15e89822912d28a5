//! The connection limit as permits: an accepted connection holds a [`ConnectionPermit`] for
//! its whole life and gives it back by dropping it, on every path out (error, panic,
//! cancellation), so the count cannot leak. Shutdown waits until no permit is held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the live connections against `limits.max_connections`.
#[derive(Debug)]
pub struct Connections {
    active: AtomicUsize,
    max: usize,
}

/// One live connection's place under the limit, freed on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    conns: Arc<Connections>,
}

impl Connections {
    pub fn new(max: usize) -> Connections {
        Connections {
            active: AtomicUsize::new(0),
            max,
        }
    }

    /// A permit, or `None` when `max` connections already hold one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            conns: self.clone(),
        })
    }

    /// Connections holding a permit now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.conns.active.fetch_sub(1, Ordering::AcqRel);
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
    fn a_limit_of_zero_refuses_every_connection() {
        let conns = Arc::new(Connections::new(0));
        assert!(conns.try_acquire().is_none());
        assert_eq!(conns.active(), 0);
    }
}
