//! The broker's shared state and every decision that touches more than one connection:
//! sessions, routing, retained messages, wills, expiry.
//!
//! All state sits behind one mutex held for short, non-blocking sections. Each operation that
//! changes durable state first reserves a writer slot (async, outside the lock), then pushes
//! its ops inside the lock, so disk order equals memory order (see `storage.rs`). The caller
//! gets a ticket to await before sending an acknowledgement that promises durability.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;

use crate::config::Config;
use crate::message::{now_ms, Message};
use crate::session::{ConnLink, Delivery, Kick, OutState, Session};
use crate::storage::{Loaded, Op, Store, WillRecord};
use crate::topic::{matches, SubOptions, SubscriptionTree};

/// Store-and-forward capture, as seen by the broker (implemented by the sync bridge).
pub trait Forwarder: Send + Sync + 'static {
    /// Does a forward rule take this message?
    fn wants(&self, topic: &str, qos: u8) -> bool;
    /// May it enter the outbox? `false` means: refuse the publish (quota exceeded).
    fn admit(&self, topic: &str, payload_len: usize) -> bool;
}

#[derive(Default)]
struct State {
    sessions: HashMap<Arc<str>, Session>,
    subs: SubscriptionTree,
    retained: HashMap<Arc<str>, Arc<Message>>,
    shared_rr: usize,
}

pub struct Broker {
    pub cfg: Arc<Config>,
    pub store: Store,
    state: Mutex<State>,
    next_conn: AtomicU64,
    pub connections: AtomicUsize,
    /// Set once at start-up (sync on), read on every publish.
    forwarder: std::sync::OnceLock<Arc<dyn Forwarder>>,
    /// Fired on shutdown so that every connection task ends.
    pub shutdown: Event,
}

/// What CONNECT asks of the session layer (already validated by the connection).
pub struct ConnectRequest {
    pub client_id: Arc<str>,
    pub protocol: u8,
    pub clean_start: bool,
    pub expiry_secs: u32,
    pub will: Option<WillRecord>,
    pub inflight_limit: usize,
}

pub struct Connected {
    pub session_present: bool,
    pub conn_id: u64,
    pub notify: Arc<Event>,
    pub kick: Arc<std::sync::atomic::AtomicU8>,
    pub ticket: u64,
}

/// How a connection ended, from the session's point of view.
pub enum Departure {
    /// DISCONNECT received. `send_will` for v5 reason 0x04; `expiry` if the client changed it.
    Graceful {
        send_will: bool,
        expiry: Option<u32>,
    },
    /// Network error, keep-alive timeout, protocol error, take-over, shutdown.
    Abnormal,
}

/// Outcome of an incoming PUBLISH.
#[derive(Debug, Clone)]
pub enum Published {
    /// Routed; `matched` is false when no subscriber took it. `congested` names an online
    /// session whose queue passed its high-water mark: the publisher should pause reading
    /// until that session's `drained` event (flow control instead of dropping).
    Accepted {
        ticket: u64,
        matched: bool,
        congested: Option<Congestion>,
    },
    /// A QoS 2 packet id already received and not released: acknowledge again once `ticket`
    /// (which covers the first copy's commit) is on disk; nothing is routed.
    Duplicate { ticket: u64 },
    /// The outbox is full and its policy is `reject_new`.
    QuotaExceeded,
    /// The publisher's session is gone (taken over meanwhile): nothing was stored, so nothing
    /// may be acknowledged.
    SessionGone,
}

/// A subscriber that cannot keep up, for the publisher to wait on.
#[derive(Debug, Clone)]
pub struct Congestion {
    pub client_id: Arc<str>,
    pub drained: Arc<Event>,
}

/// One PUBLISH or PUBREL the connection should send now.
pub enum Outgoing {
    Publish {
        msg: Arc<Message>,
        qos: u8,
        retain: bool,
        dup: bool,
        pid: u16,
        sub_ids: Vec<u32>,
    },
    Pubrel(u16),
}

/// Result of a SUBSCRIBE for one filter: granted QoS or an error reason code.
pub type SubResult = Result<u8, u8>;

