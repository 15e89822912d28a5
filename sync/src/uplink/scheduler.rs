//! Priority lanes: one FIFO per priority (outbox sequence order), each with the read cursor into
//! its outbox lane. Window slots go to lanes by a weighted pattern of 15 (priority 3: 8 slots,
//! 2: 4, 1: 2, 0: 1); an empty priority's turn goes to the highest priority with data.

use std::collections::VecDeque;

use crate::outbox::{Record, PRIORITIES};

/// Lane chosen for each of 15 consecutive window slots.
const SCHEDULE: [usize; 15] = [3, 2, 3, 1, 3, 2, 3, 0, 3, 2, 3, 1, 3, 2, 3];

struct Lane<T> {
    q: VecDeque<(u64, T)>,
    /// Highest sequence read from the outbox lane so far.
    cursor: u64,
    /// The last read found nothing after `cursor` (cleared when new records are committed).
    exhausted: bool,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            q: VecDeque::new(),
            cursor: 0,
            exhausted: false,
        }
    }
}

/// The lanes of one session and the position in the weighted pattern.
pub(super) struct Lanes<T = Record> {
    lanes: [Lane<T>; PRIORITIES],
    /// Slots handed out so far (advanced only by a record actually sent).
    tick: usize,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Lanes {
            lanes: std::array::from_fn(|_| Lane::default()),
            tick: 0,
        }
    }
}

impl<T> Lanes<T> {
    /// The lane is empty and its outbox lane may hold more: read it before picking.
    pub fn wants_refill(&self, l: usize) -> bool {
        self.lanes[l].q.is_empty() && !self.lanes[l].exhausted
    }

    /// Sequence after which the next outbox read of lane `l` starts.
    pub fn cursor(&self, l: usize) -> u64 {
        self.lanes[l].cursor
    }

    /// Records `seq` as read from lane `l` (queued or skipped).
    pub fn read_upto(&mut self, l: usize, seq: u64) {
        self.lanes[l].cursor = self.lanes[l].cursor.max(seq);
    }

    /// A read of lane `l` found nothing more.
    pub fn exhausted(&mut self, l: usize) {
        self.lanes[l].exhausted = true;
    }

    /// Forgets the queued records and read positions: every lane is read again from its start
    /// (records in flight or being removed are skipped by the reader as usual).
    pub fn reset(&mut self) {
        for l in &mut self.lanes {
            *l = Lane::default();
        }
    }

    /// New records were committed: every lane may be read again.
    pub fn new_data(&mut self) {
        for l in &mut self.lanes {
            l.exhausted = false;
        }
    }

    /// Queues a record read from lane `l` (in sequence order).
    pub fn push(&mut self, l: usize, seq: u64, item: T) {
        self.lanes[l].q.push_back((seq, item));
    }

    /// Lane of the next record to send, if any lane has one.
    pub fn pick(&self) -> Option<usize> {
        let want = SCHEDULE[self.tick % SCHEDULE.len()];
        if !self.lanes[want].q.is_empty() {
            return Some(want);
        }
        (0..PRIORITIES).rev().find(|&l| !self.lanes[l].q.is_empty())
    }

    /// Takes the head of lane `l`.
    pub fn pop(&mut self, l: usize) -> Option<(u64, T)> {
        self.lanes[l].q.pop_front()
    }

    /// Puts a record taken by `pop` back at the head of its lane (it could not be sent yet).
    pub fn unpop(&mut self, l: usize, seq: u64, item: T) {
        self.lanes[l].q.push_front((seq, item));
    }

    /// A record was sent: the next slot of the pattern is up.
    pub fn advance(&mut self) {
        self.tick = self.tick.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(n: u64) -> Lanes<()> {
        let mut s = Lanes::default();
        for l in 0..PRIORITIES {
            for seq in 1..=n {
                s.push(l, seq, ());
            }
        }
        s
    }

    /// Picks and sends `n` records, returning the lanes in send order.
    fn send(s: &mut Lanes<()>, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(l) = s.pick() else { break };
            s.pop(l).unwrap();
            s.advance();
            out.push(l);
        }
        out
    }

    #[test]
    fn weights_are_8_4_2_1_over_15_slots() {
        let mut s = full(100);
        let order = send(&mut s, 30);
        for round in order.chunks(15) {
            let count = |l| round.iter().filter(|&&x| x == l).count();
            assert_eq!([count(3), count(2), count(1), count(0)], [8, 4, 2, 1]);
        }
        // The highest priority never waits more than one slot.
        assert!(order.windows(2).all(|w| w[0] == 3 || w[1] == 3));
    }

    #[test]
    fn empty_priority_turn_goes_to_highest_with_data() {
        let mut s: Lanes<()> = Lanes::default();
        for seq in 1..=20 {
            s.push(0, seq, ());
            s.push(1, seq, ());
        }
        // Lanes 3 and 2 are empty: their slots go to lane 1; lane 0 keeps its own slot (8th).
        let order = send(&mut s, 15);
        assert_eq!(order.iter().filter(|&&l| l == 0).count(), 1);
        assert_eq!(order[7], 0);
        assert!(order.iter().enumerate().all(|(i, &l)| i == 7 || l == 1));
    }

    #[test]
    fn only_one_lane_with_data_gets_every_slot() {
        let mut s: Lanes<()> = Lanes::default();
        for seq in 1..=20 {
            s.push(0, seq, ());
        }
        assert_eq!(send(&mut s, 20), vec![0; 20]);
        assert_eq!(s.pick(), None);
    }

    #[test]
    fn fifo_per_priority_and_unpop_keeps_the_head() {
        let mut s: Lanes<u64> = Lanes::default();
        for seq in [4, 7, 9] {
            s.push(2, seq, seq * 10);
        }
        let (seq, v) = s.pop(2).unwrap();
        assert_eq!((seq, v), (4, 40));
        s.unpop(2, seq, v);
        let got: Vec<u64> = std::iter::from_fn(|| s.pop(2).map(|(q, _)| q)).collect();
        assert_eq!(got, vec![4, 7, 9]);
    }

    #[test]
    fn a_record_not_sent_does_not_use_up_a_slot() {
        let mut s = full(10);
        assert_eq!(s.pick(), Some(3));
        let (seq, v) = s.pop(3).unwrap();
        s.unpop(3, seq, v); // paced: not sent, no advance
        assert_eq!(s.pick(), Some(3));
        s.pop(3).unwrap();
        s.advance();
        assert_eq!(s.pick(), Some(2));
    }

    #[test]
    fn refill_flags_and_cursor() {
        let mut s: Lanes<()> = Lanes::default();
        assert!(s.wants_refill(1));
        s.exhausted(1);
        assert!(!s.wants_refill(1));
        s.new_data();
        assert!(s.wants_refill(1));
        s.read_upto(1, 42);
        s.push(1, 42, ());
        assert_eq!(s.cursor(1), 42);
        assert!(!s.wants_refill(1), "a lane with queued records is not read");
    }
}
