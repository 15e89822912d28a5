//! The outgoing side of a session: the bounded queue, the in-flight window (at most
//! `inflight_limit` QoS 1/2 deliveries sent and unacknowledged), packet ids, and the water
//! marks publishers pause on. A delivery keeps its packet id from first send to completion.
//!
//! Memory is a window: an online session holds at most [`WINDOW`] waiting deliveries (plus
//! its in-flight ones), an offline one none of its stored deliveries. The rest is the
//! *backlog*: stored deliveries on disk only, all with `seq >= backlog.next`, read back in
//! order ([`Session::refill_request`] / [`Session::refilled`]) as the client drains the
//! window. Deliveries that are never stored (QoS 0, non-persistent sessions) arriving behind
//! a backlog wait in `backlog.later` and are merged back by `seq`, so order is kept. The
//! backlog and the ids recorded ahead live in a box ([`Durable`]) that only a session with
//! stored deliveries allocates. Every stored delivery of the window has its packet id recorded
//! ahead of its send (`RESERVE_AHEAD`), so a drain sends without waiting for the disk.

use std::collections::VecDeque;
use std::sync::Arc;

use mqtt_proto::{Pid, QosPid};

use super::backlog::Backlog;
use super::sent_ids::SentIds;
use super::{Mark, QueueLimits, Session};
use crate::broker::Outgoing;
use crate::message::Message;
use crate::storage::{DeliveryRecord, Op};

/// Most packet ids recorded ahead of sending (see `OutState::Reserved`): every stored
/// delivery of the window. A send must not wait for the commit of its id, and an id pushed
/// while a commit is under way is durable after that commit and its own (two fsyncs plus the
/// work of everything queued meanwhile: 1-8 ms on a busy disk): at 300k-500k msg/s an id must
/// be recorded thousands of deliveries before it is sent. With four in-flight windows (256)
/// ahead, a drain caught up with its reservations every window and waited for a commit (0.5x
/// mosquitto). The ids of a read of the backlog are recorded in the commit that applies it
/// (`Session::refilled`), which is asked for once the window is under 3/4 full: 6,144
/// deliveries (small messages) before they reach the head, less the time the read takes
/// (~150 sends, `backlog read applied` at debug level). A window of 2,048 (ids ~1,400 ahead)
/// still waited ~100 times per 100k on a disk whose fsync took 3-4 ms; 8,192: once. Waits
/// are counted in `robustmq_edge_delivery_commit_waits_total`. After a crash the ids
/// recorded but never sent are sent with DUP, which only says "might have been sent before",
/// and stay reserved (`Backlog::sent`, runs of consecutive ids: usually one) until the client
/// drains past them; a session going offline while running forgets them instead
/// (`Session::evict_window`).
const RESERVE_AHEAD: usize = WINDOW;

/// What the connection must wait for before sending what `take_outgoing` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TakeWait {
    /// Packet ids were assigned in this call: wait for its own commit.
    pub fresh_ids: bool,
    /// Deliveries whose ids were recorded ahead were taken: wait for the commit of those ids,
    /// `reserved_ticket` (`None` while not known: then for everything pushed before).
    pub reserved_ids: bool,
    pub reserved_ticket: Option<crate::storage::Ticket>,
    /// Ids were recorded ahead in this call, as reservation round `reserved_round`
    /// ([`Session::reservations_committed_by`] names the ticket covering them once known).
    pub reserved_now: bool,
    pub reserved_round: u64,
}

/// Most waiting deliveries an online session keeps in memory; more wait on disk. Fewer when
/// its messages are large: the window holds `WINDOW_BYTES` of them by `Message::weight`, but
/// never fewer than `MIN_WINDOW` ([`Session::window_cap`]). The window also bounds how far
/// ahead packet ids are recorded (see `RESERVE_AHEAD`): 8,192 64-byte deliveries are ~7 MB
/// of RSS, held only while a backlog drains (`limits.max_memory` shrinks the reads).
pub const WINDOW: usize = 8192;
/// The window's bound in `Message::weight` bytes (what large messages are held to).
pub(super) const WINDOW_BYTES: usize = 1 << 20;
/// The window of a session with large messages (the window of every session before the drain
/// change): 4 KB messages get 256, as before.
pub(super) const MIN_WINDOW: usize = 256;

