//! SUBSCRIBE and UNSUBSCRIBE: a session's filters change both in the session (stored with its
//! record) and in the subscription tree, always together. A new subscription queues the
//! retained messages it asks for, in the same commit as the subscription itself.

use std::sync::Arc;

use mqtt_proto::v5::SubscribeReasonCode;
use mqtt_proto::QoS;

use super::Broker;
use crate::message::now_ms;
use crate::storage::Ticket;
use crate::topic::{matches, split_shared, SubOptions};

/// Result of a SUBSCRIBE for one filter: the granted QoS, or why it was refused.
pub type SubResult = Result<QoS, SubscribeReasonCode>;

fn granted(qos: u8) -> QoS {
    match qos {
        0 => QoS::Level0,
        1 => QoS::Level1,
        _ => QoS::Level2,
    }
}

impl Broker {
    /// Adds subscriptions and queues the retained messages they ask for.
    pub async fn subscribe(
        &self,
        client: &Arc<str>,
        filters: Vec<(Arc<str>, SubOptions)>,
    ) -> (Vec<SubResult>, Option<Ticket>) {
        let now = now_ms();
        let limits = self.queue_limits();
        let max_subs = self.live.max_subscriptions_per_session();
        let asked = filters.len();
        let (results, ticket) = self
            .commit(|st, ops| {
                let s = st.sessions.get_mut(client)?;
                let mut results = Vec::with_capacity(filters.len());
                let mut retained_out = Vec::new();
                for (filter, opts) in filters {
                    let existed = match s.subscribe(filter.clone(), opts, max_subs) {
                        Ok(existed) => existed,
                        Err(code) => {
                            results.push(Err(code));
                            continue;
                        }
                    };
                    st.subs.insert(client, &filter, opts);
                    results.push(Ok(granted(opts.qos)));
                    let (group, f) = split_shared(&filter);
                    let send_retained = group.is_none()
                        && match opts.retain_handling {
                            0 => true,
                            1 => !existed,
                            _ => false,
                        };
                    if send_retained {
                        for m in st.retained.values() {
                            if matches(f, &m.topic) && !m.is_expired(now) && s.may_read(&m.topic) {
                                let ids = if opts.id != 0 { vec![opts.id] } else { vec![] };
                                retained_out.push((m.clone(), m.qos.min(opts.qos), ids));
                            }
                        }
                    }
                }
                if s.persistent() {
                    s.save(ops);
                }
                for (m, qos, ids) in retained_out {
                    s.enqueue(m, qos, true, ids, limits, ops);
                }
                Some(results)
            })
            .await;
        let results =
            results.unwrap_or_else(|| vec![Err(SubscribeReasonCode::UnspecifiedError); asked]);
        (results, ticket)
    }

    /// Removes subscriptions; `true` per filter that existed.
    pub async fn unsubscribe(
        &self,
        client: &Arc<str>,
        filters: &[Arc<str>],
    ) -> (Vec<bool>, Option<Ticket>) {
        let limits = self.queue_limits();
        self.commit(|st, ops| {
            let Some(s) = st.sessions.get_mut(client) else {
                return vec![false; filters.len()];
            };
            let mut out = Vec::with_capacity(filters.len());
            for f in filters {
                let existed = s.unsubscribe(f);
                if existed {
                    st.subs.remove(client, f);
                }
                out.push(existed);
            }
            if s.persistent() {
                s.save(ops);
            }
            if !out.is_empty() {
                s.notify_if_drained(limits);
            }
            out
        })
        .await
    }
}
