//! A session's deque of deliveries (its waiting window, its in-flight ones) that costs one
//! pointer while unused and gives most of its memory back when it empties after holding many.
//! Invariant: while empty, it holds at most `KEEP` slots.

use std::collections::VecDeque;
use std::ops::Deref;

use super::queue::Delivery;

/// Slots an empty deque keeps, so that a steady flow does not reallocate whenever its
/// deque empties: a subscriber with 64 messages in flight (the default `max_inflight`)
/// empties its in-flight deque many times in a drain, and freeing it each time means growing
/// it again (4, 8, ... 64 slots). Freed at 16 slots, 100,000-message drains measured a mean of
/// 580k against 690k msg/s over 7 alternated runs, though drains on the 2-core test machine
/// are bimodal for any build (BENCHMARKS.md). At most 64 slots of 32 bytes stay with a
/// session once it has had that many waiting.
const KEEP: usize = 64;

/// Reads go through `Deref` (an empty deque reads as [`EMPTY`]); writes through the methods
/// below, each of which shrinks a deque it leaves empty to `KEEP` slots. A plain
/// `VecDeque` takes 32 bytes in every session and keeps its largest capacity for the
/// session's life: after a drained backlog, 8,192 slots (the window; 64 bytes each then).
#[derive(Debug, Default)]
#[expect(
    clippy::box_collection,
    reason = "the box is the point: one pointer in every session while unused"
)]
pub(super) struct Deliveries(Option<Box<VecDeque<Delivery>>>);

static EMPTY: VecDeque<Delivery> = VecDeque::new();

impl Deref for Deliveries {
    type Target = VecDeque<Delivery>;

    fn deref(&self) -> &VecDeque<Delivery> {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl From<VecDeque<Delivery>> for Deliveries {
    fn from(q: VecDeque<Delivery>) -> Deliveries {
        if q.is_empty() {
            return Deliveries(None);
        }
        Deliveries(Some(Box::new(q)))
    }
}

impl Deliveries {
    fn grown(&mut self) -> &mut VecDeque<Delivery> {
        self.0.get_or_insert_with(Box::default)
    }

    /// Shrinks the deque to `KEEP` slots if it is empty and holds more.
    fn release_if_empty(&mut self) {
        if let Some(q) = self
            .0
            .as_mut()
            .filter(|q| q.is_empty() && q.capacity() > KEEP)
        {
            q.shrink_to(KEEP);
        }
    }

    pub(super) fn push_back(&mut self, d: Delivery) {
        self.grown().push_back(d);
    }

    pub(super) fn push_front(&mut self, d: Delivery) {
        self.grown().push_front(d);
    }

    /// Moves every element of `other` to the back, leaving `other` empty.
    pub(super) fn append(&mut self, other: &mut VecDeque<Delivery>) {
        if !other.is_empty() {
            self.grown().append(other);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.0.as_mut()?.pop_front();
        self.release_if_empty();
        d
    }

    pub(super) fn pop_back(&mut self) -> Option<Delivery> {
        let d = self.0.as_mut()?.pop_back();
        self.release_if_empty();
        d
    }

    pub(super) fn remove(&mut self, i: usize) -> Option<Delivery> {
        let d = self.0.as_mut()?.remove(i);
        self.release_if_empty();
        d
    }

    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Delivery> {
        self.0.as_mut()?.get_mut(i)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Delivery> {
        self.0.iter_mut().flat_map(|q| q.iter_mut())
    }

    /// Takes every delivery out, in order; the memory goes with them (nothing is kept).
    pub(super) fn take_all(&mut self) -> VecDeque<Delivery> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::queue::{Marks, OutState, SubIds};

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            seq,
            msg: crate::session::tests::msg("t"),
            qos: 1,
            marks: Marks::new(false, false),
            sub_ids: SubIds::default(),
            state: OutState::Unsent,
        }
    }

    #[test]
    fn an_unused_deque_is_one_pointer_and_reads_as_empty() {
        assert_eq!(
            std::mem::size_of::<Deliveries>(),
            std::mem::size_of::<usize>()
        );
        let d = Deliveries::default();
        assert!(d.is_empty() && d.front().is_none() && d.iter().count() == 0);
    }

    #[test]
    fn a_deque_that_empties_after_holding_many_gives_its_memory_back() {
        let mut d = Deliveries::default();
        for seq in 0..1000 {
            d.push_back(delivery(seq));
        }
        assert_eq!(d.len(), 1000);
        for seq in 0..1000 {
            assert_eq!(d.pop_front().map(|x| x.seq), Some(seq), "in order");
        }
        assert!(d.capacity() <= KEEP, "a large deque left empty is shrunk");
        for seq in 0..100 {
            d.push_back(delivery(seq));
        }
        while d.pop_back().is_some() {}
        assert!(d.capacity() <= KEEP);
        for seq in 0..100 {
            d.push_back(delivery(seq));
        }
        for i in (0..100).rev() {
            assert_eq!(d.remove(i).map(|x| x.seq), Some(i as u64));
        }
        assert!(d.capacity() <= KEEP);
        for seq in 0..100 {
            d.push_back(delivery(seq));
        }
        let all = d.take_all();
        assert_eq!(all.len(), 100);
        assert!(d.0.is_none() && d.is_empty());
    }

    #[test]
    fn a_small_deque_keeps_its_buffer_when_it_empties() {
        let mut d = Deliveries::default();
        for seq in 0..KEEP as u64 {
            d.push_back(delivery(seq));
        }
        while d.pop_front().is_some() {}
        let slots = d.capacity();
        assert!(slots >= KEEP);
        for round in 0..3 {
            d.push_back(delivery(round));
            d.push_front(delivery(round + 10));
            assert_eq!(d.remove(1).map(|x| x.seq), Some(round));
            assert_eq!(d.pop_front().map(|x| x.seq), Some(round + 10));
            assert_eq!(
                d.capacity(),
                slots,
                "no allocation per message in a steady flow"
            );
        }
    }

    #[test]
    fn appending_and_converting_keep_order_and_free_empty_ones() {
        let mut d = Deliveries::default();
        let mut other: VecDeque<Delivery> = (0..40).map(delivery).collect();
        d.push_back(delivery(100));
        d.append(&mut other);
        assert!(other.is_empty());
        assert_eq!(d.front().map(|x| x.seq), Some(100));
        assert_eq!(d.back().map(|x| x.seq), Some(39));
        if let Some(x) = d.get_mut(1) {
            x.seq = 7;
        }
        assert_eq!(d.get(1).map(|x| x.seq), Some(7));
        for x in d.iter_mut() {
            x.qos = 2;
        }
        assert!(d.iter().all(|x| x.qos == 2));
        let mut big: VecDeque<Delivery> = (0..40).map(delivery).collect();
        big.clear();
        assert!(
            Deliveries::from(big).0.is_none(),
            "an empty deque converts to nothing"
        );
        let mut nothing = VecDeque::new();
        let mut e = Deliveries::default();
        e.append(&mut nothing);
        assert!(e.0.is_none(), "appending nothing allocates nothing");
    }
}