impl Session {
    /// How many waiting deliveries this session keeps in memory: `WINDOW_BYTES` at the average
    /// weight of its waiting deliveries, within `MIN_WINDOW..=WINDOW`.
    pub(super) fn window_cap(&self) -> usize {
        let avg = self.queued_bytes / self.queued_len().max(1) as u64;
        // At most WINDOW_BYTES, so it fits a usize.
        ((WINDOW_BYTES as u64 / avg.max(1)) as usize).clamp(MIN_WINDOW, WINDOW)
    }
}

/// The parts of the outgoing side that only a session with stored deliveries uses: the backlog
/// and the packet ids recorded ahead with the commits holding them. One box, allocated the
/// first time one of them is set ([`Durable::of`]); a session without reads [`NO_DURABLE`].
#[derive(Debug, Default)]
pub(super) struct Durable {
    pub(super) backlog: Backlog,
    /// What the last `take_outgoing` asks the connection to wait for.
    take_wait: TakeWait,
    /// Per round of ids recorded ahead, the commit holding them (`None`: not known yet).
    reserve_tickets: VecDeque<(u64, Option<crate::storage::Ticket>)>,
    /// Counts the rounds of `take_outgoing` that recorded ids ahead.
    reserved_round: u64,
}

/// What a session without a [`Durable`] box reads: no backlog, nothing recorded ahead.
static NO_DURABLE: Durable = Durable {
    backlog: Backlog {
        count: 0,
        next: 0,
        later: VecDeque::new(),
        sent: SentIds::new(),
        unreserved: false,
        reading: false,
        read_size: 0,
    },
    take_wait: TakeWait {
        fresh_ids: false,
        reserved_ids: false,
        reserved_ticket: None,
        reserved_now: false,
        reserved_round: 0,
    },
    reserve_tickets: VecDeque::new(),
    reserved_round: 0,
};

impl Durable {
    /// The box in `slot`, allocated now if there is none yet. (A function of the field, not a
    /// method of the session: the session's other fields stay borrowable alongside.)
    pub(super) fn of(slot: &mut Option<Box<Durable>>) -> &mut Durable {
        slot.get_or_insert_with(Default::default)
    }
}

/// Where an outgoing delivery stands; QoS 1/2 deliveries carry their packet id once sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutState {
    Unsent,
    /// Not sent yet, but its packet id is recorded ahead (a crash makes it a redelivery with
    /// DUP, which means "might have been sent"), so that sending it later waits for no commit.
    /// With the low 16 bits of its reservation round ([`Session::full_round`] gives the
    /// round): 6 bytes for the state where a `u64` made 16, in every waiting delivery.
    Reserved(Pid, u16),
    /// PUBLISH sent (QoS 1 waits for PUBACK, QoS 2 for PUBREC).
    Sent(Pid),
    /// QoS 2: PUBREL sent, waiting for PUBCOMP.
    Released(Pid),
}

impl OutState {
    pub(super) fn pid(self) -> Option<Pid> {
        match self {
            OutState::Unsent => None,
            OutState::Reserved(p, _) | OutState::Sent(p) | OutState::Released(p) => Some(p),
        }
    }
}

/// A delivery's subscription identifiers (MQTT 5): one pointer, and no allocation for the
/// usual none. Every waiting delivery has one (the window holds up to 8,192 per session, a
/// slow subscriber's queue up to `limits.max_queued_messages`): as a `Vec` it took 24 bytes,
/// and a delivery 64 instead of 48.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[expect(
    clippy::box_collection,
    reason = "the box is the point: 8 bytes in every delivery where a Vec takes 24"
)]
pub(super) struct SubIds(Option<Box<Vec<u32>>>);

impl From<Vec<u32>> for SubIds {
    fn from(ids: Vec<u32>) -> SubIds {
        SubIds((!ids.is_empty()).then(|| Box::new(ids)))
    }
}

impl SubIds {
    pub(super) fn to_vec(&self) -> Vec<u32> {
        self.0.as_deref().cloned().unwrap_or_default()
    }

    pub(super) fn into_vec(self) -> Vec<u32> {
        self.0.map(|ids| *ids).unwrap_or_default()
    }
}

