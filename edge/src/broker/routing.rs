//! An application message on its way in: store-and-forward admission, QoS 2 duplicate check,
//! retained store, and queueing for every matching session (one member per shared group,
//! online ones first, round robin). Routing happens under the broker lock, in one commit with
//! the publish's other ops, so the acknowledgement covers all of them.

use std::sync::Arc;

use mqtt_proto::Pid;

use super::{Broker, Congestion, State};
use crate::message::Message;
use crate::storage::{Op, Ticket};

/// Outcome of an incoming PUBLISH.
#[derive(Debug, Clone)]
pub enum Published {
    /// Routed; `matched` is false when no subscriber took it. `congested` names an online
    /// session over a water mark (its queue's, or the QoS 0 one for a QoS 0 delivery): the
    /// publisher should pause reading until that mark's `drained` event (flow control
    /// instead of dropping).
    Accepted {
        ticket: Option<Ticket>,
        matched: bool,
        congested: Option<Congestion>,
    },
    /// A QoS 2 packet id already received and not released: acknowledge again once `ticket`
    /// (which covers the first copy's commit) is on disk; nothing is routed.
    Duplicate { ticket: Option<Ticket> },
    /// The outbox is full and its policy is `reject_new`.
    QuotaExceeded,
    /// The publisher's session is gone (taken over meanwhile): nothing was stored, so nothing
    /// may be acknowledged.
    SessionGone,
}

impl Broker {
    /// Routes an incoming application message; for QoS 2 also records the packet id.
    pub async fn publish(
        &self,
        msg: Arc<Message>,
        qos2_from: Option<(&Arc<str>, Pid)>,
    ) -> Published {
        let forward = self
            .forwarder
            .get()
            .filter(|f| !msg.from_downlink && f.wants(&msg.topic, msg.qos));
        if let Some(f) = &forward {
            if !f.admit(&msg.topic, msg.payload.len()) {
                self.stats.dropped(crate::stats::Dropped::QuotaExceeded);
                return Published::QuotaExceeded;
            }
        }
        let (routed, ticket) = self
            .commit(|st, ops| {
                if let Some((client, pid)) = qos2_from {
                    let Some(s) = st.sessions.get_mut(client) else {
                        return Err(Published::SessionGone);
                    };
                    if !s.receive_qos2(pid, ops) {
                        let ticket = self.store.latest_ticket();
                        return Err(Published::Duplicate { ticket });
                    }
                }
                if msg.retain {
                    self.retain(st, &msg, ops);
                }
                if forward.is_some() {
                    ops.push(Op::Capture(msg.clone()));
                }
                Ok(self.route(st, msg, ops))
            })
            .await;
        match routed {
            Ok((matched, congested)) => Published::Accepted {
                ticket,
                matched,
                congested,
            },
            Err(not_routed) => not_routed,
        }
    }

    /// Stores (or, with an empty payload, clears) the retained message of `msg.topic`, up to
    /// `limits.max_retained_messages` topics.
    pub(super) fn retain(&self, st: &mut State, msg: &Arc<Message>, ops: &mut Vec<Op>) {
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
            && st.retained.len().saturating_sub(st.sys_retained)
                >= self.live.max_retained_messages()
        {
            tracing::warn!(topic = %msg.topic, limit = self.live.max_retained_messages(),
                "retained message not stored: limits.max_retained_messages reached");
            self.stats.dropped(crate::stats::Dropped::RetainedLimit);
            return;
        }
        st.retained.insert(msg.topic.clone(), msg.clone());
        ops.push(Op::Retain {
            topic: msg.topic.clone(),
            msg: Some(msg.clone()),
        });
    }

    /// Queues `msg` for every matching session. Returns whether anyone matched, and the first
    /// online subscriber it made congested.
    pub(super) fn route(
        &self,
        st: &mut State,
        msg: Arc<Message>,
        ops: &mut Vec<Op>,
    ) -> (bool, Option<Congestion>) {
        let limits = self.queue_limits();
        let (direct, shared) = st.subs.collect(&msg.topic);
        let mut matched = false;
        let mut congested = None;
        for (client, t) in direct {
            if t.no_local && client == msg.publisher {
                continue;
            }
            let retain = t.retain_as_published && msg.retain;
            if let Some(s) = st.sessions.get_mut(&client) {
                if !s.may_read_cached(&msg.topic) {
                    continue;
                }
                matched = true;
                let qos = msg.qos.min(t.qos);
                let dropped = s.queue_figures().dropped;
                if let Some(mark) = s.enqueue(msg.clone(), qos, retain, t.sub_ids, limits, ops) {
                    congested.get_or_insert_with(|| s.congestion(mark));
                }
                self.count_queue_drops(dropped, s.queue_figures().dropped);
            }
        }
        for group in shared {
            // Prefer online members, round robin among them.
            let online: Vec<_> = group
                .members
                .iter()
                .filter(|(c, _)| {
                    st.sessions
                        .get(c)
                        .is_some_and(|s| s.online() && s.may_read(&msg.topic))
                })
                .collect();
            let pool: Vec<_> = if online.is_empty() {
                group
                    .members
                    .iter()
                    .filter(|(c, _)| st.sessions.get(c).is_some_and(|s| s.may_read(&msg.topic)))
                    .collect()
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
                let dropped = s.queue_figures().dropped;
                let qos = msg.qos.min(opts.qos);
                if let Some(mark) = s.enqueue(msg.clone(), qos, false, ids, limits, ops) {
                    congested.get_or_insert_with(|| s.congestion(mark));
                }
                self.count_queue_drops(dropped, s.queue_figures().dropped);
            }
        }
        if congested.is_none() && matched {
            congested = self.memory_congestion();
        }
        (matched, congested)
    }
}