impl Broker {
    pub fn new(cfg: Arc<Config>, store: Store, loaded: Loaded) -> Arc<Broker> {
        let mut state = State::default();
        let now = now_ms();
        for m in loaded.retained {
            if !m.is_expired(now) {
                state.retained.insert(m.topic.clone(), Arc::new(m));
            }
        }
        for ls in loaded.sessions {
            let id: Arc<str> = Arc::from(ls.client_id.as_str());
            let rec = ls.record;
            let mut s = Session::new(id.clone(), rec.protocol, rec.expiry_secs);
            // A session stored as connected was cut off by a crash or power loss, at about
            // the last commit of that run.
            let disconnected = rec
                .disconnected_ms
                .unwrap_or(loaded.last_commit_ms.unwrap_or(now).min(now));
            s.disconnected_ms = Some(disconnected);
            if let Some(w) = rec.will {
                let due = disconnected + 1000 * w.delay_secs.min(s.expiry_secs) as u64;
                s.will_due_ms = Some(due);
                s.will = Some(w);
            }
            for (f, o) in rec.subscriptions {
                let f: Arc<str> = Arc::from(f.as_str());
                state.subs.insert(&id, &f, o);
                s.subs.insert(f, o);
            }
            for (seq, d) in ls.queue {
                s.next_seq = s.next_seq.max(seq + 1);
                let msg = Arc::new(d.msg);
                s.queued_bytes += msg.weight();
                s.queue.push_back(Delivery {
                    seq,
                    msg,
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids,
                    pid: d.pid,
                    state: match (d.pid, d.released) {
                        (0, _) => OutState::Unsent,
                        (_, false) => OutState::Sent,
                        (_, true) => OutState::Released,
                    },
                    persisted: true,
                });
            }
            s.qos2_in = ls.qos2_in.into_iter().collect();
            s.stored = true;
            state.sessions.insert(id, s);
        }
        tracing::info!(
            sessions = state.sessions.len(),
            retained = state.retained.len(),
            "state restored from disk"
        );
        let broker = Arc::new(Broker {
            cfg,
            store,
            state: Mutex::new(state),
            next_conn: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            forwarder: std::sync::OnceLock::new(),
            shutdown: Event::new(),
        });
        // Wills due now and sessions that expired while the broker was down are handled by
        // the first `tick`, which the server runs at start.
        broker
    }

