//! One client's session: subscriptions, the bounded queue of messages waiting for it, and the
//! QoS 1/2 state in both directions. It outlives connections when its expiry interval is > 0.
//! The broker decides *which* session a change goes to; the rules of one session live here, as
//! methods over private fields, and every durable change they make is pushed as an [`Op`].
//!
//! Invariants:
//! - A delivery of a persistent session with QoS > 0 has `persisted = true` and a record in
//!   `session_queue` until it is acknowledged (or dropped), under the same `seq`. Only a
//!   bounded window of the queue is in memory; the rest is read back from disk (`queue.rs`).
//! - `stored` is true exactly when a session record is on disk (or queued to be written).
//! - A connection is attached or the session knows when it was cut off, never both (`Link`).

mod backlog; // stored deliveries on disk only: evicted when offline, read up again as the client drains
mod deliveries; // the window's and in-flight deques: one pointer while unused
mod flow; // publisher flow control: water marks and wake-ups
#[cfg(test)]
mod lifecycle_tests;
mod queue; // outgoing deliveries: queue window, in-flight, packet ids recorded ahead, water marks
mod sent_ids; // the reserved packet ids of backlog deliveries, as runs
#[cfg(test)]
mod tests;
mod wakeup; // the connection's wake-up: flag, kick, one waker slot, its chosen departure
#[cfg(test)]
mod window_tests;

pub use flow::{Mark, DEFAULT_STALL_MS, QOS0_PAUSE, QOS0_RESUME};

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use event_listener::Event;
use mqtt_proto::v5::SubscribeReasonCode;
use mqtt_proto::Pid;

use crate::auth::{Access, ClientAcl};
use crate::broker::{ConnectRequest, Departure};
use crate::storage::{LoadedSession, Op, SessionRecord, WillRecord};
use crate::topic::SubOptions;

pub use backlog::Refill;
use deliveries::Deliveries;
use queue::Durable;
pub use queue::{TakeWait, WINDOW};
pub use sent_ids::SentIds;

pub use wakeup::{DepartureSlot, Kick, Wakeup};

/// The live connection attached to a session: its id and its wake-up (deliveries, kicks), one
/// small allocation shared with the connection's task.
#[derive(Debug, Clone)]
pub struct ConnLink {
    pub id: u64,
    pub wakeup: Arc<Wakeup>,
}

impl ConnLink {
    pub fn kick(&self, why: Kick) {
        self.wakeup.kick(why);
    }
}

/// A session's connection, or when the last one was cut off: one or the other, never both
/// (16 bytes where two fields took 24: the session is 192 bytes, a size class of mimalloc's
/// where 200 took 224, BENCHMARKS.md "The allocator"; glibc's chunk is 208 bytes either way).
#[derive(Debug, Clone)]
enum Link {
    Online(ConnLink),
    /// When the last connection was cut off (unix ms, at least 1); `None` before any (a new
    /// session, or one just claimed by a new connection).
    Offline(Option<NonZeroU64>),
}

/// The bounds of one session's queue (`limits.max_queued_messages` / `max_queued_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: u64,
    /// Memory is short (`limits.max_memory`): deliveries that would live in memory only are
    /// refused, stored ones go straight to disk.
    pub memory_full: bool,
    /// `limits.subscriber_stall_ms`: a subscriber that took nothing for this long is stalled
    /// (`flow.rs`).
    pub stall_ms: u64,
}

/// A session's queue as the statistics see it ([`Session::queue_figures`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueFigures {
    pub queued: usize,
    pub queued_bytes: u64,
    pub inflight: usize,
    pub dropped: u64,
}

/// What a new connection finds when it claims an existing session ([`Session::claim`]).
#[derive(Debug)]
pub struct Claim {
    /// The previous connection's will, to publish now.
    pub will_now: Option<WillRecord>,
    /// `false` when the session ends here (clean start, or expired): the caller removes it.
    pub resumable: bool,
}

