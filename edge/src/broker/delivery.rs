//! Messages on their way out, as a connection's writer and reader see them: what to send next,
//! the client's acknowledgements (both directions of QoS 1/2), and publisher flow control. The
//! queue and in-flight rules themselves are `Session` methods; these entry points only find
//! the session (ignoring a connection that was taken over) and commit what it changed.
//!
//! A drain must not wait for commits: the packet ids of a session's deliveries are recorded
//! well ahead of their send (`session/queue.rs`), and the ticket of each reservation round is
//! named under the lock that pushed it. [`DrainWaits`] counts the sends and reads that did
//! wait (logged at debug), so that tests and a profile can tell.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_listener::Event;
use mqtt_proto::{Pid, QosPid};

use super::Broker;
use crate::message::{now_ms, Message};
use crate::session::{Mark, Refill, TakeWait};
use crate::storage::Ticket;

/// How often delivering had to wait for a commit still under way: a batch of deliveries whose
/// packet ids were not yet on disk when taken (`take`), a read of a backlog that first waited
/// for the writer (`refill`). In a steady drain both stay near zero (the first batch of a
/// connection waits for the commit of its ids).
#[derive(Debug, Default)]
pub struct DrainWaits {
    take: AtomicU64,
    refill: AtomicU64,
}

impl DrainWaits {
    /// (sends, reads) that waited for a commit so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.take.load(Ordering::Relaxed),
            self.refill.load(Ordering::Relaxed),
        )
    }
}

/// Why a publisher should pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// This online subscriber's queue passed a high-water mark (`session/flow.rs`).
    Subscriber(Arc<str>, Mark),
    /// The broker's memory passed half of `limits.max_memory`.
    Memory,
}

/// Something that cannot keep up, for the publisher to wait on: `drained` fires when it has
/// caught up.
#[derive(Debug, Clone)]
pub struct Congestion {
    pub cause: Cause,
    pub drained: Arc<Event>,
}

/// One PUBLISH or PUBREL the connection should send now.
#[derive(Debug)]
pub enum Outgoing {
    Publish {
        msg: Arc<Message>,
        qos_pid: QosPid,
        retain: bool,
        dup: bool,
        sub_ids: Vec<u32>,
    },
    Pubrel(Pid),
}