    /// Plugs in store-and-forward; only the first call takes effect.
    pub fn set_forwarder(&self, f: Arc<dyn Forwarder>) {
        if self.forwarder.set(f).is_err() {
            tracing::warn!("a forwarder is already set; ignoring the second one");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new connection to its session (creating, resuming or taking it over).
    pub async fn connect(&self, req: ConnectRequest) -> Connected {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Event::new());
        let kick = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let now = now_ms();
        let mut st = self.lock();
        let st = &mut *st;
        let mut session_present = false;
        let mut wills = Vec::new();
        if let Some(old) = st.sessions.get_mut(&req.client_id) {
            let taken_over = old.conn.take();
            if let Some(link) = &taken_over {
                tracing::info!(client_id = %req.client_id, "session taken over by a new connection");
                link.kick(Kick::TakenOver);
                old.requeue_inflight();
            }
            // The old connection's will: sent now if it had no delay, or if the old session
            // ends here (expiry 0 or clean start) [MQTT-3.1.4-3]; otherwise cancelled by the
            // resumption of the session.
            if let Some(w) = old.will.take() {
                let ends = old.expiry_secs == 0 || req.clean_start;
                if (taken_over.is_some() && w.delay_secs == 0) || ends {
                    wills.push(w);
                }
            }
            old.will_due_ms = None;
            let expired = old
                .disconnected_ms
                .is_some_and(|d| taken_over.is_none() && now >= d + 1000 * old.expiry_secs as u64);
            if req.clean_start || expired {
                let old = st.sessions.remove(&req.client_id);
                if let Some(old) = old {
                    for f in old.subs.keys() {
                        st.subs.remove(&req.client_id, f);
                    }
                    if old.stored {
                        ops.push(Op::DeleteSession(req.client_id.clone()));
                    }
                }
            } else {
                session_present = true;
            }
        }
        let s = st
            .sessions
            .entry(req.client_id.clone())
            .or_insert_with(|| Session::new(req.client_id.clone(), req.protocol, req.expiry_secs));
        s.protocol = req.protocol;
        s.expiry_secs = req.expiry_secs;
        s.will = req.will;
        s.will_due_ms = None;
        s.disconnected_ms = None;
        s.inflight_limit = req.inflight_limit;
        s.conn = Some(ConnLink {
            id: conn_id,
            notify: notify.clone(),
            kick: kick.clone(),
        });
        if s.persistent() {
            s.stored = true;
            ops.push(Op::PutSession(req.client_id.clone(), Box::new(s.record())));
        } else if s.stored {
            s.stored = false;
            // Resumed with expiry 0: nothing of it may outlive this connection any more.
            ops.push(Op::DeleteSession(req.client_id.clone()));
            for d in s.queue.iter_mut() {
                d.persisted = false;
            }
        }
        for w in wills {
            self.publish_will(st, w, &mut ops);
        }
        let ticket = self.store.push(slot, ops);
        Connected {
            session_present,
            conn_id,
            notify,
            kick,
            ticket,
        }
    }

    /// Detaches a connection. Does nothing when the session has since been taken over.
    pub async fn disconnect(&self, client_id: &Arc<str>, conn_id: u64, how: Departure) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let now = now_ms();
        let mut st = self.lock();
        let st = &mut *st;
        let Some(s) = st.sessions.get_mut(client_id) else {
            return;
        };
        if s.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return;
        }
        s.conn = None;
        s.disconnected_ms = Some(now);
        s.requeue_inflight();
        let mut will_now = None;
        match how {
            Departure::Graceful { send_will, expiry } => {
                if let Some(e) = expiry {
                    s.expiry_secs = e.min(self.cfg.limits.max_session_expiry_secs);
                }
                if !send_will {
                    s.will = None;
                }
            }
            Departure::Abnormal => {}
        }
        if let Some(w) = &s.will {
            if w.delay_secs == 0 || s.expiry_secs == 0 {
                will_now = s.will.take();
            } else {
                s.will_due_ms = Some(now + 1000 * w.delay_secs.min(s.expiry_secs) as u64);
            }
        }
        if s.expiry_secs == 0 {
            let s = st.sessions.remove(client_id);
            if let Some(s) = s {
                for f in s.subs.keys() {
                    st.subs.remove(client_id, f);
                }
                if s.stored {
                    ops.push(Op::DeleteSession(client_id.clone()));
                }
            }
        } else {
            s.stored = true;
            ops.push(Op::PutSession(client_id.clone(), Box::new(s.record())));
        }
        if let Some(w) = will_now {
            self.publish_will(st, w, &mut ops);
        }
        self.store.push(slot, ops);
    }

    /// Routes an incoming application message; for QoS 2 also records the packet id.
    pub async fn publish(
        &self,
        msg: Arc<Message>,
        qos2_from: Option<(&Arc<str>, u16)>,
    ) -> Published {
        let forward = self
            .forwarder
            .get()
            .filter(|f| !msg.from_downlink && f.wants(&msg.topic, msg.qos));
        if let Some(f) = &forward {
            if !f.admit(&msg.topic, msg.payload.len()) {
                return Published::QuotaExceeded;
            }
        }
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let mut st = self.lock();
        let st = &mut *st;
        if let Some((client, pid)) = qos2_from {
            let Some(s) = st.sessions.get_mut(client) else {
                return Published::SessionGone;
            };
            if !s.qos2_in.insert(pid) {
                return Published::Duplicate {
                    ticket: self.store.latest_ticket(),
                };
            }
            if s.persistent() {
                ops.push(Op::Qos2In {
                    client: client.clone(),
                    pid,
                    present: true,
                });
            }
        }
        if msg.retain {
            self.retain(st, &msg, &mut ops);
        }
        if forward.is_some() {
            ops.push(Op::Capture(msg.clone()));
        }
        let (matched, congested) = self.route(st, msg, &mut ops);
        let ticket = self.store.push(slot, ops);
        Published::Accepted {
            ticket,
            matched,
            congested,
        }
    }

    fn retain(&self, st: &mut State, msg: &Arc<Message>, ops: &mut Vec<Op>) {
        if msg.payload.is_empty() {
            if st.retained.remove(&msg.topic).is_some() {
                ops.push(Op::Retain {
                    topic: msg.topic.clone(),
                    msg: None,
                });
            }
            return;
        }
        if !st.retained.contains_key(&msg.topic)
            && st.retained.len() >= self.cfg.limits.max_retained_messages
        {
            tracing::warn!(topic = %msg.topic, limit = self.cfg.limits.max_retained_messages,
                "retained message not stored: limits.max_retained_messages reached");
            return;
        }
        st.retained.insert(msg.topic.clone(), msg.clone());
        ops.push(Op::Retain {
            topic: msg.topic.clone(),
            msg: Some(msg.clone()),
        });
    }

    /// Queues `msg` for every matching session. Returns whether anyone matched.
    fn route(
        &self,
        st: &mut State,
        msg: Arc<Message>,
        ops: &mut Vec<Op>,
    ) -> (bool, Option<Congestion>) {
        let (direct, shared) = st.subs.collect(&msg.topic);
        let mut matched = false;
        let mut congested = None;
        for (client, t) in direct {
            if t.no_local && client == msg.publisher {
                continue;
            }
            let retain = t.retain_as_published && msg.retain;
            if let Some(s) = st.sessions.get_mut(&client) {
                matched = true;
                let qos = msg.qos.min(t.qos);
                if self.enqueue(s, msg.clone(), qos, retain, t.sub_ids, ops) {
                    congested.get_or_insert_with(|| s.congestion());
                }
            }
        }
        for group in shared {
            // Prefer online members, round robin among them.
            let online: Vec<_> = group
                .members
                .iter()
                .filter(|(c, _)| st.sessions.get(c).is_some_and(|s| s.online()))
                .collect();
            let pool: Vec<_> = if online.is_empty() {
                group.members.iter().collect()
            } else {
                online
            };
            if pool.is_empty() {
                continue;
            }
            st.shared_rr = st.shared_rr.wrapping_add(1);
            let (client, opts) = pool[st.shared_rr % pool.len()];
            if let Some(s) = st.sessions.get_mut(client) {
                matched = true;
                let ids = if opts.id != 0 { vec![opts.id] } else { vec![] };
                if self.enqueue(s, msg.clone(), msg.qos.min(opts.qos), false, ids, ops) {
                    congested.get_or_insert_with(|| s.congestion());
                }
            }
        }
        (matched, congested)
    }

    /// Queues one delivery; returns whether the (online) session is now congested.
    fn enqueue(
        &self,
        s: &mut Session,
        msg: Arc<Message>,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
        ops: &mut Vec<Op>,
    ) -> bool {
        let limits = &self.cfg.limits;
        if qos == 0 && !s.online() {
            return false; // QoS 0 is not queued for offline sessions.
        }
        let weight = msg.weight();
        if s.queue.len() >= limits.max_queued_messages
            || s.queued_bytes + weight > limits.max_queued_bytes
        {
            s.dropped += 1;
            if s.dropped.is_power_of_two() {
                tracing::warn!(client_id = %s.client_id, dropped = s.dropped, topic = %msg.topic,
                    "session queue full (limits.max_queued_messages / max_queued_bytes): message dropped");
            }
            return s.online();
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let persisted = qos > 0 && s.persistent();
        if persisted {
            ops.push(Op::Enqueue {
                client: s.client_id.clone(),
                seq,
                msg: msg.clone(),
                qos,
                retain,
                sub_ids: sub_ids.clone(),
            });
        }
        s.queued_bytes += weight;
        s.queue.push_back(Delivery {
            seq,
            msg,
            qos,
            retain,
            sub_ids,
            pid: 0,
            state: OutState::Unsent,
            persisted,
        });
        s.notify();
        s.online() && s.over_high_water(limits.max_queued_messages, limits.max_queued_bytes)
    }

    /// Whether a session is still over its high-water mark (publishers re-check after
    /// registering for `drained`, so that no wake-up is lost).
    pub fn congested(&self, client: &Arc<str>) -> bool {
        let limits = &self.cfg.limits;
        self.lock().sessions.get(client).is_some_and(|s| {
            s.online() && s.over_high_water(limits.max_queued_messages, limits.max_queued_bytes)
        })
    }

    /// Adds subscriptions and queues the retained messages they ask for.
    pub async fn subscribe(
        &self,
        client: &Arc<str>,
        filters: Vec<(Arc<str>, SubOptions)>,
    ) -> (Vec<SubResult>, u64) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let now = now_ms();
        let mut st = self.lock();
        let st = &mut *st;
        let mut results = Vec::with_capacity(filters.len());
        let mut retained_out = Vec::new();
        {
            let Some(s) = st.sessions.get_mut(client) else {
                return (filters.iter().map(|_| Err(0x80)).collect(), 0);
            };
            for (filter, opts) in filters {
                let existed = s.subs.contains_key(&filter);
                if !existed && s.subs.len() >= self.cfg.limits.max_subscriptions_per_session {
                    results.push(Err(0x97));
                    continue;
                }
                s.subs.insert(filter.clone(), opts);
                st.subs.insert(client, &filter, opts);
                results.push(Ok(opts.qos));
                let (group, f) = crate::topic::split_shared(&filter);
                let send_retained = group.is_none()
                    && match opts.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                if send_retained {
                    for m in st.retained.values() {
                        if matches(f, &m.topic) && !m.is_expired(now) {
                            let ids = if opts.id != 0 { vec![opts.id] } else { vec![] };
                            retained_out.push((m.clone(), m.qos.min(opts.qos), ids));
                        }
                    }
                }
            }
            if s.persistent() {
                ops.push(Op::PutSession(client.clone(), Box::new(s.record())));
            }
        }
        if let Some(s) = st.sessions.get_mut(client) {
            for (m, qos, ids) in retained_out {
                self.enqueue(s, m, qos, true, ids, &mut ops);
            }
        }
        let ticket = self.store.push(slot, ops);
        (results, ticket)
    }

    /// Removes subscriptions; `true` per filter that existed.
    pub async fn unsubscribe(&self, client: &Arc<str>, filters: &[Arc<str>]) -> (Vec<bool>, u64) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let mut st = self.lock();
        let st = &mut *st;
        let Some(s) = st.sessions.get_mut(client) else {
            return (filters.iter().map(|_| false).collect(), 0);
        };
        let mut out = Vec::new();
        for f in filters {
            let existed = s.subs.remove(f).is_some();
            if existed {
                st.subs.remove(client, f);
            }
            out.push(existed);
        }
        if s.persistent() {
            ops.push(Op::PutSession(client.clone(), Box::new(s.record())));
        }
        if !out.is_empty()
            && s.under_low_water(
                self.cfg.limits.max_queued_messages,
                self.cfg.limits.max_queued_bytes,
            )
        {
            s.drained.notify(usize::MAX);
        }
        let ticket = self.store.push(slot, ops);
        (out, ticket)
    }

    /// Takes up to the inflight limit of deliveries for a connection to send now. The ticket
    /// covers the packet ids recorded for them: wait for it before sending, so that after a
    /// crash a redelivery carries DUP and the same packet id [MQTT-4.3.3-5].
    pub async fn take_outgoing(
        &self,
        client: &Arc<str>,
        conn_id: u64,
        max: usize,
    ) -> (Vec<Outgoing>, u64) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let now = now_ms();
        let mut out = Vec::new();
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(client) else {
            return (out, 0);
        };
        if s.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return (out, 0);
        }
        while out.len() < max {
            let inflight_full = s.inflight.len() >= s.inflight_limit;
            let Some(front) = s.queue.front() else { break };
            if front.qos > 0 && inflight_full {
                break;
            }
            let Some(mut d) = s.queue.pop_front() else {
                break;
            };
            s.queued_bytes = s.queued_bytes.saturating_sub(d.msg.weight());
            // Expired messages are dropped unless already sent once (the receiver may hold it).
            if d.state == OutState::Unsent && d.msg.is_expired(now) {
                if d.persisted {
                    ops.push(Op::Dequeue {
                        client: s.client_id.clone(),
                        seq: d.seq,
                    });
                }
                continue;
            }
            if d.qos == 0 {
                out.push(Outgoing::Publish {
                    msg: d.msg,
                    qos: 0,
                    retain: d.retain,
                    dup: false,
                    pid: 0,
                    sub_ids: d.sub_ids,
                });
                continue;
            }
            let dup = d.state != OutState::Unsent;
            if d.state == OutState::Unsent {
                d.pid = s.alloc_pid();
                d.state = OutState::Sent;
                if d.persisted {
                    ops.push(Op::MarkSent {
                        client: s.client_id.clone(),
                        seq: d.seq,
                        pid: d.pid,
                        released: false,
                    });
                }
            }
            if d.state == OutState::Released {
                out.push(Outgoing::Pubrel(d.pid));
            } else {
                out.push(Outgoing::Publish {
                    msg: d.msg.clone(),
                    qos: d.qos,
                    retain: d.retain,
                    dup,
                    pid: d.pid,
                    sub_ids: d.sub_ids.clone(),
                });
            }
            s.inflight.push_back(d);
        }
        if !out.is_empty()
            && s.under_low_water(
                self.cfg.limits.max_queued_messages,
                self.cfg.limits.max_queued_bytes,
            )
        {
            s.drained.notify(usize::MAX);
        }
        let ticket = self.store.push(slot, ops);
        (out, ticket)
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) from the client: the delivery is complete.
    /// Also used to drop a delivery the client cannot receive (too large for it).
    pub async fn complete(&self, client: &Arc<str>, pid: u16) -> bool {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(client) else {
            return false;
        };
        let Some(i) = s.inflight.iter().position(|d| d.pid == pid) else {
            return false;
        };
        if let Some(d) = s.inflight.remove(i) {
            if d.persisted {
                ops.push(Op::Dequeue {
                    client: client.clone(),
                    seq: d.seq,
                });
            }
        }
        s.notify();
        self.store.push(slot, ops);
        true
    }

    /// PUBREC from the client: the QoS 2 delivery moves to its release phase.
    /// Returns false when no such delivery is in flight. A PUBREC with an error reason ends
    /// the delivery instead (`failed`).
    pub async fn received(&self, client: &Arc<str>, pid: u16, failed: bool) -> bool {
        if failed {
            return self.complete(client, pid).await;
        }
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(client) else {
            return false;
        };
        let Some(d) = s.inflight.iter_mut().find(|d| d.pid == pid) else {
            return false;
        };
        d.state = OutState::Released;
        if d.persisted {
            ops.push(Op::MarkSent {
                client: client.clone(),
                seq: d.seq,
                pid,
                released: true,
            });
        }
        self.store.push(slot, ops);
        true
    }

    /// PUBREL from the client for an incoming QoS 2 message. Returns whether it was known.
    pub async fn release(&self, client: &Arc<str>, pid: u16) -> (bool, u64) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(client) else {
            return (false, 0);
        };
        let known = s.qos2_in.remove(&pid);
        if known && s.persistent() {
            ops.push(Op::Qos2In {
                client: client.clone(),
                pid,
                present: false,
            });
        }
        (known, self.store.push(slot, ops))
    }

    /// Current session expiry interval of a session (0 when unknown).
    pub fn session_expiry(&self, client: &Arc<str>) -> u32 {
        self.lock()
            .sessions
            .get(client)
            .map(|s| s.expiry_secs)
            .unwrap_or(0)
    }

    /// Periodic work: due wills, expired sessions, expired retained messages.
    pub async fn tick(&self) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let now = now_ms();
        let mut st = self.lock();
        let st = &mut *st;
        let mut wills = Vec::new();
        let mut gone = Vec::new();
        for (id, s) in st.sessions.iter_mut() {
            if s.online() {
                continue;
            }
            if s.will_due_ms.is_some_and(|d| now >= d) {
                s.will_due_ms = None;
                if let Some(w) = s.will.take() {
                    wills.push(w);
                    if s.persistent() {
                        ops.push(Op::PutSession(id.clone(), Box::new(s.record())));
                    }
                }
            }
            if let Some(d) = s.disconnected_ms {
                if now >= d + 1000 * s.expiry_secs as u64 {
                    gone.push(id.clone());
                }
            }
        }
        for id in gone {
            if let Some(s) = st.sessions.remove(&id) {
                tracing::debug!(client_id = %id, "session expired");
                for f in s.subs.keys() {
                    st.subs.remove(&id, f);
                }
                if let Some(w) = s.will {
                    wills.push(w);
                }
                if s.stored {
                    ops.push(Op::DeleteSession(id));
                }
            }
        }
        let expired: Vec<Arc<str>> = st
            .retained
            .iter()
            .filter(|(_, m)| m.is_expired(now))
            .map(|(t, _)| t.clone())
            .collect();
        for t in expired {
            st.retained.remove(&t);
            ops.push(Op::Retain {
                topic: t,
                msg: None,
            });
        }
        for w in wills {
            self.publish_will(st, w, &mut ops);
        }
        self.store.push(slot, ops);
    }

    fn publish_will(&self, st: &mut State, w: WillRecord, ops: &mut Vec<Op>) {
        let mut msg = w.msg;
        // Expiry counts from when the will is published, not from CONNECT.
        msg.received_ms = now_ms();
        let msg = Arc::new(msg);
        tracing::debug!(topic = %msg.topic, "publishing will");
        if msg.retain {
            self.retain(st, &msg, ops);
        }
        self.route(st, msg, ops);
    }

    /// Asks every connection to close (server shutting down).
    pub fn kick_all(&self) {
        let st = self.lock();
        for s in st.sessions.values() {
            if let Some(c) = &s.conn {
                c.kick(Kick::Shutdown);
            }
        }
        drop(st);
        self.shutdown.notify(usize::MAX);
    }
}