#[derive(Debug)]
pub struct Session {
    client_id: Arc<str>,
    protocol: u8,
    expiry_secs: u32,
    /// Full filter (with any `$share/group/` prefix) and options, sorted by filter: 16 bytes
    /// and no allocation for a session without subscriptions (a `HashMap` takes 48, a `Vec`
    /// 24), and no hash table per subscriber. A boxed slice, reallocated by each subscribe and
    /// unsubscribe (rare, and at most `limits.max_subscriptions_per_session` entries).
    subs: Box<[(Arc<str>, SubOptions)]>,
    /// Waiting deliveries in memory (the window); requeued ones (already sent, keeping their
    /// packet id) at the head.
    queue: Deliveries,
    /// The backlog (waiting deliveries on disk only, read back into `queue` as it drains) and
    /// the packet ids recorded ahead; boxed, allocated by the first stored delivery that needs
    /// it (a clean session never does): 8 bytes instead of 144 in every session.
    durable: Option<Box<Durable>>,
    /// Bytes (`Message::weight`) of every waiting delivery, in memory or on disk.
    queued_bytes: u64,
    /// Waiting QoS 0 deliveries (all in memory): publishers of them pause at a lower mark
    /// than the queue's (`flow.rs`, [`QOS0_PAUSE`]).
    waiting_qos0: u32,
    /// When (`now_ms`) the client last took deliveries from its queue, or its queue last filled
    /// from empty, or it attached: a subscriber with deliveries waiting and no progress for
    /// `limits.subscriber_stall_ms` pauses no publisher (`flow.rs`).
    progress_ms: u64,
    /// Sent and not yet acknowledged, at most `inflight_limit`, all with QoS > 0.
    inflight: Deliveries,
    /// The will, QoS 2 packet ids received and paused publishers' event: most sessions have
    /// none of them, so one box for the three, allocated by the first one needed and freed
    /// when none is left (8 bytes in every session instead of 24).
    extras: Option<Box<Extras>>,
    pids: edge_mqtt::pid::PidAllocator,
    next_seq: u64,
    link: Link,
    /// The client's Receive Maximum (at most 65,535 packet ids exist anyway).
    inflight_limit: u16,
    dropped: u64,
    /// A session record exists on disk (must be deleted when the session ends).
    stored: bool,
    /// What this session may receive, checked when a message is routed to it (the last
    /// answer is cached inside it when there are rules: [`ClientAcl::check_cached`]).
    read_acl: ClientAcl,
    /// The user name of its last connection (None: anonymous), stored with the session, when
    /// `user_known`: false only for a session stored by a version that did not record it.
    /// (Two fields: the flag packs with the other small ones, `Option<Option<..>>` takes 24.)
    user: Option<Arc<str>>,
    user_known: bool,
    /// Unique per session object: a backlog read started before the session ended (and was
    /// created anew under the same client id) is not applied to the new one.
    /// A u32 (it packs with the small fields): it repeats after 4 billion session objects,
    /// far beyond the life of a backlog read.
    epoch: u32,
    /// Queue rows remain on disk although the session record is gone (resumed without
    /// expiry): ending the session must delete them.
    rows_on_disk: bool,
}

/// What few sessions hold ([`Session::extras`]).
#[derive(Debug, Default)]
struct Extras {
    /// The will and when it is due.
    will: Option<PendingWill>,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    qos2_in: HashSet<Pid>,
    /// Fired when the queue falls back under its low-water mark (publishers wait on it).
    /// Created by the first publisher that has to wait ([`Session::congestion`]); kept from
    /// then on (publishers hold it).
    drained: Option<Arc<Event>>,
    /// The same for publishers paused by the QoS 0 mark ([`QOS0_PAUSE`]): fired when the
    /// waiting QoS 0 deliveries are down to [`QOS0_RESUME`]. Apart from `drained`, so that neither
    /// mark wakes the publishers waiting on the other.
    drained_qos0: Option<Arc<Event>>,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.will.is_none()
            && self.qos2_in.is_empty()
            && self.drained.is_none()
            && self.drained_qos0.is_none()
    }
}

/// A session's will: what its connection left, and once that connection is gone, when it
/// is due (unix ms).
#[derive(Debug)]
struct PendingWill {
    record: WillRecord,
    due_ms: Option<u64>,
}

impl PendingWill {
    fn new(record: WillRecord) -> PendingWill {
        PendingWill {
            record,
            due_ms: None,
        }
    }
}

/// A disconnection time as stored (0, never a real one, is read as 1).
fn cut_off(ms: u64) -> NonZeroU64 {
    NonZeroU64::new(ms).unwrap_or(NonZeroU64::MIN)
}

static EPOCHS: AtomicU32 = AtomicU32::new(1);

impl Session {
    /// The extras, allocated if there are none yet.
    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// Frees the extras once none is left.
    fn trim_extras(&mut self) {
        if self.extras.as_ref().is_some_and(|e| e.is_empty()) {
            self.extras = None;
        }
    }

    fn will(&self) -> Option<&PendingWill> {
        self.extras.as_ref()?.will.as_ref()
    }

    fn take_will(&mut self) -> Option<PendingWill> {
        let w = self.extras.as_mut()?.will.take();
        self.trim_extras();
        w
    }

