//! Removals not yet written to the outbox: acknowledged and dropped records, plus the last
//! storage offset, batched into one short write transaction every 512 records or 50 ms. A record
//! stays `pending` until its batch is committed, so a lane read meanwhile does not send it again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::window::Key;
use crate::outbox::DropReason;

/// Pending removals past which the uplink stops sending until a flush.
const MAX_PENDING: usize = 4096;
/// Queued removals that make a flush due at once.
const FLUSH_EVERY: usize = 512;
/// Age of the last flush after which queued removals are due.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(50);

pub(super) struct Removals {
    /// Queued or being written: not to be sent again.
    pending: HashSet<Key>,
    acked: Vec<Key>,
    dropped: Vec<(u8, u64, DropReason)>,
    last_offset: Option<u64>,
    last_flush: Instant,
}

/// One outbox write: what `Outbox::remove` takes.
pub(super) struct Batch {
    pub acked: Vec<Key>,
    pub dropped: Vec<(u8, u64, DropReason)>,
    pub last_offset: Option<u64>,
}

impl Batch {
    /// The records of the batch, for `Removals::committed`.
    pub fn keys(&self) -> Vec<Key> {
        self.acked
            .iter()
            .copied()
            .chain(self.dropped.iter().map(|d| (d.0, d.1)))
            .collect()
    }
}

impl Removals {
    pub fn new(now: Instant) -> Removals {
        Removals {
            pending: HashSet::new(),
            acked: Vec::new(),
            dropped: Vec::new(),
            last_offset: None,
            last_flush: now,
        }
    }

    /// Acknowledged by the upstream.
    pub fn acked(&mut self, key: Key) {
        self.pending.insert(key);
        self.acked.push(key);
    }

    /// Taken from its lane and dropped (expired, unsendable, refused for good).
    pub fn dropped(&mut self, key: Key, reason: DropReason) {
        self.pending.insert(key);
        self.dropped.push((key.0, key.1, reason));
    }

    /// Unreadable record skipped by a lane read: the cursor is past it already, so it is not
    /// tracked as pending.
    pub fn dropped_unread(&mut self, key: Key, reason: DropReason) {
        self.dropped.push((key.0, key.1, reason));
    }

    /// Storage offset reported by the upstream (the last one seen is written with the batch).
    pub fn offset(&mut self, offset: Option<u64>) {
        if offset.is_some() {
            self.last_offset = offset;
        }
    }

    pub fn is_pending(&self, key: Key) -> bool {
        self.pending.contains(&key)
    }

    /// Too many removals outstanding: send nothing more until a flush.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// Records queued for the next batch.
    pub fn has_queued(&self) -> bool {
        !(self.acked.is_empty() && self.dropped.is_empty())
    }

    /// A flush is due: many records queued, or some queued for `FLUSH_AFTER` (the clock is
    /// read only then).
    pub fn is_due(&self) -> bool {
        self.is_due_at(Instant::now)
    }

    /// `is_due` with `now` as the clock.
    fn is_due_at(&self, now: impl FnOnce() -> Instant) -> bool {
        self.acked.len() + self.dropped.len() >= FLUSH_EVERY
            || (self.has_queued()
                && now().saturating_duration_since(self.last_flush) >= FLUSH_AFTER)
    }

    /// Starts a flush at `now`: the batch to write, if there is anything (records or an offset).
    pub fn take(&mut self, now: Instant) -> Option<Batch> {
        self.last_flush = now;
        if !self.has_queued() && self.last_offset.is_none() {
            return None;
        }
        Some(Batch {
            acked: std::mem::take(&mut self.acked),
            dropped: std::mem::take(&mut self.dropped),
            last_offset: self.last_offset.take(),
        })
    }

    /// The batch with these keys is in the outbox: they are no longer pending.
    pub fn committed(&mut self, keys: &[Key]) {
        for k in keys {
            self.pending.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_write_gives_no_batch_but_restarts_the_clock() {
        let t0 = Instant::now();
        let mut r = Removals::new(t0);
        assert!(!r.is_due_at(|| t0 + Duration::from_secs(10)));
        assert!(r.take(t0 + FLUSH_AFTER).is_none());
        r.acked((1, 1));
        assert!(!r.is_due_at(|| t0 + FLUSH_AFTER + Duration::from_millis(49)));
        assert!(r.is_due_at(|| t0 + FLUSH_AFTER * 2));
    }

    #[test]
    fn due_after_50ms_or_at_512_records() {
        let t0 = Instant::now();
        let mut r = Removals::new(t0);
        r.acked((3, 1));
        assert!(!r.is_due_at(|| t0));
        assert!(r.is_due_at(|| t0 + FLUSH_AFTER));
        let mut r = Removals::new(t0);
        for seq in 0..511 {
            r.acked((0, seq));
        }
        assert!(!r.is_due_at(|| t0));
        r.dropped((0, 511), DropReason::Ttl);
        assert!(r.is_due_at(|| t0), "512 queued: due at once");
    }

    #[test]
    fn a_batch_takes_everything_and_keys_stay_pending_until_committed() {
        let t0 = Instant::now();
        let mut r = Removals::new(t0);
        r.acked((3, 5));
        r.dropped((1, 2), DropReason::Ttl);
        r.dropped_unread((0, 9), DropReason::Corrupt);
        r.offset(Some(77));
        r.offset(None);
        assert!(r.is_pending((3, 5)) && r.is_pending((1, 2)));
        assert!(!r.is_pending((0, 9)), "an unread record is not tracked");
        let b = r.take(t0).unwrap();
        assert_eq!(b.acked, vec![(3, 5)]);
        assert_eq!(
            b.dropped,
            vec![(1, 2, DropReason::Ttl), (0, 9, DropReason::Corrupt)]
        );
        assert_eq!(b.last_offset, Some(77));
        assert!(!r.has_queued());
        assert!(r.is_pending((3, 5)), "pending while the batch is written");
        r.committed(&b.keys());
        assert!(!r.is_pending((3, 5)) && !r.is_pending((1, 2)));
        assert!(r.take(t0).is_none());
    }

    #[test]
    fn an_offset_alone_is_written() {
        let t0 = Instant::now();
        let mut r = Removals::new(t0);
        r.offset(Some(3));
        assert!(
            !r.is_due_at(|| t0 + Duration::from_secs(1)),
            "an offset never forces a flush"
        );
        let b = r.take(t0).unwrap();
        assert!(b.acked.is_empty() && b.dropped.is_empty());
        assert_eq!(b.last_offset, Some(3));
    }

    #[test]
    fn full_at_4096_pending() {
        let t0 = Instant::now();
        let mut r = Removals::new(t0);
        for seq in 0..4095 {
            r.acked((2, seq));
        }
        assert!(!r.is_full());
        r.acked((2, 4095));
        assert!(r.is_full());
        let b = r.take(t0).unwrap();
        assert!(r.is_full(), "still pending until committed");
        r.committed(&b.keys());
        assert!(!r.is_full());
    }
}
