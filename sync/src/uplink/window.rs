//! The in-flight window: packet id -> (lane, sequence) of every QoS 1/2 PUBLISH awaiting its
//! PUBACK/PUBCOMP, bounded by the session's capacity. Unacknowledged packet ids are carried over
//! to the next session, so a resumed upstream session sees the same ids again (DUP).

use std::collections::{HashMap, HashSet};

/// (lane, outbox sequence) of a record.
pub(super) type Key = (u8, u64);

/// Packet ids of the last session's unacknowledged messages, kept for the next session.
#[derive(Default)]
pub(super) struct Carry {
    /// (lane, seq) -> (packet id, PUBREC already received)
    entries: HashMap<Key, (u16, bool)>,
}

impl Carry {
    /// Applies the CONNACK: the ids only mean something to the session they were sent in, and a
    /// carry far larger than the window (4x `max_inflight`) is dropped rather than rescanned.
    pub fn on_connect(&mut self, session_present: bool, max_inflight: usize) {
        if !session_present {
            self.entries.clear();
        }
        if self.entries.len() > 4 * max_inflight {
            self.entries.clear();
        }
    }

    #[cfg(test)]
    fn get(&self, key: Key) -> Option<(u16, bool)> {
        self.entries.get(&key).copied()
    }
}

struct Inflight {
    lane: u8,
    seq: u64,
    /// PUBREC received and PUBREL sent (QoS 2): waiting for PUBCOMP.
    released: bool,
}

/// The window of one session, over the carry it takes ids from and gives them back to.
pub(super) struct Window<'a> {
    capacity: usize,
    inflight: HashMap<u16, Inflight>,
    /// The keys of `inflight`, to skip records already sent when a lane is read again.
    keys: HashSet<Key>,
    pids: edge_mqtt::pid::PidAllocator,
    carry: &'a mut Carry,
}

impl<'a> Window<'a> {
    pub fn new(capacity: usize, carry: &'a mut Carry) -> Self {
        Window {
            capacity,
            inflight: HashMap::new(),
            keys: HashSet::new(),
            pids: edge_mqtt::pid::PidAllocator::default(),
            carry,
        }
    }

    pub fn has_room(&self) -> bool {
        self.inflight.len() < self.capacity
    }

    /// The record is in flight in this session.
    pub fn holds(&self, key: Key) -> bool {
        self.keys.contains(&key)
    }

    /// Session resumed: carried QoS 2 messages whose PUBREC came before the break go back in
    /// flight as released; returns their packet ids (PUBREL to send again).
    pub fn resume(&mut self) -> Vec<u16> {
        let released: Vec<(Key, u16)> = self
            .carry
            .entries
            .iter()
            .filter(|(_, (_, rel))| *rel)
            .map(|(k, (pid, _))| (*k, *pid))
            .collect();
        let mut pids = Vec::with_capacity(released.len());
        for ((lane, seq), pid) in released {
            self.carry.entries.remove(&(lane, seq));
            self.insert(pid, lane, seq, true);
            pids.push(pid);
        }
        pids
    }

    /// Packet id the record had in the last session, if carried over.
    pub fn reserved(&self, key: Key) -> Option<u16> {
        self.carry.entries.get(&key).map(|(p, _)| *p)
    }

    /// Packet id for the record about to be sent: its carried id (taken out of the carry) or a
    /// fresh one.
    pub fn assign(&mut self, key: Key, reserved: Option<u16>) -> u16 {
        match reserved {
            Some(pid) => {
                self.carry.entries.remove(&key);
                pid
            }
            None => self.alloc_pid(),
        }
    }

    /// Next packet id not in flight and not carried (1..=65535, wrapping).
    pub fn alloc_pid(&mut self) -> u16 {
        let (inflight, carry) = (&self.inflight, &self.carry);
        // The window and the carry hold at most a few hundred ids: one is always free.
        self.pids
            .next(|p| inflight.contains_key(&p) || carry.entries.values().any(|(cp, _)| *cp == p))
            .map_or(1, |p| p.value())
    }

    /// The PUBLISH with `pid` was written.
    pub fn sent(&mut self, pid: u16, key: Key) {
        self.insert(pid, key.0, key.1, false);
    }

    /// PUBREC for `pid`: waiting for PUBCOMP now.
    pub fn released(&mut self, pid: u16) {
        if let Some(f) = self.inflight.get_mut(&pid) {
            f.released = true;
        }
    }