    fn set_will(&mut self, will: Option<PendingWill>) {
        match will {
            Some(w) => self.extras_mut().will = Some(w),
            None => {
                self.take_will();
            }
        }
    }

    /// The user name of the session's last connection, if known (see `identity`).
    pub fn identity(&self) -> Option<Option<Arc<str>>> {
        self.user_known.then(|| self.user.clone())
    }

    pub fn set_read_acl(&mut self, acl: ClientAcl) {
        self.read_acl = acl;
    }

    /// May a message on `topic` be delivered to this session?
    pub fn may_read(&self, topic: &str) -> bool {
        self.read_acl.check(topic, Access::Read)
    }

    /// [`Session::may_read`], remembering the last answer.
    pub fn may_read_cached(&mut self, topic: &Arc<str>) -> bool {
        self.read_acl.check_cached(topic, Access::Read)
    }

    pub fn new(client_id: Arc<str>, protocol: u8, expiry_secs: u32) -> Session {
        Session {
            client_id,
            protocol,
            expiry_secs,
            subs: Box::default(),
            queue: Deliveries::default(),
            durable: None,
            queued_bytes: 0,
            waiting_qos0: 0,
            progress_ms: 0,
            inflight: Deliveries::default(),
            extras: None,
            pids: edge_mqtt::pid::PidAllocator::default(),
            next_seq: 1,
            link: Link::Offline(None),
            inflight_limit: 1,
            dropped: 0,
            stored: false,
            read_acl: ClientAcl::unrestricted(),
            user: None,
            user_known: false,
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            rows_on_disk: false,
        }
    }

    /// Tells this session object apart from a later one of the same client id.
    pub fn epoch(&self) -> u64 {
        self.epoch as u64
    }

    /// A session read back from disk, its queue by its shape only (the messages stay on disk
    /// until the client drains them). One stored as connected was cut off by a crash or power
    /// loss at about `cut_off_ms` (the last commit of that run); its will is due from then.
    pub fn restore(client_id: Arc<str>, loaded: LoadedSession, cut_off_ms: u64) -> Session {
        let rec = loaded.record;
        let mut s = Session::new(client_id, rec.protocol, rec.expiry_secs);
        if let Some(user) = loaded.user {
            s.user = user.map(Arc::from);
            s.user_known = true;
        }
        let disconnected = rec.disconnected_ms.unwrap_or(cut_off_ms);
        s.link = Link::Offline(Some(cut_off(disconnected)));
        if let Some(w) = rec.will {
            let due_ms = disconnected + 1000 * w.delay_secs.min(s.expiry_secs) as u64;
            let mut w = PendingWill::new(w);
            w.due_ms = Some(due_ms);
            s.set_will(Some(w));
        }
        let mut subs: Vec<(Arc<str>, SubOptions)> = rec
            .subscriptions
            .into_iter()
            .map(|(f, o)| (Arc::from(f.as_str()), o))
            .collect();
        // Sorted and one per filter, as `set_subscription` keeps them (the last one stored
        // wins, as inserting them one by one would).
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        subs.reverse();
        subs.dedup_by(|a, b| a.0 == b.0);
        subs.reverse();
        s.subs = subs.into_boxed_slice();
        let q = loaded.queue;
        s.next_seq = q.next_seq.max(1);
        s.queued_bytes = q.bytes;
        if q.messages > 0 || !q.sent.is_empty() {
            let b = &mut Durable::of(&mut s.durable).backlog;
            b.count = q.messages;
            b.next = q.first_seq;
            b.sent = q.sent;
        }
        if !loaded.qos2_in.is_empty() {
            s.extras_mut().qos2_in = loaded.qos2_in.into_iter().collect();
        }
        s.stored = true;
        s
    }

    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    pub fn expiry_secs(&self) -> u32 {
        self.expiry_secs
    }

    /// Outlives its connection (expiry interval > 0), so it is kept on disk.
    pub fn persistent(&self) -> bool {
        self.expiry_secs > 0
    }

    pub fn online(&self) -> bool {
        matches!(self.link, Link::Online(_))
    }

    /// The attached connection.
    fn conn(&self) -> Option<&ConnLink> {
        match &self.link {
            Link::Online(c) => Some(c),
            Link::Offline(_) => None,
        }
    }

    /// When the last connection was cut off (None while one is attached, or before any).
    fn disconnected_ms(&self) -> Option<NonZeroU64> {
        match self.link {
            Link::Online(_) => None,
            Link::Offline(at) => at,
        }
    }

