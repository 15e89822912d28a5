//! A session's backlog: stored deliveries that are on disk only. A session going offline gives
//! its window back to disk ([`Session::evict_window`]); an online one reads the backlog up again
//! in `seq` order as the client drains its window ([`Session::refill_request`], then
//! [`Session::refilled`] with the rows), merging in the unstored deliveries queued behind it.
//! The read is asked for when the window is under 3/4 full ([`Session::window_cap`]), and the
//! commit applying it records the packet ids of what it brought in, so they are durable long
//! before they are sent.

use std::collections::VecDeque;

use super::queue::{Delivery, Durable, OutState};
use super::sent_ids::SentIds;
use super::Session;
use crate::error::Result;
use crate::storage::{DeliveryRecord, Op};

/// Stored deliveries that are on disk only (see the module header).
#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// How many; each has `seq >= next`.
    pub(super) count: usize,
    pub(super) next: u64,
    /// Unstored deliveries queued behind the backlog, in `seq` order.
    pub(super) later: VecDeque<Delivery>,
    /// (seq, packet id) of backlog deliveries sent before (or recorded ahead, restored after
    /// a crash): their ids stay reserved.
    pub(super) sent: SentIds,
    /// Ids recorded ahead were forgotten ([`Op::Unreserve`]) when the window went back to
    /// disk: the next read must see that commit, so it waits for the writer.
    pub(super) unreserved: bool,
    /// A read of the backlog is under way.
    pub(super) reading: bool,
    /// Most rows the next read brings in (0: [`FIRST_READ`]); doubles with each read up to
    /// the window, starts over when the window goes back to disk.
    pub(super) read_size: usize,
}

/// Rows of a session's first backlog read after its client (re)connects. The first rows sent
/// wait for the read and for the commit of their packet ids; a first read of the whole window
/// (8,192 small messages) put both, ~7 ms here, before the first delivery of a drain. Later
/// reads double up to the window, and run while what came before is sent.
pub(super) const FIRST_READ: usize = 512;

/// A read of a session's backlog to run: up to `max` deliveries with `from <= seq < until`.
/// Every one of them was pushed to the writer before the request was made, in `seq` order, so
/// what is committed of them is a prefix: a read that does not wait for the writer returns
/// that prefix. `must_wait`: the packet ids of some were recorded and may not be committed
/// yet, so the read must come after every op pushed before the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub from: u64,
    pub until: u64,
    pub max: usize,
    pub must_wait: bool,
}

impl Session {
    /// A read of the backlog to run now, if the window of this online session is low and
    /// none is under way: up to `max` deliveries (capped by the window). The caller runs it
    /// once everything pushed so far is committed, and hands the rows to [`Session::refilled`].
    pub fn refill_request(&mut self, max: usize) -> Option<Refill> {
        let b = &self.durable().backlog;
        if b.count == 0 || b.reading || !self.online() {
            return None;
        }
        // Under 3/4 of the window: the read, and the commit of the ids recorded for what it
        // brings in, have the sends of the 3/4 still in memory to land.
        let cap = self.window_cap();
        if self.queue.len() >= cap / 4 * 3 {
            return None;
        }
        let room = cap - self.queue.len();
        let b = &mut Durable::of(&mut self.durable).backlog;
        b.reading = true;
        let size = b.read_size.max(FIRST_READ);
        b.read_size = (size * 2).min(super::queue::WINDOW);
        Some(Refill {
            from: b.next,
            until: self.next_seq,
            max: max.clamp(1, room.min(size)),
            must_wait: !b.sent.is_empty() || b.unreserved,
        })
    }

