//! Messages on their way out, as a connection's writer and reader see them: what to send next,
//! the client's acknowledgements (both directions of QoS 1/2), and publisher flow control. The
//! queue and in-flight rules themselves are `Session` methods; these entry points only find
//! the session (ignoring a connection that was taken over) and commit what it changed.

use std::sync::Arc;

use event_listener::Event;
use mqtt_proto::{Pid, QosPid};

use super::Broker;
use crate::message::{now_ms, Message};
use crate::storage::Ticket;

/// A subscriber that cannot keep up, for the publisher to wait on.
#[derive(Debug, Clone)]
pub struct Congestion {
    pub client_id: Arc<str>,
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
    pub async fn take_outgoing(
        &self,
        client: &Arc<str>,
        conn_id: u64,
        max: usize,
    ) -> (Vec<Outgoing>, Option<Ticket>) {
        let now = now_ms();
        let limits = self.queue_limits();
        self.commit(|st, ops| match st.sessions.get_mut(client) {
            Some(s) if s.is_attached_to(conn_id) => s.take_outgoing(max, now, limits, ops),
            _ => Vec::new(),
        })
        .await
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) from the client: the delivery is complete.
    /// Also used to drop a delivery the client cannot receive (too large for it).
    pub async fn complete(&self, client: &Arc<str>, pid: Pid) -> bool {
        self.commit(|st, ops| {
            st.sessions
                .get_mut(client)
                .is_some_and(|s| s.complete(pid, ops))
        })
        .await
        .0
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

    /// Whether a session is still over its high-water mark (publishers re-check after
    /// registering for `drained`, so that no wake-up is lost).
    pub fn congested(&self, client: &Arc<str>) -> bool {
        let limits = self.queue_limits();
        self.lock()
            .sessions
            .get(client)
            .is_some_and(|s| s.congested(limits))
    }
}