    /// Whether connection `conn_id` is the one attached (not taken over since).
    pub fn is_attached_to(&self, conn_id: u64) -> bool {
        self.conn().is_some_and(|c| c.id == conn_id)
    }

    /// A session record or queue rows exist on disk: ending the session must delete them.
    pub fn stored(&self) -> bool {
        self.stored || self.rows_on_disk
    }

    /// Messages and bytes waiting, messages in flight, messages dropped so far (statistics).
    pub fn queue_figures(&self) -> QueueFigures {
        QueueFigures {
            // Held in memory and read back from disk alike.
            queued: self.queued_len(),
            queued_bytes: self.queued_bytes,
            inflight: self.inflight.len(),
            dropped: self.dropped,
        }
    }

    /// Subscribed filters with their options.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&Arc<str>, &SubOptions)> {
        self.subs.iter().map(|(f, o)| (f, o))
    }

    /// Where `filter` is in the sorted `subs`: `Ok(index)`, or `Err(where it would go)`.
    fn find_subscription(&self, filter: &str) -> Result<usize, usize> {
        self.subs.binary_search_by(|(f, _)| (**f).cmp(filter))
    }

    /// Adds or replaces the subscription to `filter`; whether it existed.
    fn set_subscription(&mut self, filter: Arc<str>, opts: SubOptions) -> bool {
        match self.find_subscription(&filter) {
            Ok(i) => {
                self.subs[i].1 = opts;
                true
            }
            Err(i) => {
                let mut v = std::mem::take(&mut self.subs).into_vec();
                v.reserve_exact(1);
                v.insert(i, (filter, opts));
                self.subs = v.into_boxed_slice();
                false
            }
        }
    }

    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            protocol: self.protocol,
            expiry_secs: self.expiry_secs,
            subscriptions: self.subs.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            disconnected_ms: self.disconnected_ms().map(NonZeroU64::get),
            will: self.will().map(|w| w.record.clone()),
        }
    }

    /// Writes the session record (subscriptions, expiry, will, disconnection time).
    pub fn save(&mut self, ops: &mut Vec<Op>) {
        let first = !self.stored;
        self.stored = true;
        ops.push(Op::PutSession(
            self.client_id.clone(),
            Box::new(self.record()),
        ));
        if first && self.user_known {
            // Stored with the session the first time it is written (see `attach`).
            ops.push(Op::SessionUser(self.client_id.clone(), self.user.clone()));
        }
    }

    /// A new connection claims this session: the one attached (if any) is kicked and its
    /// in-flight deliveries requeued. The old will is published now if that connection is cut
    /// off without will delay, or if the session ends here (expiry 0 or clean start)
    /// [MQTT-3.1.4-3]; otherwise the resumption cancels it.
    pub fn claim(&mut self, clean_start: bool, now_ms: u64) -> Claim {
        let taken_over = match std::mem::replace(&mut self.link, Link::Offline(None)) {
            Link::Online(c) => Some(c),
            offline => {
                self.link = offline; // keeps when it was cut off (for `expired` below)
                None
            }
        };
        if let Some(link) = &taken_over {
            tracing::info!(client_id = %self.client_id, "session taken over by a new connection");
            link.kick(Kick::TakenOver);
            self.requeue_inflight();
        }
        let mut will_now = None;
        if let Some(w) = self.take_will().map(|w| w.record) {
            let ends = self.expiry_secs == 0 || clean_start;
            if (taken_over.is_some() && w.delay_secs == 0) || ends {
                will_now = Some(w);
            }
        }
        let expired = taken_over.is_none() && self.expired(now_ms);
        Claim {
            will_now,
            resumable: !(clean_start || expired),
        }
    }

    /// Attaches the connection of `req` (already claimed, or a new session). A persistent
    /// session is saved; one resumed with expiry 0 is deleted from disk, queue included, since
    /// nothing of it may outlive this connection any more.
    pub fn attach(&mut self, req: ConnectRequest, link: ConnLink, ops: &mut Vec<Op>) {
        self.protocol = req.protocol;
        self.expiry_secs = req.expiry_secs;
        self.set_will(req.will.map(PendingWill::new));
        self.inflight_limit = req.inflight_limit.min(u16::MAX as usize) as u16;
        self.read_acl = req.acl;
        self.user = req.username.clone();
        self.user_known = true;
        self.link = Link::Online(link);
        self.progress_ms = crate::message::now_ms();
        if self.persistent() {
            let resumed = self.stored;
            self.save(ops);
            if resumed {
                // The user changes only at a connection: written then, not at every save.
                ops.push(Op::SessionUser(
                    self.client_id.clone(),
                    req.username.clone(),
                ));
            }
        } else if self.stored {
            // The record goes now; the queue rows stay until they are delivered or the
            // session ends (a crash in between: removed at start as rows without a session).
            self.stored = false;
            self.rows_on_disk = true;
            ops.push(Op::ForgetSession(self.client_id.clone()));
        }
    }

    /// The attached connection ended: in-flight deliveries go back to the queue, a graceful
    /// DISCONNECT may change the expiry (capped at `max_expiry`) or discard the will, and the
    /// will is scheduled after its delay, or returned to be published now when it has no delay
    /// or the session ends now. The caller saves or removes the session; `ops` gets the ids
    /// recorded ahead that are forgotten (see `evict_window`).
    pub fn detach(
        &mut self,
        now_ms: u64,
        how: Departure,
        max_expiry: u32,
        ops: &mut Vec<Op>,
    ) -> Option<WillRecord> {
        self.link = Link::Offline(Some(cut_off(now_ms)));
        self.requeue_inflight();
        self.evict_window(ops);
        if let Departure::Graceful { send_will, expiry } = how {
            if let Some(e) = expiry {
                self.expiry_secs = e.min(max_expiry);
            }
            if !send_will {
                self.set_will(None);
            }
        }
        let delay_secs = self.will()?.record.delay_secs;
        if delay_secs == 0 || self.expiry_secs == 0 {
            return self.take_will().map(|w| w.record);
        }
        if let Some(w) = self.extras.as_mut().and_then(|e| e.will.as_mut()) {
            w.due_ms = Some(now_ms + 1000 * delay_secs.min(self.expiry_secs) as u64);
        }
        None
    }

    /// The will of a disconnected session once its delay has passed (the record is saved
    /// without it); `None` before, or when there is none.
    pub fn take_due_will(&mut self, now_ms: u64, ops: &mut Vec<Op>) -> Option<WillRecord> {
        let due = self.will().and_then(|w| w.due_ms);
        if self.online() || due.is_none_or(|d| now_ms < d) {
            return None;
        }
        let w = self.take_will()?.record;
        if self.persistent() {
            self.save(ops);
        }
        Some(w)
    }

    /// Disconnected for longer than its expiry interval.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.disconnected_ms()
            .is_some_and(|d| now_ms >= d.get() + 1000 * self.expiry_secs as u64)
    }

    /// The will a session still holds when it ends.
    pub fn into_will(self) -> Option<WillRecord> {
        self.extras?.will.map(|w| w.record)
    }

    /// Asks the attached connection, if any, to close.
    pub fn kick(&self, why: Kick) {
        if let Some(c) = self.conn() {
            c.kick(why);
        }
    }

    /// Adds or replaces the subscription to `filter`: `Ok(existed)`, or `QuotaExceeded` for a
    /// new filter beyond `max` subscriptions.
    pub fn subscribe(
        &mut self,
        filter: Arc<str>,
        opts: SubOptions,
        max: usize,
    ) -> Result<bool, SubscribeReasonCode> {
        let existed = self.find_subscription(&filter).is_ok();
        if !existed && self.subs.len() >= max {
            return Err(SubscribeReasonCode::QuotaExceeded);
        }
        Ok(self.set_subscription(filter, opts))
    }

    /// Removes the subscription to `filter`; whether it existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        match self.find_subscription(filter) {
            Ok(i) => {
                let mut v = std::mem::take(&mut self.subs).into_vec();
                v.remove(i);
                // Shrunk to fit: an emptied list keeps no memory.
                self.subs = v.into_boxed_slice();
                true
            }
            Err(_) => false,
        }
    }

    /// An incoming QoS 2 PUBLISH: records its packet id until PUBREL. `false` for an id
    /// already recorded, i.e. a resent duplicate that must not be routed again.
    pub fn receive_qos2(&mut self, pid: Pid, ops: &mut Vec<Op>) -> bool {
        if !self.extras_mut().qos2_in.insert(pid) {
            return false;
        }
        if self.persistent() {
            ops.push(Op::Qos2In {
                client: self.client_id.clone(),
                pid,
                present: true,
            });
        }
        true
    }

    /// PUBREL for an incoming QoS 2 message: forgets its packet id; whether it was known.
    pub fn release_qos2(&mut self, pid: Pid, ops: &mut Vec<Op>) -> bool {
        let known = self.extras.as_mut().is_some_and(|e| e.qos2_in.remove(&pid));
        self.trim_extras();
        if known && self.persistent() {
            ops.push(Op::Qos2In {
                client: self.client_id.clone(),
                pid,
                present: false,
            });
        }
        known
    }
}