/// One message waiting for (or in flight to) this session's client: 32 bytes, in every
/// waiting delivery (up to a window per draining session, a queue per slow subscriber):
/// the state's 6 bytes, the QoS and [`Marks`] fill the fourth word
/// (`a_waiting_delivery_takes_32_bytes_and_keeps_its_subscription_ids`).
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub(super) seq: u64,
    pub(super) msg: Arc<Message>,
    pub(super) qos: u8,
    pub(super) marks: Marks,
    pub(super) sub_ids: SubIds,
    pub(super) state: OutState,
}

/// A delivery's flags in one byte: its retain flag, and whether it has a `session_queue`
/// record under its `seq` (see the module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Marks(u8);

impl Marks {
    const RETAIN: u8 = 1;
    const PERSISTED: u8 = 2;

    pub(super) fn new(retain: bool, persisted: bool) -> Marks {
        let mut m = 0;
        if retain {
            m |= Self::RETAIN;
        }
        if persisted {
            m |= Self::PERSISTED;
        }
        Marks(m)
    }
}

impl Delivery {
    /// The retain flag it is sent with.
    pub(super) fn retain(&self) -> bool {
        self.marks.0 & Marks::RETAIN != 0
    }

    /// Has a `session_queue` record under `seq`.
    pub(super) fn persisted(&self) -> bool {
        self.marks.0 & Marks::PERSISTED != 0
    }
}

impl Session {
    /// The backlog and the ids recorded ahead ([`NO_DURABLE`] while there is no box).
    pub(super) fn durable(&self) -> &Durable {
        self.durable.as_deref().unwrap_or(&NO_DURABLE)
    }

    /// The reservation round whose low 16 bits are `low` ([`OutState::Reserved`]).
    pub(super) fn full_round(&self, low: u16) -> u64 {
        round_from_low(self.durable().reserved_round, low)
    }
}

impl Delivery {
    /// A delivery as stored (packet id 0 = not sent yet).
    pub(super) fn restore(seq: u64, d: DeliveryRecord) -> Delivery {
        let state = match (Pid::try_from(d.pid), d.released) {
            (Err(_), _) => OutState::Unsent,
            (Ok(p), false) => OutState::Sent(p),
            (Ok(p), true) => OutState::Released(p),
        };
        Delivery {
            seq,
            msg: Arc::new(d.msg),
            qos: d.qos,
            marks: Marks::new(d.retain, true),
            sub_ids: d.sub_ids.into(),
            state,
        }
    }
}

/// The packet ids in use, one bit each (8 KB, zeroed by the allocator): built once per round
/// that assigns ids, with up to a window of reserved ids in it (a hash set of a window's ids
/// cost a hash per id and rehashes: about a tenth of the backlog read thread's samples).
pub(super) struct PidsInUse(Box<[u64]>);

impl Default for PidsInUse {
    fn default() -> Self {
        PidsInUse(vec![0; 1 << 10].into_boxed_slice())
    }
}

impl PidsInUse {
    fn insert(&mut self, p: u16) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }

    fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
}

fn qos_pid(qos: u8, pid: Pid) -> QosPid {
    if qos == 1 {
        QosPid::Level1(pid)
    } else {
        QosPid::Level2(pid)
    }
}

