//! The packet ids of stored deliveries that were sent (or recorded ahead of sending) and sit in
//! the backlog, kept reserved so that no other delivery takes them before they go out again.
//! Held as runs of consecutive seqs with consecutive ids, the way a drain assigns them: the up
//! to 8,192 ids recorded ahead that a crash leaves behind usually make one run (16 bytes)
//! instead of 8,192 pairs (128 KiB) per session.
//!
//! Invariant: every (seq, id) pushed and not dropped by [`SentIds::retain_from`] is in exactly
//! one run; runs keep push order (seqs need not ascend across runs).

/// Reserved (seq, packet id) pairs as runs (see the module header).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SentIds {
    runs: Vec<Run>,
}

/// `len` deliveries from `seq` on, with ids from `pid` on (no wrap inside a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    seq: u64,
    pid: u16,
    len: u16,
}

impl Run {
    fn end(&self) -> u64 {
        self.seq + u64::from(self.len)
    }
}

impl SentIds {
    pub const fn new() -> Self {
        SentIds { runs: Vec::new() }
    }

    /// Adds the id of delivery `seq`; extends the last run when both follow on from it.
    pub fn push(&mut self, seq: u64, pid: u16) {
        if let Some(last) = self.runs.last_mut() {
            let next_pid = u32::from(last.pid) + u32::from(last.len);
            if last.len < u16::MAX && seq == last.end() && u32::from(pid) == next_pid {
                last.len += 1;
                return;
            }
        }
        self.runs.push(Run { seq, pid, len: 1 });
    }

    /// Drops the ids of deliveries before `next` (read back from the backlog: their ids now
    /// travel with them in the window).
    pub fn retain_from(&mut self, next: u64) {
        self.runs.retain_mut(|r| {
            if r.end() <= next {
                return false;
            }
            if r.seq < next {
                // `next - r.seq < r.len`, so the cut fits in u16.
                let cut = (next - r.seq) as u16;
                r.seq = next;
                r.pid += cut;
                r.len -= cut;
            }
            true
        });
        if self.runs.capacity() > 2 * self.runs.len() + 8 {
            self.runs.shrink_to_fit();
        }
    }

    pub fn clear(&mut self) {
        self.runs = Vec::new();
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| usize::from(r.len)).sum()
    }

    /// How many runs hold them (what the memory held grows with).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The (seq, id) pairs, in push order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u16)> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..r.len).map(move |i| (r.seq + u64::from(i), r.pid + i)))
    }

    /// The ids held.
    pub fn pids(&self) -> impl Iterator<Item = u16> + '_ {
        self.iter().map(|(_, pid)| pid)
    }
}

impl FromIterator<(u64, u16)> for SentIds {
    fn from_iter<I: IntoIterator<Item = (u64, u16)>>(iter: I) -> Self {
        let mut ids = SentIds::default();
        for (seq, pid) in iter {
            ids.push(seq, pid);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_window_of_consecutive_ids_takes_one_run() {
        let ids: SentIds = (0..8192u64).map(|i| (100 + i, 1 + i as u16)).collect();
        assert_eq!((ids.len(), ids.runs()), (8192, 1));
        assert_eq!(ids.iter().nth(8191), Some((8291, 8192)));
    }

    #[test]
    fn a_gap_in_seqs_or_ids_and_the_id_wrap_start_new_runs() {
        let pairs = vec![
            (1, 65534),
            (2, 65535),
            (3, 1),
            (4, 2),
            (6, 3),
            (7, 9),
            (8, 10),
        ];
        let ids: SentIds = pairs.iter().copied().collect();
        assert_eq!(ids.runs(), 4);
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            pairs,
            "every pair kept, in order"
        );
    }

    #[test]
    fn retain_from_cuts_into_a_run_and_drops_runs_before_it() {
        let mut ids: SentIds = [(1, 1), (2, 2), (5, 7), (6, 8), (7, 9)]
            .into_iter()
            .collect();
        ids.retain_from(6);
        assert_eq!(ids.iter().collect::<Vec<_>>(), vec![(6, 8), (7, 9)]);
        ids.retain_from(8);
        assert!(ids.is_empty());
    }

    #[test]
    fn ids_pushed_below_earlier_runs_are_kept_and_retained_by_seq() {
        // A window given back to disk below ids restored after a crash.
        let mut ids: SentIds = [(50, 5), (51, 6)].into_iter().collect();
        ids.push(10, 40);
        ids.push(11, 41);
        assert_eq!(ids.runs(), 2);
        ids.retain_from(11);
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![(50, 5), (51, 6), (11, 41)]
        );
        assert_eq!(ids.pids().collect::<Vec<_>>(), vec![5, 6, 41]);
    }

    #[test]
    fn a_run_stops_growing_at_the_longest_length_it_can_count() {
        let mut ids = SentIds::default();
        ids.runs.push(Run {
            seq: 0,
            pid: 0,
            len: u16::MAX,
        });
        ids.push(u64::from(u16::MAX), u16::MAX);
        assert_eq!((ids.runs(), ids.len()), (2, usize::from(u16::MAX) + 1));
    }
}
