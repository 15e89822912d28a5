//! SUBSCRIBE from the client: checks each filter, adds the accepted ones to the session (the
//! broker queues their retained messages), and answers SUBACK once the change is stored, with
//! one reason code per filter in request order.

use std::sync::Arc;

use mqtt_proto::v5::{self, DisconnectReasonCode as Dr, Packet, SubscribeReasonCode as S};
use mqtt_proto::{Protocol, QoS};

use crate::auth::Access;
use crate::broker::SubResult;
use crate::config::DenyReason;
use crate::connection::replies::{Answer, Reply};
use crate::connection::{Close, Conn};
use crate::topic::SubOptions;

/// Last log of a denied subscription (rate limit).
static DENIED_LOG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(super) async fn handle_subscribe(
    conn: &Conn,
    s: v5::Subscribe,
) -> Result<Option<Answer>, Close> {
    let v5 = conn.proto == Protocol::V500;
    let limits = &conn.broker.cfg.limits;
    let id = s.properties.subscription_id.map(|v| v.value()).unwrap_or(0);
    let mut filters = Vec::new();
    // Per filter: refused here (with its code), or `None` when handed to the broker.
    let mut refused: Vec<Option<S>> = Vec::new();
    for (f, o) in &s.topics {
        if f.is_shared() && o.no_local {
            // [MQTT-3.8.3-4]: protocol error.
            return Err(Close::Broker {
                code: Dr::ProtocolError,
                why: "no local on a shared subscription",
            });
        }
        if f.is_shared() && !v5 && f.shared_filter().is_none() {
            refused.push(Some(S::TopicFilterInvalid));
            continue;
        }
        if !super::topic_fits(f, limits) {
            // 0x8F; MQTT 3 clients see 0x80.
            refused.push(Some(S::TopicFilterInvalid));
            continue;
        }
        if !conn.may(f, Access::Subscribe) {
            if crate::ratelog::allowed(&DENIED_LOG) {
                tracing::warn!(peer = %conn.peer, client_id = %conn.client_id, filter = %&**f,
                    "subscription denied by the ACL (further denials logged once a second)");
            }
            refused.push(Some(match conn.broker.cfg.auth.deny_reason {
                DenyReason::NotAuthorized => S::NotAuthorized,
                DenyReason::Unspecified => S::UnspecifiedError,
            }));
            continue;
        }
        refused.push(None);
        filters.push((
            Arc::from(&**f),
            SubOptions {
                qos: o.max_qos as u8,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: o.retain_handling as u8,
                id,
            },
        ));
    }
    let (results, ticket) = conn.broker.subscribe(&conn.client_id, filters).await;
    let mut results = results.into_iter();
    let codes = refused
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| reason_code(results.next().unwrap_or(Err(S::UnspecifiedError))))
        })
        .collect();
    let ack = Packet::Suback(v5::Suback::new(s.pid, codes));
    Ok(Some(Answer {
        ticket,
        reply: Reply::Other(Box::new(ack)),
        incoming_done: false,
    }))
}

/// The SUBACK code for the broker's answer on one filter.
fn reason_code(r: SubResult) -> S {
    match r {
        Ok(QoS::Level0) => S::GrantedQoS0,
        Ok(QoS::Level1) => S::GrantedQoS1,
        Ok(QoS::Level2) => S::GrantedQoS2,
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::{Pid, TopicFilter};

    fn subscribe(filter: &str, no_local: bool) -> v5::Subscribe {
        let mut opts = v5::SubscriptionOptions::new(QoS::Level1);
        opts.no_local = no_local;
        let f = TopicFilter::try_from(filter).expect("valid filter");
        v5::Subscribe::new(Pid::try_from(1).unwrap(), vec![(f, opts)])
    }

    #[test]
    fn no_local_on_a_shared_subscription_closes_with_protocol_error() {
        let t = test_support::conn(Protocol::V500, true);
        let got = smol::block_on(handle_subscribe(&t.conn, subscribe("$share/g/a", true)));
        assert!(matches!(
            got,
            Err(Close::Broker {
                code: Dr::ProtocolError,
                ..
            })
        ));
    }

    #[test]
    fn subscribe_is_acked_with_the_granted_qos() {
        let t = test_support::conn(Protocol::V500, true);
        let got = smol::block_on(handle_subscribe(&t.conn, subscribe("a/+", false)));
        let answer = got.unwrap().expect("a SUBACK");
        let suback = v5::Suback::new(Pid::try_from(1).unwrap(), vec![S::GrantedQoS1]);
        assert_eq!(answer.reply, Reply::Other(Box::new(Packet::Suback(suback))));
    }
}