impl Session {
    /// Queues one delivery. QoS 0 is not queued for an offline session; past the queue bounds
    /// the message is dropped (counted, logged at powers of two). Returns the water mark the
    /// publisher should pause on when the session is online and over one (`flow.rs`; the
    /// queue's also when it dropped; none while the subscriber is stalled).
    pub fn enqueue(
        &mut self,
        msg: Arc<Message>,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
        limits: QueueLimits,
        ops: &mut Vec<Op>,
    ) -> Option<Mark> {
        if qos == 0 && !self.online() {
            return None;
        }
        let weight = msg.weight() as u64;
        let msg_ms = msg.received_ms;
        if self.queued_len() >= limits.max_messages || self.queued_bytes + weight > limits.max_bytes
        {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(client_id = %self.client_id, dropped = self.dropped, topic = %msg.topic,
                    "session queue full (limits.max_queued_messages / max_queued_bytes): message dropped");
            }
            return self.full_mark(limits, msg_ms);
        }
        let persisted = qos > 0 && self.persistent();
        if !persisted && limits.memory_full {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(client_id = %self.client_id, dropped = self.dropped, topic = %msg.topic,
                    "memory bound reached (limits.max_memory): message for this session dropped");
            }
            return self.full_mark(limits, msg_ms);
        }
        if self.queued_len() == 0 {
            // Waiting starts now: a subscriber idle for long is not stalled by its first
            // delivery (forward only: a retained message or a will carries an older time).
            self.progressed(msg_ms);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if persisted {
            ops.push(Op::Enqueue {
                client: self.client_id.clone(),
                seq,
                msg: msg.clone(),
                qos,
                retain,
                sub_ids: sub_ids.clone(),
            });
        }
        self.queued_bytes += weight;
        if persisted
            && (!self.online()
                || self.durable().backlog.count > 0
                || self.queue.len() >= self.window_cap()
                || limits.memory_full)
        {
            // On disk only: read back when the window has room.
            let b = &mut Durable::of(&mut self.durable).backlog;
            if b.count == 0 {
                b.next = seq;
            }
            b.count += 1;
        } else {
            if qos == 0 {
                self.waiting_qos0 = self.waiting_qos0.saturating_add(1);
            }
            let d = Delivery {
                seq,
                msg,
                qos,
                marks: Marks::new(retain, persisted),
                sub_ids: sub_ids.into(),
                state: OutState::Unsent,
            };
            match self.durable.as_mut().filter(|x| x.backlog.count > 0) {
                Some(x) => x.backlog.later.push_back(d),
                None => self.queue.push_back(d),
            }
        }
        self.notify();
        self.pressed(qos, limits, msg_ms)
    }

    /// Deliveries waiting (in memory or on disk), not counting those in flight.
    pub fn queued_len(&self) -> usize {
        let b = &self.durable().backlog;
        self.queue.len() + b.count + b.later.len()
    }

    /// Waiting deliveries held in memory.
    pub fn window_len(&self) -> usize {
        self.queue.len() + self.durable().backlog.later.len()
    }

    /// Takes up to `max` deliveries to send now, in queue order, stopping at a QoS 1/2 one when
    /// the in-flight window is full. Unsent messages expired at `now_ms` are dropped; a first
    /// send gets a packet id (recorded, so a redelivery after a crash carries the same id); a
    /// released QoS 2 delivery is resent as PUBREL. Publishers waiting on this session are
    /// woken once the queue is back under its low-water mark.
    pub fn take_outgoing(
        &mut self,
        max: usize,
        now_ms: u64,
        limits: QueueLimits,
        ops: &mut Vec<Op>,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let mut wait = TakeWait::default();
        let mut used = None;
        let mut newest_round = 0;
        while out.len() < max {
            let inflight_full = self.inflight.len() >= self.inflight_limit as usize;
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos > 0 && inflight_full {
                break;
            }
            let Some(mut d) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(d.msg.weight() as u64);
            if d.qos == 0 {
                self.waiting_qos0 = self.waiting_qos0.saturating_sub(1);
            }
            // Expired messages are dropped unless already sent once (the receiver may hold it).
            let unsent = matches!(d.state, OutState::Unsent | OutState::Reserved(..));
            if unsent && d.msg.is_expired(now_ms) {
                if d.persisted() {
                    ops.push(Op::Dequeue {
                        client: self.client_id.clone(),
                        seq: d.seq,
                        weight: d.msg.weight() as u32,
                    });
                }
                continue;
            }
            if d.qos == 0 {
                let retain = d.retain();
                out.push(Outgoing::Publish {
                    msg: d.msg,
                    qos_pid: QosPid::Level0,
                    retain,
                    dup: false,
                    sub_ids: d.sub_ids.into_vec(),
                });
                continue;
            }
            match d.state {
                OutState::Unsent => {
                    let pid = self.alloc_pid(&mut used);
                    wait.fresh_ids |= d.persisted();
                    d.state = OutState::Sent(pid);
                    if d.persisted() {
                        ops.push(Op::MarkSent {
                            client: self.client_id.clone(),
                            seq: d.seq,
                            pid,
                            released: false,
                        });
                    }
                    out.push(d.publish(pid, false));
                }
                OutState::Reserved(pid, low) => {
                    wait.reserved_ids = true;
                    newest_round = newest_round.max(self.full_round(low));
                    d.state = OutState::Sent(pid);
                    out.push(d.publish(pid, false));
                }
                // Sent before (on an earlier connection): again, with DUP and the same id.
                OutState::Sent(pid) => out.push(d.publish(pid, true)),
                OutState::Released(pid) => out.push(Outgoing::Pubrel(pid)),
            }
            self.inflight.push_back(d);
        }
        debug_assert!(self.waiting_qos0 as usize <= self.window_len());
        if !out.is_empty() {
            self.progressed(now_ms);
            self.notify_if_drained(limits);
        }
        if wait.reserved_ids {
            wait.reserved_ticket = self
                .durable()
                .reserve_tickets
                .iter()
                .find(|r| r.0 == newest_round)
                .and_then(|r| r.1);
        }
        wait.reserved_now = self.reserve_ahead(&mut used, ops);
        wait.reserved_round = self.durable().reserved_round;
        // Rounds older than the oldest reservation still waiting are not asked for any more.
        // Reservations sit in the queue's prefix (after requeued deliveries, before the first
        // unsent one, see `reserve_ahead`): only that prefix is looked at, never the whole
        // queue (a scan per round made draining a long in-memory queue quadratic).
        let tickets = self.durable.as_deref_mut();
        if let Some(dur) = tickets.filter(|d| !d.reserve_tickets.is_empty()) {
            let oldest = self
                .queue
                .iter()
                .take_while(|d| d.state != OutState::Unsent)
                .find_map(|d| match d.state {
                    OutState::Reserved(_, low) => Some(low),
                    _ => None,
                });
            let current = dur.reserved_round;
            let oldest = oldest.map_or(u64::MAX, |low| round_from_low(current, low));
            dur.reserve_tickets.retain(|r| r.0 >= oldest);
        }
        // A session that records no ids needs no box for the default.
        if wait != TakeWait::default() || self.durable.is_some() {
            Durable::of(&mut self.durable).take_wait = wait;
        }
        out
    }

    /// What the last `take_outgoing` asks the connection to wait for.
    pub fn take_wait(&self) -> TakeWait {
        self.durable().take_wait
    }

    /// The ids recorded ahead in reservation round `round` are in the commit of `ticket`.
    pub fn reservations_committed_by(
        &mut self,
        round: u64,
        ticket: Option<crate::storage::Ticket>,
    ) {
        let tickets = self.durable.as_mut().map(|d| &mut d.reserve_tickets);
        if let Some(r) = tickets.and_then(|t| t.iter_mut().find(|r| r.0 == round)) {
            r.1 = ticket;
        }
    }

    /// Records packet ids ahead for the next stored QoS 1/2 deliveries at the head of the
    /// queue (up to `RESERVE_AHEAD`, topped up once half of them are sent), so that the next
    /// rounds send them without waiting for a commit. Whether any was made.
    fn reserve_ahead(&mut self, used: &mut Option<PidsInUse>, ops: &mut Vec<Op>) -> bool {
        // The reserved deliveries follow the requeued ones (sent before) at the head of the
        // queue. While at least half of `RESERVE_AHEAD` are left, nothing is done: ids are
        // recorded a batch at a time, and a round costs no scan of the reserved ones.
        let start = self
            .queue
            .iter()
            .take_while(|d| matches!(d.state, OutState::Sent(_) | OutState::Released(_)))
            .count();
        let half = self.queue.get(start + RESERVE_AHEAD.div_ceil(2) - 1);
        if half.is_some_and(|d| matches!(d.state, OutState::Reserved(..))) {
            return false;
        }
        self.record_ids_ahead(used, ops).is_some()
    }

    /// Records ids for the stored deliveries of the window that have none, up to
    /// `RESERVE_AHEAD` recorded ahead, as one new reservation round (returned, `None` when
    /// none was needed). They stay a prefix of the queue (after requeued ones): reservation
    /// stops at the first delivery that is not stored. The caller names the commit holding the
    /// ops with [`Session::reservations_committed_by`].
    pub(super) fn record_ids_ahead(
        &mut self,
        used: &mut Option<PidsInUse>,
        ops: &mut Vec<Op>,
    ) -> Option<u64> {
        let mut have = 0;
        let mut made = false;
        let round = self.durable().reserved_round + 1;
        for i in 0..self.queue.len() {
            if have >= RESERVE_AHEAD {
                break;
            }
            let d = &self.queue[i];
            match d.state {
                OutState::Sent(_) | OutState::Released(_) => continue,
                OutState::Reserved(..) => {
                    have += 1;
                    continue;
                }
                OutState::Unsent if !d.persisted() || d.qos == 0 => break,
                OutState::Unsent => {}
            }
            let pid = self.alloc_pid(used);
            let Some(d) = self.queue.get_mut(i) else {
                break;
            };
            // The low half of the round (see `OutState::Reserved`).
            d.state = OutState::Reserved(pid, round as u16);
            ops.push(Op::MarkSent {
                client: self.client_id.clone(),
                seq: d.seq,
                pid,
                released: false,
            });
            have += 1;
            made = true;
        }
        if !made {
            return None;
        }
        let dur = Durable::of(&mut self.durable);
        dur.reserved_round = round;
        dur.reserve_tickets.push_back((round, None));
        Some(round)
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the in-flight delivery with `pid` is complete and
    /// its slot free. Also used to drop a delivery the client cannot receive. `false` when no
    /// delivery with that id is in flight.
    pub fn complete(&mut self, pid: Pid, ops: &mut Vec<Op>) -> bool {
        let Some(i) = self
            .inflight
            .iter()
            .position(|d| d.state.pid() == Some(pid))
        else {
            return false;
        };
        if let Some(d) = self.inflight.remove(i) {
            if d.persisted() {
                ops.push(Op::Dequeue {
                    client: self.client_id.clone(),
                    seq: d.seq,
                    weight: d.msg.weight() as u32,
                });
            }
        }
        self.notify();
        true
    }

    /// PUBREC: the QoS 2 delivery with `pid` moves to its release phase (PUBREL, then wait
    /// for PUBCOMP). `false` when no delivery with that id is in flight.
    pub fn mark_received(&mut self, pid: Pid, ops: &mut Vec<Op>) -> bool {
        let Some(d) = self
            .inflight
            .iter_mut()
            .find(|d| d.state.pid() == Some(pid))
        else {
            return false;
        };
        d.state = OutState::Released(pid);
        if d.persisted() {
            ops.push(Op::MarkSent {
                client: self.client_id.clone(),
                seq: d.seq,
                pid,
                released: true,
            });
        }
        true
    }

    /// A packet id not used by any in-flight delivery, nor by a requeued one waiting for
    /// redelivery, in memory or in the backlog. Requeued deliveries keep their ids and sit at
    /// the head of the queue (see `requeue_inflight`), so only that head is scanned:
    /// O(in-flight), not O(queue).
    /// `used` is built on the first call of a round and kept up to date by the following ones.
    fn alloc_pid(&mut self, used: &mut Option<PidsInUse>) -> Pid {
        let used = used.get_or_insert_with(|| {
            let mut set = PidsInUse::default();
            let ids = self
                .inflight
                .iter()
                .chain(self.queue.iter().take_while(|d| d.state.pid().is_some()))
                .filter_map(|d| d.state.pid().map(Pid::value))
                .chain(self.durable().backlog.sent.pids());
            for p in ids {
                set.insert(p);
            }
            set
        });
        // `None` (all 65,535 ids in use) cannot happen while in-flight is bounded far below it.
        let pid = self.pids.next(|p| used.contains(p)).unwrap_or_default();
        used.insert(pid.value());
        pid
    }

    /// Puts in-flight deliveries back at the head of the queue, in order, so the next
    /// connection resends them first (with DUP, same packet id) [MQTT-4.4.0-1].
    pub(super) fn requeue_inflight(&mut self) {
        while let Some(d) = self.inflight.pop_back() {
            self.queued_bytes += d.msg.weight() as u64;
            self.queue.push_front(d);
        }
    }
}

/// The round at or before `current` (the session's last reservation round) whose low 16 bits
/// are `low`: exact while the rounds still waiting are fewer than 2^16 behind `current` (they
/// are at most one per reserved delivery, and at most [`RESERVE_AHEAD`] deliveries are).
pub(super) fn round_from_low(current: u64, low: u16) -> u64 {
    current.wrapping_sub(u64::from((current as u16).wrapping_sub(low)))
}

const _: () = assert!(
    RESERVE_AHEAD < 1 << 16,
    "rounds waiting fit the low 16 bits"
);

impl Delivery {
    fn publish(&self, pid: Pid, dup: bool) -> Outgoing {
        Outgoing::Publish {
            msg: self.msg.clone(),
            qos_pid: qos_pid(self.qos, pid),
            retain: self.retain(),
            dup,
            sub_ids: self.sub_ids.to_vec(),
        }
    }
}