    /// Final answer for `pid` (PUBACK, PUBCOMP or a refusal): leaves the window.
    pub fn complete(&mut self, pid: u16) -> Option<Key> {
        let f = self.inflight.remove(&pid)?;
        let key = (f.lane, f.seq);
        self.keys.remove(&key);
        Some(key)
    }

    /// End of the session: everything still in flight is carried over to the next one.
    pub fn close(&mut self) {
        for (pid, f) in self.inflight.drain() {
            self.carry
                .entries
                .insert((f.lane, f.seq), (pid, f.released));
        }
        self.keys.clear();
    }

    fn insert(&mut self, pid: u16, lane: u8, seq: u64, released: bool) {
        self.inflight.insert(
            pid,
            Inflight {
                lane,
                seq,
                released,
            },
        );
        self.keys.insert((lane, seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_counts_up_and_skips_ids_in_flight_or_carried() {
        let mut carry = Carry::default();
        carry.entries.insert((1, 50), (2, false));
        let mut w = Window::new(10, &mut carry);
        assert_eq!(w.alloc_pid(), 1);
        w.sent(3, (0, 7));
        assert_eq!(w.alloc_pid(), 4, "2 is carried, 3 is in flight");
        assert_eq!(w.alloc_pid(), 5);
    }

    #[test]
    fn allocation_wraps_after_65535_and_never_gives_0() {
        let mut carry = Carry::default();
        let mut w = Window::new(10, &mut carry);
        w.sent(1, (0, 1));
        w.pids = edge_mqtt::pid::PidAllocator::starting_at(u16::MAX - 1);
        assert_eq!(w.alloc_pid(), u16::MAX - 1);
        assert_eq!(w.alloc_pid(), u16::MAX);
        assert_eq!(w.alloc_pid(), 2, "wrapped past 0, and 1 is in flight");
    }

    #[test]
    fn capacity_keys_and_completion() {
        let mut carry = Carry::default();
        let mut w = Window::new(2, &mut carry);
        let a = w.alloc_pid();
        w.sent(a, (3, 10));
        assert!(w.has_room());
        let b = w.alloc_pid();
        w.sent(b, (3, 11));
        assert!(!w.has_room());
        assert!(w.holds((3, 10)) && w.holds((3, 11)));
        assert_eq!(w.complete(a), Some((3, 10)));
        assert!(!w.holds((3, 10)));
        assert!(w.has_room());
        assert_eq!(
            w.complete(a),
            None,
            "a second ack for the same id is ignored"
        );
    }

    #[test]
    fn unacknowledged_ids_are_carried_and_reused() {
        let mut carry = Carry::default();
        {
            let mut w = Window::new(10, &mut carry);
            for seq in 1..=3 {
                let pid = w.alloc_pid();
                w.sent(pid, (2, seq));
            }
            w.released(3);
            w.complete(1);
            w.close();
        }
        assert_eq!(carry.get((2, 1)), None);
        assert_eq!(carry.get((2, 2)), Some((2, false)));
        assert_eq!(carry.get((2, 3)), Some((3, true)));

        carry.on_connect(true, 10);
        let mut w = Window::new(10, &mut carry);
        // The released one is in flight again at once (PUBREL resent).
        assert_eq!(w.resume(), vec![3]);
        assert!(w.holds((2, 3)));
        // The other keeps its id when it is sent again; fresh ids avoid it.
        assert_eq!(w.reserved((2, 2)), Some(2));
        assert_eq!(w.alloc_pid(), 1);
        assert_eq!(w.alloc_pid(), 4);
        assert_eq!(w.assign((2, 2), Some(2)), 2);
        assert_eq!(w.reserved((2, 2)), None);
        w.sent(2, (2, 2));
        assert_eq!(w.assign((2, 9), None), 5);
    }

    #[test]
    fn carry_cleared_without_session_present() {
        let mut carry = Carry::default();
        carry.entries.insert((0, 1), (1, false));
        carry.on_connect(true, 1);
        assert_eq!(carry.get((0, 1)), Some((1, false)), "kept: session resumed");
        carry.on_connect(false, 1);
        assert_eq!(carry.get((0, 1)), None, "cleared: new session");
    }

    #[test]
    fn carry_cleared_when_far_larger_than_the_window() {
        let mut carry = Carry::default();
        for seq in 1..=8 {
            carry.entries.insert((0, seq), (seq as u16, false));
        }
        carry.on_connect(true, 2);
        assert_eq!(carry.entries.len(), 8, "4x max_inflight is still kept");
        carry.entries.insert((0, 9), (9, false));
        carry.on_connect(true, 2);
        assert!(carry.entries.is_empty());
    }
}
