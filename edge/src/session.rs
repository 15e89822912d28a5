//! One client's session: subscriptions, the bounded queue of messages waiting for it, and the
//! QoS 1/2 state in both directions. It outlives connections when its expiry interval is > 0.
//!
//! Invariant: a delivery of a persistent session with QoS > 0 has `persisted = true` and a
//! record in `session_queue` until it is acknowledged (or dropped), under the same `seq`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use event_listener::Event;

use crate::message::Message;
use crate::storage::{SessionRecord, WillRecord};
use crate::topic::SubOptions;

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    Unsent,
    /// PUBLISH sent (QoS 1 waits for PUBACK, QoS 2 for PUBREC).
    Sent,
    /// QoS 2: PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: u64,
    pub msg: Arc<Message>,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub pid: u16,
    pub state: OutState,
    pub persisted: bool,
}

/// Why a connection is being closed by the broker from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    TakenOver = 1,
    Shutdown = 2,
}

/// The live connection attached to a session. Kicks are a flag plus a wake-up of the
/// connection's writer: no channel (and no allocation) per connection.
#[derive(Debug, Clone)]
pub struct ConnLink {
    pub id: u64,
    pub notify: Arc<Event>,
    pub kick: Arc<AtomicU8>,
}

impl ConnLink {
    pub fn kick(&self, why: Kick) {
        self.kick.store(why as u8, Ordering::Release);
        self.notify.notify(usize::MAX);
    }
}

/// Reads a kick flag set by [`ConnLink::kick`].
pub fn kicked(flag: &AtomicU8) -> Option<Kick> {
    match flag.load(Ordering::Acquire) {
        1 => Some(Kick::TakenOver),
        2 => Some(Kick::Shutdown),
        _ => None,
    }
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    pub protocol: u8,
    pub expiry_secs: u32,
    /// Full filter (with any `$share/group/` prefix) -> options.
    pub subs: HashMap<Arc<str>, SubOptions>,
    pub queue: VecDeque<Delivery>,
    pub queued_bytes: usize,
    pub inflight: VecDeque<Delivery>,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    pub qos2_in: HashSet<u16>,
    pub pids: edge_mqtt::pid::PidAllocator,
    pub next_seq: u64,
    pub conn: Option<ConnLink>,
    pub disconnected_ms: Option<u64>,
    pub will: Option<WillRecord>,
    /// When the will of a disconnected session is due (unix ms).
    pub will_due_ms: Option<u64>,
    pub inflight_limit: usize,
    pub dropped: u64,
    /// A session record exists on disk (must be deleted when the session ends).
    pub stored: bool,
    /// Fired when the queue falls back under its low-water mark (publishers wait on it).
    pub drained: Arc<Event>,
}

impl Session {
    pub fn new(client_id: Arc<str>, protocol: u8, expiry_secs: u32) -> Session {
        Session {
            client_id,
            protocol,
            expiry_secs,
            subs: HashMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: VecDeque::new(),
            qos2_in: HashSet::new(),
            pids: edge_mqtt::pid::PidAllocator::default(),
            next_seq: 1,
            conn: None,
            disconnected_ms: None,
            will: None,
            will_due_ms: None,
            inflight_limit: 1,
            dropped: 0,
            stored: false,
            drained: Arc::new(Event::new()),
        }
    }

    pub fn persistent(&self) -> bool {
        self.expiry_secs > 0
    }

    pub fn online(&self) -> bool {
        self.conn.is_some()
    }

    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            protocol: self.protocol,
            expiry_secs: self.expiry_secs,
            subscriptions: self.subs.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            disconnected_ms: self.disconnected_ms,
            will: self.will.clone(),
        }
    }

    /// A packet id not used by any in-flight delivery, nor by a requeued one waiting for
    /// redelivery. Requeued deliveries keep their ids and sit at the head of the queue (see
    /// `requeue_inflight`), so only that head is scanned: O(in-flight), not O(queue).
    pub fn alloc_pid(&mut self) -> u16 {
        let used: HashSet<u16> = self
            .inflight
            .iter()
            .chain(self.queue.iter().take_while(|d| d.pid != 0))
            .map(|d| d.pid)
            .collect();
        // `None` (all 65,535 ids in use) cannot happen while in-flight is bounded far below it.
        self.pids
            .next(|p| used.contains(&p))
            .map_or(1, |p| p.value())
    }

    /// Puts in-flight deliveries back at the head of the queue, in order, so the next
    /// connection resends them first (with DUP, same packet id) [MQTT-4.4.0-1].
    pub fn requeue_inflight(&mut self) {
        while let Some(d) = self.inflight.pop_back() {
            self.queued_bytes += d.msg.weight();
            self.queue.push_front(d);
        }
    }

    /// Queue at three quarters of a bound: publishers to this online session should pause.
    pub fn over_high_water(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.queue.len() * 4 >= max_messages * 3 || self.queued_bytes * 4 >= max_bytes * 3
    }

    /// Queue at half of both bounds: paused publishers may go on.
    pub fn under_low_water(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.queue.len() * 2 <= max_messages && self.queued_bytes * 2 <= max_bytes
    }

    pub fn congestion(&self) -> crate::broker::Congestion {
        crate::broker::Congestion {
            client_id: self.client_id.clone(),
            drained: self.drained.clone(),
        }
    }

    pub fn notify(&self) {
        if let Some(c) = &self.conn {
            c.notify.notify(1);
        }
    }
}