impl Broker {
    /// Takes up to `max` deliveries (within the inflight limit) for connection `conn_id` to
    /// send now. The ticket covers the packet ids recorded for them: wait for it before
    /// sending, so that after a crash a redelivery carries DUP and the same packet id
    /// [MQTT-4.3.3-5].
    ///
    /// When the session's window runs low, the next part of its queue is read from disk in
    /// the background ([`Broker::refill`]); the connection is woken when it is in.
    pub async fn take_outgoing(
        self: &Arc<Self>,
        client: &Arc<str>,
        conn_id: u64,
        max: usize,
    ) -> (Vec<Outgoing>, Option<Ticket>) {
        let now = now_ms();
        let limits = self.queue_limits();
        let refill_max = self.memory.refill_size();
        let ((out, refill, wait, earlier), ticket) = self
            .commit_then(
                |st, ops| match st.sessions.get_mut(client) {
                    Some(s) if s.is_attached_to(conn_id) => {
                        let out = s.take_outgoing(max, now, limits, ops);
                        // The commit of the ids recorded ahead that are sent now, or, while it
                        // is not known, everything pushed before this round.
                        let w = s.take_wait();
                        let earlier = match w.reserved_ids {
                            true => w.reserved_ticket.or_else(|| self.store.latest_ticket()),
                            false => None,
                        };
                        let refill = s.refill_request(refill_max).map(|r| (s.epoch(), r));
                        (out, refill, w, earlier)
                    }
                    _ => (Vec::new(), None, TakeWait::default(), None),
                },
                |st, (_, _, wait, _), ticket| {
                    if let Some(s) = st.sessions.get_mut(client).filter(|_| wait.reserved_now) {
                        s.reservations_committed_by(wait.reserved_round, ticket);
                    }
                },
            )
            .await;
        if let Some((epoch, r)) = refill {
            self.refill(client.clone(), epoch, r);
        }
        self.memory.notify_if_relieved();
        // Ids assigned now must be on disk before sending; ids recorded ahead were pushed in an
        // earlier round, whose commit is normally done by now: no fsync to wait for.
        let wait_for = match (wait.fresh_ids, wait.reserved_ids) {
            (true, _) => ticket,
            (false, true) => earlier,
            (false, false) => None,
        };
        if let Some(t) = wait_for.filter(|t| !self.store.reached(*t)) {
            self.drain_waits.take.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client_id = %client, fresh_ids = wait.fresh_ids, ticket = ?t,
                deliveries = out.len(), "deliveries wait for the commit of their packet ids");
        }
        (out, wait_for)
    }

    /// Reads the next part of a session's queue from disk on a blocking thread and hands it to
    /// the session under the lock. What is committed is read at once; only when that is
    /// nothing (or the read must see recorded packet ids, `Refill::must_wait`) does it first
    /// wait until every op pushed so far is committed. Only one read per session runs at a
    /// time (`refill_request`).
    fn refill(self: &Arc<Self>, client: Arc<str>, epoch: u64, r: Refill) {
        let broker = self.clone();
        let pushed = self.store.latest_ticket();
        smol::unblock(move || {
            let read = || broker.store.read_queue(&client, r.from, r.until, r.max);
            let mut rows = if r.must_wait { Ok(Vec::new()) } else { read() };
            let mut waited = false;
            if rows.as_ref().is_ok_and(|v| v.is_empty()) {
                let committed = match pushed {
                    Some(t) => {
                        if !broker.store.reached(t) {
                            broker.drain_waits.refill.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(client_id = %client, must_wait = r.must_wait,
                                "a read of the backlog waits for the writer");
                        }
                        smol::block_on(broker.store.wait(t))
                    }
                    None => Ok(()),
                };
                rows = committed.and_then(|()| read());
                waited = true;
            }
            // The ids recorded for the rows are named by this commit's ticket (`refilled`).
            smol::block_on(broker.commit_then(
                |st, ops| {
                    let s = st
                        .sessions
                        .get_mut(&client)
                        .filter(|s| s.epoch() == epoch)?;
                    s.refilled(r, waited, rows, ops)
                },
                |st, round, ticket| {
                    let s = st.sessions.get_mut(&client).filter(|s| s.epoch() == epoch);
                    if let (Some(s), Some(round)) = (s, *round) {
                        s.reservations_committed_by(round, ticket);
                    }
                },
            ));
        })
        .detach();
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) from the client: the delivery is complete.
    /// Also used to drop a delivery the client cannot receive (too large for it).
    pub async fn complete(&self, client: &Arc<str>, pid: Pid) -> bool {
        self.complete_all(client, &[pid]).await == 1
    }

    /// The PUBACKs of one socket read, in the order read: one storage batch and one pass
    /// under the lock for all of them (a draining client acknowledges tens per read). Returns
    /// how many of them named a delivery in flight.
    pub async fn complete_all(&self, client: &Arc<str>, pids: &[Pid]) -> usize {
        let done = self
            .commit(|st, ops| match st.sessions.get_mut(client) {
                Some(s) => pids.iter().filter(|p| s.complete(**p, ops)).count(),
                None => 0,
            })
            .await
            .0;
        self.memory.notify_if_relieved();
        done
    }

    /// PUBREC from the client: the QoS 2 delivery moves to its release phase.
    /// Returns false when no such delivery is in flight. A PUBREC with an error reason ends
    /// the delivery instead (`failed`).
    pub async fn received(&self, client: &Arc<str>, pid: Pid, failed: bool) -> bool {
        if failed {
            return self.complete(client, pid).await;
        }
        self.commit(|st, ops| {
            st.sessions
                .get_mut(client)
                .is_some_and(|s| s.mark_received(pid, ops))
        })
        .await
        .0
    }

    /// PUBREL from the client for an incoming QoS 2 message. Returns whether it was known,
    /// and the ticket to wait for before PUBCOMP.
    pub async fn release(&self, client: &Arc<str>, pid: Pid) -> (bool, Option<Ticket>) {
        self.commit(|st, ops| {
            st.sessions
                .get_mut(client)
                .is_some_and(|s| s.release_qos2(pid, ops))
        })
        .await
    }

    /// Whether the cause of a congestion still holds: a session over the mark it paused on and
    /// not stalled, or
    /// memory over 3/8 of its bound (publishers re-check after registering for `drained`, so
    /// that no wake-up is lost).
    pub fn congested(&self, c: &Congestion) -> bool {
        match &c.cause {
            Cause::Subscriber(client, mark) => {
                let limits = self.queue_limits();
                self.lock()
                    .sessions
                    .get(client)
                    .is_some_and(|s| s.over(*mark, limits, now_ms()))
            }
            Cause::Memory => !self.memory.relieved(),
        }
    }

    /// Memory over half its bound: the publisher of the message just routed waits.
    pub(super) fn memory_congestion(&self) -> Option<Congestion> {
        self.memory.pressed().then(|| Congestion {
            cause: Cause::Memory,
            drained: self.memory.relieved_event(),
        })
    }
}
