//! The broker's shared state and every decision that touches more than one connection:
//! sessions, routing, retained messages, wills, expiry. The rules of one session are
//! [`Session`] methods; the broker picks the sessions and keeps the cross-session state.
//!
//! All state sits behind one mutex held for short, non-blocking sections. Every change goes
//! through [`Broker::commit`]: it reserves a writer slot (async, outside the lock), then builds
//! and queues the change's ops inside the lock, so disk order equals memory order (see
//! `storage.rs`). The caller gets a [`Ticket`] to await before sending an acknowledgement that
//! promises durability (`None`: nothing was written, nothing to wait for).
//!
//! - `lifecycle.rs`: connect, take-over, disconnect, expiry, wills, the periodic tick.
//! - `routing.rs`: incoming publishes, retained messages, choosing subscribers.
//! - `delivery.rs`: what a connection sends next, acknowledgements, flow control.
//! - `subscriptions.rs`: subscribe and unsubscribe.
//! - `permit.rs`: the connection limit, as permits held by live connections.
//! - `access.rs`: the `[auth]` state in force, per-address limits, the failure throttle.
//! - `gauges.rs`: figures for statistics (sessions, queues, retained) and `$SYS` publishing.
//! - `session_table.rs`: the sessions by client id.

mod access;
mod delivery;
mod gauges;
mod lifecycle;
mod permit;
mod routing;
mod session_table;
mod subscriptions;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use event_listener::Event;

pub use access::IpPermit;
pub use delivery::{Cause, Congestion, Outgoing};
pub use gauges::Gauges;
pub use lifecycle::{ConnectRequest, Connected, Departure};
pub use permit::{ConnectionPermit, Connections};
pub use routing::Published;
pub use subscriptions::SubResult;

use crate::config::Config;
use crate::memory::MemoryBudget;
use crate::message::{now_ms, Message};
use crate::session::{QueueLimits, Session};
use crate::storage::{Loaded, Op, Store, Ticket};
use crate::topic::SubscriptionTree;

/// Store-and-forward capture, as seen by the broker (implemented by the sync bridge).
pub trait Forwarder: Send + Sync + 'static {
    /// Does a forward rule take this message?
    fn wants(&self, topic: &str, qos: u8) -> bool;
    /// May it enter the outbox? `false` means: refuse the publish (quota exceeded).
    fn admit(&self, topic: &str, payload_len: usize) -> bool;
}

/// Everything behind the broker lock. A session's filters are both in the session and in the
/// tree; [`State::remove_session`] keeps the two in step when a session ends.
#[derive(Default)]
struct State {
    /// Boxed: the table keeps a pointer per slot (a large session inline in every slot,
    /// empty ones included, cost hundreds of bytes per connection), and no copy of the id.
    sessions: session_table::SessionTable,
    subs: SubscriptionTree,
    retained: HashMap<Arc<str>, Arc<Message>>,
    /// Of `retained`, the broker's own `$SYS` topics (`gauges.rs`): not counted against
    /// `limits.max_retained_messages`.
    sys_retained: usize,
    shared_rr: usize,
}

impl State {
    /// Ends a session: gone from memory and from the subscription tree, and its record (queue
    /// and QoS 2 state with it) deleted from disk if it has one. The one way a session ends:
    /// clean start, expiry, disconnection with expiry 0.
    fn remove_session(&mut self, id: &Arc<str>, ops: &mut Vec<Op>) -> Option<Session> {
        let s = *self.sessions.remove(id)?;
        for (f, _) in s.subscriptions() {
            self.subs.remove(id, f);
        }
        if s.stored() {
            ops.push(Op::DeleteSession(id.clone()));
        }
        Some(s)
    }
}

pub struct Broker {
    pub cfg: Arc<Config>,
    pub store: Store,
    state: Mutex<State>,
    next_conn: AtomicU64,
    /// Live connections, each holding a permit (`limits.max_connections`).
    pub connections: Arc<Connections>,
    /// The other limits a reload may change while serving.
    pub live: crate::live_limits::LiveLimits,
    /// Set once at start-up (sync on), read on every publish.
    forwarder: OnceLock<Arc<dyn Forwarder>>,
    /// Fired on shutdown so that every connection task ends.
    pub shutdown: Event,
    /// Password file, ACL, failure throttle, per-address counts (`access.rs`).
    access: access::AccessState,
    /// Counters for `/metrics`, `/api/v1/status` and `$SYS` (broker-wide atomics).
    pub stats: crate::stats::Stats,
    /// Reads the live sync status (set once when sync starts).
    sync_status: OnceLock<edge_sync::StatusReader>,
    /// `limits.max_memory`: publisher pauses, refusals, read-back sizes (`memory.rs`).
    memory: MemoryBudget,
    /// Deliveries and backlog reads that waited for a commit (`delivery.rs`).
    pub drain_waits: delivery::DrainWaits,
    /// Wakes connections whose keep-alive deadline passed (the server runs its task).
    pub keep_alives: crate::connection::KeepAliveSweep,
}

