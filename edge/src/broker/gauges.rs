//! Figures read from the broker state for statistics (sessions, queues, subscriptions,
//! retained), taken under the broker lock in one pass, and the `$SYS` publish path: retained in
//! memory only and delivered at QoS 0, so it never writes to disk (no flash wear every
//! `sys_interval`).

use std::sync::Arc;

use super::Broker;
use crate::message::{now_ms, Message};
use crate::stats::Dropped;

/// Broker-wide figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Gauges {
    pub sessions_online: u64,
    /// Persistent sessions without a connection (kept for their expiry interval).
    pub sessions_offline_persistent: u64,
    /// Messages waiting in session queues (not yet sent).
    pub queued_messages: u64,
    pub queued_bytes: u64,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight_messages: u64,
    /// Subscriptions of all sessions (a filter counts once per session).
    pub subscriptions: u64,
    pub retained_messages: u64,
}

impl Broker {
    /// Walks every session once under the lock (O(sessions), for scrapes, not per message).
    pub fn gauges(&self) -> Gauges {
        let st = self.lock();
        let mut g = Gauges {
            retained_messages: st.retained.len() as u64,
            ..Gauges::default()
        };
        for s in st.sessions.values() {
            if s.online() {
                g.sessions_online += 1;
            } else if s.persistent() {
                g.sessions_offline_persistent += 1;
            }
            let q = s.queue_figures();
            g.queued_messages += q.queued as u64;
            g.queued_bytes += q.queued_bytes;
            g.inflight_messages += q.inflight as u64;
            g.subscriptions += s.subscriptions().count() as u64;
        }
        g
    }

    /// Publishes broker-generated `$SYS` messages: kept as retained messages in memory only and
    /// routed at QoS 0 (nothing is written to disk). Clients can never publish on `$SYS`.
    pub fn publish_sys(&self, messages: Vec<(String, String)>) {
        let now = now_ms();
        let mut ops = Vec::new();
        let mut st = self.lock();
        for (topic, payload) in messages {
            let msg = Arc::new(Message {
                topic: Arc::from(topic),
                payload: payload.into(),
                qos: 0,
                retain: true,
                received_ms: now,
                expiry_secs: None,
                publisher: Arc::from(""),
                // Broker-generated: never captured by store-and-forward.
                from_downlink: true,
                props: None,
            });
            if st.retained.insert(msg.topic.clone(), msg.clone()).is_none() {
                st.sys_retained += 1;
            }
            self.route(&mut st, msg, &mut ops);
        }
        drop(st);
        // QoS 0 deliveries and in-memory retained messages produce no ops.
        debug_assert!(ops.is_empty());
    }

    /// Counts the drops of `enqueue`s (queue full) as seen through the session's counter.
    pub(super) fn count_queue_drops(&self, before: u64, after: u64) {
        if after > before {
            self.stats.dropped_n(Dropped::QueueFull, after - before);
        }
    }
}