    /// The rows read for `r`, appended to the window in `seq` order (with the unstored
    /// deliveries queued behind them). Ignored when the backlog moved meanwhile (the session
    /// went offline and gave its window back); a read error leaves the backlog as it was.
    /// `waited`: the read came after every op pushed before the request was committed.
    ///
    /// The packet ids of the rows read are recorded now, in the commit that applies the read
    /// (the reservation round returned, for [`Session::reservations_committed_by`]): they
    /// reach the head of the window 3/4 of a window later, by when that commit is done, so
    /// a drain sends without waiting for a commit (see `queue.rs`, `RESERVE_AHEAD`).
    pub fn refilled(
        &mut self,
        r: Refill,
        waited: bool,
        rows: Result<Vec<(u64, Option<DeliveryRecord>)>>,
        ops: &mut Vec<Op>,
    ) -> Option<u64> {
        let online = self.online();
        // Made by `refill_request`, which this answers.
        let dur = self.durable.as_deref_mut()?;
        let b = &mut dur.backlog;
        b.reading = false;
        if r.from != b.next || !online {
            return None;
        }
        if r.must_wait {
            b.unreserved = false;
        }
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(client_id = %self.client_id, error = %e, "cannot read the session's queue from disk");
                return None;
            }
        };
        // `ahead`: deliveries still to send before these; their ids' commit has that long.
        tracing::debug!(client_id = %self.client_id, ahead = self.queue.len(), rows = rows.len(),
            "backlog read applied");
        let exhausted = rows.len() < r.max;
        let mut last = None;
        for (seq, rec) in rows {
            last = Some(seq);
            b.count = b.count.saturating_sub(1);
            while b.later.front().is_some_and(|d| d.seq < seq) {
                if let Some(d) = b.later.pop_front() {
                    self.queue.push_back(d);
                }
            }
            match rec {
                Some(rec) => self.queue.push_back(Delivery::restore(seq, rec)),
                // Unreadable (logged by the read): dropped, its weight unknown.
                None => ops.push(Op::Dequeue {
                    client: self.client_id.clone(),
                    seq,
                    weight: 0,
                }),
            }
        }
        if let Some(last) = last {
            b.next = last + 1;
        }
        if waited && exhausted && self.next_seq == r.until && b.count > 0 {
            tracing::warn!(client_id = %self.client_id, missing = b.count,
                "fewer messages on disk than counted for this session");
            b.count = 0;
        }
        let next = b.next;
        b.sent.retain_from(next);
        if b.count == 0 {
            self.queue.append(&mut b.later);
            b.sent.clear();
        }
        let round = self.record_ids_ahead(&mut None, ops);
        self.notify();
        round
    }

    /// Gives the window of a session going offline back to disk: its stored deliveries join
    /// the backlog (sent ones keep their packet ids reserved), unstored ones stay in memory.
    /// Ids recorded ahead for deliveries never sent are forgotten ([`Op::Unreserve`]): an
    /// offline session keeps in memory only the ids of what its client may have received (at
    /// most its in-flight window, not the 8,192 recorded ahead), and those deliveries go out
    /// later with fresh ids and without DUP.
    pub(super) fn evict_window(&mut self, ops: &mut Vec<Op>) {
        if !self.queue.iter().any(|d| d.persisted()) {
            // Nothing goes to disk: the window stays as it is.
            return;
        }
        let b = &mut Durable::of(&mut self.durable).backlog;
        b.read_size = 0;
        let mut kept = VecDeque::new();
        let mut first = None;
        for d in self.queue.take_all() {
            if !d.persisted() {
                kept.push_back(d);
                continue;
            }
            first.get_or_insert(d.seq);
            match d.state {
                OutState::Sent(p) | OutState::Released(p) => b.sent.push(d.seq, p.value()),
                OutState::Reserved(..) => {
                    ops.push(Op::Unreserve {
                        client: self.client_id.clone(),
                        seq: d.seq,
                    });
                    b.unreserved = true;
                }
                OutState::Unsent => {}
            }
            b.count += 1;
        }
        let Some(first) = first else {
            self.queue = kept.into();
            return;
        };
        // Requeued in-flight deliveries sit first and are the oldest: `first` is the lowest.
        b.next = first;
        kept.append(&mut b.later);
        kept.make_contiguous().sort_by_key(|d| d.seq);
        b.later = kept;
    }
}