impl Broker {
    pub fn new(cfg: Arc<Config>, store: Store, loaded: Loaded) -> Arc<Broker> {
        let mut state = State::default();
        let now = now_ms();
        for m in loaded.retained {
            if !m.is_expired(now) {
                state.retained.insert(m.topic.clone(), Arc::new(m));
            }
        }
        // Sessions stored as connected were cut off at about the last commit of that run.
        let cut_off = loaded.last_commit_ms.unwrap_or(now).min(now);
        for ls in loaded.sessions {
            let id: Arc<str> = Arc::from(ls.client_id.as_str());
            let s = Session::restore(id.clone(), ls, cut_off);
            for (f, o) in s.subscriptions() {
                state.subs.insert(&id, f, *o);
            }
            state.sessions.insert(Box::new(s));
        }
        tracing::info!(
            sessions = state.sessions.len(),
            retained = state.retained.len(),
            "state restored from disk"
        );
        let connections = Arc::new(Connections::new(cfg.limits.max_connections));
        let live = crate::live_limits::LiveLimits::new(&cfg.limits);
        let cfg_max_memory = cfg.limits.max_memory;
        // Wills due now and sessions that expired while the broker was down are handled by
        // the first `tick`, which the server runs at start.
        Arc::new(Broker {
            cfg,
            store,
            state: Mutex::new(state),
            next_conn: AtomicU64::new(1),
            connections,
            live,
            forwarder: OnceLock::new(),
            shutdown: Event::new(),
            access: access::AccessState::default(),
            stats: crate::stats::Stats::new(),
            sync_status: OnceLock::new(),
            memory: MemoryBudget::new(cfg_max_memory),
            drain_waits: Default::default(),
            keep_alives: Default::default(),
        })
    }

    /// Plugs in the reader of the live sync status; only the first call takes effect.
    pub fn set_sync_status(&self, reader: edge_sync::StatusReader) {
        let _ = self.sync_status.set(reader);
    }

    /// The live sync status, `None` when sync is off (or stopped).
    pub fn sync_status(&self) -> Option<edge_sync::SyncStatus> {
        self.sync_status.get().and_then(|r| r.read())
    }

    /// Plugs in store-and-forward; only the first call takes effect.
    pub fn set_forwarder(&self, f: Arc<dyn Forwarder>) {
        if self.forwarder.set(f).is_err() {
            tracing::warn!("a forwarder is already set; ignoring the second one");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        edge_mqtt::util::lock(&self.state)
    }

    /// The one write transaction of the broker: reserves a writer slot (waiting, outside the
    /// lock, while the writer is full), runs `build` under the lock, and queues the ops it
    /// pushed before the lock is released. Returns what `build` returned and the ticket of its
    /// ops, `None` when it pushed none (then nothing is written).
    async fn commit<R>(
        &self,
        build: impl FnOnce(&mut State, &mut Vec<Op>) -> R,
    ) -> (R, Option<Ticket>) {
        self.commit_then(build, |_, _, _| {}).await
    }

    /// [`Broker::commit`], and then, still under the lock, `then` with what `build` returned
    /// and the ticket of its ops: packet ids recorded ahead get the ticket of their commit
    /// before any other round can take them.
    async fn commit_then<R>(
        &self,
        build: impl FnOnce(&mut State, &mut Vec<Op>) -> R,
        then: impl FnOnce(&mut State, &R, Option<Ticket>),
    ) -> (R, Option<Ticket>) {
        let slot = self.store.reserve().await;
        let mut ops = Vec::new();
        let mut st = self.lock();
        let r = build(&mut st, &mut ops);
        let ticket = self.store.push(slot, ops);
        then(&mut st, &r, ticket);
        drop(st);
        (r, ticket)
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.live.max_queued_messages(),
            max_bytes: self.live.max_queued_bytes(),
            memory_full: self.memory.exhausted(),
            stall_ms: self.live.subscriber_stall_ms(),
        }
    }

    /// Replaces the memory meter (tests of the `limits.max_memory` decisions).
    #[cfg(test)]
    pub(crate) fn set_memory_meter(&mut self, meter: fn() -> Option<usize>) {
        self.memory = MemoryBudget::with_meter(self.cfg.limits.max_memory, meter);
    }
}
