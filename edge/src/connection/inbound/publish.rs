//! PUBLISH from the client: resolve its topic alias, store and route the message, and answer
//! with PUBACK (QoS 1) or PUBREC (QoS 2) once what it promises is on disk. Nothing that was not
//! stored is acknowledged; a QoS 1/2 publish counts against our Receive Maximum until answered.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use mqtt_proto::v5::{self, DisconnectReasonCode as Dr};
use mqtt_proto::{Protocol, QoS, QosPid, TopicName};

use crate::broker::{Congestion, Published};
use crate::config::DenyReason;
use crate::connection::replies::{Answer, Reply};
use crate::connection::{Close, Conn};
use crate::message::{now_ms, Message, MessageProps};

/// Longest pause of a publisher for one slow subscriber; past it, the subscriber's queue bound
/// applies (messages beyond it are dropped and logged).
const CONGESTION_WAIT: Duration = Duration::from_secs(5);
/// How often a paused publisher re-checks why it waits (see [`wait_if_congested`]), at most.
const CONGESTION_CHECK: Duration = Duration::from_secs(1);

/// How often a paused publisher re-checks its cause: [`CONGESTION_CHECK`], or the stall time
/// (`limits.subscriber_stall_ms`) when that is shorter, so a publisher held by a subscriber
/// that stalls goes on within about twice the stall time.
fn recheck_every(stall_ms: u64) -> Duration {
    CONGESTION_CHECK.min(Duration::from_millis(stall_ms))
}

/// What the connection keeps from one PUBLISH to the next, and its topic aliases both ways:
/// one box, allocated by the first alias or congestion and freed when none is left (8 bytes
/// in every idle connection; the three apart took 24).
#[derive(Default)]
pub(in crate::connection) struct PublishState {
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// Client -> server topic aliases.
    aliases: HashMap<u16, Arc<str>>,
    /// A subscriber of the last message that is falling behind, to wait for before reading on.
    congested: Option<Congestion>,
    /// Server -> client topic aliases, lent to the encoder during busy phases.
    out_aliases: crate::connection::outbound::Aliases,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.congested.is_none() && self.out_aliases.is_none()
    }
}

impl PublishState {
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    fn trim(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// The server -> client aliases, for the encoder of a busy phase.
    pub(in crate::connection) fn take_out_aliases(
        &mut self,
    ) -> crate::connection::outbound::Aliases {
        let a = self.rare.as_mut().and_then(|r| r.out_aliases.take());
        self.trim();
        a
    }

    /// The server -> client aliases back from the encoder.
    pub(in crate::connection) fn put_out_aliases(
        &mut self,
        a: crate::connection::outbound::Aliases,
    ) {
        if a.is_some() {
            self.rare_mut().out_aliases = a;
        }
    }

    fn set_congested(&mut self, c: Option<Congestion>) {
        match c {
            Some(c) => self.rare_mut().congested = Some(c),
            None => {
                if let Some(r) = &mut self.rare {
                    r.congested = None;
                }
                self.trim();
            }
        }
    }

    fn take_congested(&mut self) -> Option<Congestion> {
        let c = self.rare.as_mut()?.congested.take();
        self.trim();
        c
    }
}

/// How the broker took a publish, as the reason code of PUBACK or PUBREC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    NoMatchingSubscribers,
    QuotaExceeded,
    /// The ACL does not let this client publish on the topic (`[auth] deny_reason`).
    Denied(DenyReason),
}

impl Outcome {
    fn puback(self) -> v5::PubackReasonCode {
        match self {
            Outcome::Success => v5::PubackReasonCode::Success,
            Outcome::NoMatchingSubscribers => v5::PubackReasonCode::NoMatchingSubscribers,
            Outcome::QuotaExceeded => v5::PubackReasonCode::QuotaExceeded,
            Outcome::Denied(DenyReason::NotAuthorized) => v5::PubackReasonCode::NotAuthorized,
            Outcome::Denied(DenyReason::Unspecified) => v5::PubackReasonCode::UnspecifiedError,
        }
    }

    fn pubrec(self) -> v5::PubrecReasonCode {
        match self {
            Outcome::Success => v5::PubrecReasonCode::Success,
            Outcome::NoMatchingSubscribers => v5::PubrecReasonCode::NoMatchingSubscribers,
            Outcome::QuotaExceeded => v5::PubrecReasonCode::QuotaExceeded,
            Outcome::Denied(DenyReason::NotAuthorized) => v5::PubrecReasonCode::NotAuthorized,
            Outcome::Denied(DenyReason::Unspecified) => v5::PubrecReasonCode::UnspecifiedError,
        }
    }
}

/// The answer to a publish the broker took without storing anything: PUBACK or PUBREC with
/// `outcome` (the exchange of our Receive Maximum ends there), nothing for QoS 0.
fn not_stored(qos_pid: QosPid, outcome: Outcome) -> Option<Answer> {
    let reply = match qos_pid {
        QosPid::Level0 => return None,
        QosPid::Level1(pid) => Reply::Puback(pid, outcome.puback()),
        QosPid::Level2(pid) => Reply::Pubrec(pid, outcome.pubrec()),
    };
    Some(Answer {
        ticket: None,
        reply,
        incoming_done: true,
    })
}

/// Last log of a denied publish (rate limit).
static DENIED_LOG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn close(code: Dr, why: &'static str) -> Close {
    Close::Broker { code, why }
}

pub(super) async fn handle_publish(
    conn: &Conn,
    st: &mut PublishState,
    mut p: v5::Publish,
) -> Result<Option<Answer>, Close> {
    let limits = &conn.broker.cfg.limits;
    let v5 = conn.proto == Protocol::V500;
    let qos = p.qos_pid.qos();
    conn.broker
        .stats
        .publish_received(qos as u8, p.payload.len());
    if qos != QoS::Level0 {
        let n = conn.incoming_unacked.fetch_add(1, Ordering::AcqRel) + 1;
        if n > limits.receive_maximum as u32 {
            return Err(close(
                Dr::ReceiveMaximumExceeded,
                "receive maximum exceeded",
            ));
        }
    }
    let topic = resolve_topic(st, limits.topic_alias_maximum, &p)?;
    if topic.starts_with("$share/") && v5 {
        return Err(close(Dr::TopicNameInvalid, "publish to a $share topic"));
    }
    if !super::topic_fits(&topic, limits) {
        return Err(close(
            Dr::TopicNameInvalid,
            "topic over limits.max_topic_length or max_topic_levels",
        ));
    }
    if !conn.may_write(&topic) {
        conn.broker
            .stats
            .dropped(crate::stats::Dropped::NotAuthorized);
        if crate::ratelog::allowed(&DENIED_LOG) {
            tracing::warn!(peer = %conn.peer, client_id = %conn.client_id, %topic,
                "publish denied by the ACL (dropped; further denials logged once a second)");
        }
        // v5: PUBACK/PUBREC 0x87 (or 0x80, `[auth] deny_reason`). MQTT 3 has no negative
        // acknowledgement: acknowledged and dropped, as mosquitto does.
        let outcome = if v5 {
            Outcome::Denied(conn.broker.cfg.auth.deny_reason)
        } else {
            Outcome::Success
        };
        // Nothing is recorded: for a v3 QoS 2 publish the client's PUBREL is then answered as
        // an unknown packet id (a PUBCOMP all the same).
        return Ok(not_stored(p.qos_pid, outcome));
    }
    if qos != QoS::Level0 && conn.broker.store.disk_full().is_full() {
        return refuse_disk_full(conn, v5, p.qos_pid);
    }
    // Moved, not cloned: a first clone of a buffer-backed payload allocates its shared header.
    let payload = std::mem::take(&mut p.payload);
    let pr = &p.properties;
    let msg = Arc::new(Message {
        topic,
        payload,
        qos: qos as u8,
        retain: p.retain,
        received_ms: now_ms(),
        expiry_secs: pr.message_expiry_interval,
        publisher: conn.client_id.clone(),
        from_downlink: false,
        props: message_props(
            pr.payload_is_utf8,
            &pr.response_topic,
            &pr.correlation_data,
            &pr.user_properties,
            &pr.content_type,
        ),
    });
    let qos2_from = match p.qos_pid {
        QosPid::Level2(pid) => Some((&conn.client_id, pid)),
        _ => None,
    };
    let (ticket, outcome, duplicate) = match conn.broker.publish(msg, qos2_from).await {
        Published::Duplicate { ticket } => (ticket, Outcome::Success, true),
        Published::Accepted {
            ticket,
            matched,
            congested,
        } => {
            st.set_congested(congested);
            let outcome = if matched {
                Outcome::Success
            } else {
                Outcome::NoMatchingSubscribers
            };
            (ticket, outcome, false)
        }
        Published::QuotaExceeded => (None, Outcome::QuotaExceeded, false),
        Published::SessionGone => return Err(Close::Silent),
    };
    if outcome == Outcome::QuotaExceeded && !v5 && qos != QoS::Level0 {
        // MQTT 3 has no negative acknowledgement: closing tells the publisher.
        return Err(close(Dr::QuotaExceeded, "sync outbox full (reject_new)"));
    }
    Ok(match p.qos_pid {
        QosPid::Level0 => None,
        QosPid::Level1(pid) => Some(Answer {
            ticket,
            reply: Reply::Puback(pid, outcome.puback()),
            incoming_done: true,
        }),
        QosPid::Level2(pid) => {
            if duplicate {
                // A duplicate does not open a new incoming slot.
                conn.incoming_done();
            }
            Some(Answer {
                ticket,
                reply: Reply::Pubrec(pid, outcome.pubrec()),
                // A refused QoS 2 publish ends at its PUBREC: no PUBREL will follow.
                incoming_done: outcome == Outcome::QuotaExceeded,
            })
        }
    })
}

/// A QoS 1/2 publish while storage waits for disk space: it could not be stored, so it is not
/// acknowledged. v5: PUBACK/PUBREC 0x97 Quota exceeded (a capacity limit the client may retry
/// after, as for a full sync outbox; 0x80 Unspecified error stays for real storage failures).
/// MQTT 3 has no negative acknowledgement: the connection is closed without one, as mosquitto
/// does when it cannot store a message, and the client resends after reconnecting.
fn refuse_disk_full(conn: &Conn, v5: bool, qos_pid: QosPid) -> Result<Option<Answer>, Close> {
    conn.broker
        .store
        .disk_full()
        .note_refused_publish(&conn.client_id);
    if !v5 {
        return Err(close(Dr::QuotaExceeded, "disk full"));
    }
    Ok(not_stored(qos_pid, Outcome::QuotaExceeded))
}

/// The topic of `p`, through its topic alias (client -> server) when it carries one.
fn resolve_topic(
    st: &mut PublishState,
    alias_max: u16,
    p: &v5::Publish,
) -> Result<Arc<str>, Close> {
    match p.properties.topic_alias {
        Some(0) => Err(close(Dr::TopicAliasInvalid, "topic alias 0")),
        Some(a) if a > alias_max => Err(close(Dr::TopicAliasInvalid, "topic alias above maximum")),
        Some(a) if p.topic_name.is_empty() => {
            match st.rare.as_ref().and_then(|r| r.aliases.get(&a)) {
                Some(t) => Ok(t.clone()),
                None => Err(close(Dr::ProtocolError, "unknown topic alias")),
            }
        }
        Some(a) => {
            let t = p.topic_name.as_arc().clone();
            st.rare_mut().aliases.insert(a, t.clone());
            Ok(t)
        }
        None if p.topic_name.is_empty() => {
            Err(close(Dr::ProtocolError, "empty topic without alias"))
        }
        // The decoded topic's own allocation (no copy per message).
        None => Ok(p.topic_name.as_arc().clone()),
    }
}

/// Flow control: when a subscriber of the last message is falling behind, stop reading from
/// this publisher until it catches up (at most [`CONGESTION_WAIT`]), so that an online
/// subscriber's queue does not overflow and drop messages. The cause is re-checked every
/// [`recheck_every`]: a subscriber that stalls meanwhile (`session/flow.rs`,
/// `limits.subscriber_stall_ms`) stops holding the publisher.
pub(super) async fn wait_if_congested(conn: &Conn, st: &mut PublishState) {
    let Some(c) = st.take_congested() else {
        return;
    };
    let until = std::time::Instant::now() + CONGESTION_WAIT;
    let check = recheck_every(conn.broker.live.subscriber_stall_ms());
    loop {
        let drained = c.drained.listen();
        if !conn.broker.congested(&c) {
            return;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let woken = async {
            drained.await;
            true
        }
        .or(async {
            smol::Timer::after(left.min(check)).await;
            false
        })
        .await;
        if woken {
            return;
        }
    }
}

/// The v5 properties a message keeps (publish and will); `None` when it has none.
pub(in crate::connection) fn message_props(
    utf8: Option<bool>,
    response_topic: &Option<TopicName>,
    correlation: &Option<Bytes>,
    user: &[v5::UserProperty],
    content_type: &Option<Arc<str>>,
) -> Option<Box<MessageProps>> {
    if utf8.is_none()
        && response_topic.is_none()
        && correlation.is_none()
        && user.is_empty()
        && content_type.is_none()
    {
        return None;
    }
    Some(Box::new(MessageProps {
        payload_is_utf8: utf8,
        response_topic: response_topic.as_ref().map(|t| Arc::from(&**t)),
        correlation_data: correlation.clone(),
        user_properties: user
            .iter()
            .map(|u| (u.name.clone(), u.value.clone()))
            .collect(),
        content_type: content_type.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::Pid;

    #[test]
    fn a_paused_publisher_rechecks_every_second_or_every_stall_time_when_shorter() {
        assert_eq!(recheck_every(2000), CONGESTION_CHECK);
        assert_eq!(recheck_every(300), Duration::from_millis(300));
        assert_eq!(recheck_every(3_600_000), CONGESTION_CHECK);
    }

    fn publish(topic: &str, qos_pid: QosPid, alias: Option<u16>) -> v5::Publish {
        let topic = TopicName::try_from(topic).expect("valid topic");
        let mut p = v5::Publish::new(qos_pid, topic, Bytes::from_static(b"x"));
        p.properties.topic_alias = alias;
        p
    }

    fn run(conn: &Conn, st: &mut PublishState, p: v5::Publish) -> Result<Option<Answer>, Close> {
        smol::block_on(handle_publish(conn, st, p))
    }

    fn pid(n: u16) -> Pid {
        Pid::try_from(n).expect("non-zero pid")
    }

    #[test]
    fn a_publish_the_client_may_not_write_is_refused_in_v5_and_dropped_in_v3() {
        let t = test_support::conn(Protocol::V500, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("$SYS/x", QosPid::Level1(pid(1)), None),
        );
        let answer = got.unwrap().expect("a PUBACK");
        assert_eq!(
            answer.reply,
            Reply::Puback(pid(1), v5::PubackReasonCode::NotAuthorized)
        );
        let t = test_support::conn(Protocol::V311, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("$SYS/x", QosPid::Level2(pid(2)), None),
        );
        let answer = got.unwrap().expect("a PUBREC");
        assert_eq!(
            answer.reply,
            Reply::Pubrec(pid(2), v5::PubrecReasonCode::Success)
        );
        assert!(
            answer.incoming_done,
            "the Receive Maximum slot is freed at the PUBREC"
        );
    }

    #[test]
    fn a_publish_keeps_the_decoded_topic_without_copying_it() {
        let mut st = PublishState::default();
        for alias in [None, Some(3)] {
            let p = publish("a/b", QosPid::Level1(pid(1)), alias);
            let topic = resolve_topic(&mut st, 10, &p).expect("a topic");
            assert!(
                Arc::ptr_eq(&topic, p.topic_name.as_arc()),
                "alias {alias:?}"
            );
        }
    }

    #[test]
    fn a_topic_over_the_length_or_level_limit_closes_with_topic_name_invalid() {
        let t = test_support::conn(Protocol::V500, true);
        let long = "a".repeat(t.conn.broker.cfg.limits.max_topic_length + 1);
        let deep = vec!["a"; t.conn.broker.cfg.limits.max_topic_levels + 1].join("/");
        for topic in [long, deep] {
            let got = run(
                &t.conn,
                &mut PublishState::default(),
                publish(&topic, QosPid::Level0, None),
            );
            assert!(matches!(
                got,
                Err(Close::Broker {
                    code: Dr::TopicNameInvalid,
                    ..
                })
            ));
        }
    }

    #[test]
    fn topic_alias_zero_closes_with_topic_alias_invalid() {
        let t = test_support::conn(Protocol::V500, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("a", QosPid::Level0, Some(0)),
        );
        assert_eq!(got, Err(close(Dr::TopicAliasInvalid, "topic alias 0")));
    }

    #[test]
    fn topic_alias_above_our_maximum_closes_with_topic_alias_invalid() {
        let t = test_support::conn(Protocol::V500, true);
        let max = t.conn.broker.cfg.limits.topic_alias_maximum;
        let p = publish("a", QosPid::Level0, Some(max + 1));
        let got = run(&t.conn, &mut PublishState::default(), p);
        assert!(matches!(
            got,
            Err(Close::Broker {
                code: Dr::TopicAliasInvalid,
                ..
            })
        ));
    }

    #[test]
    fn unknown_topic_alias_closes_with_protocol_error() {
        let t = test_support::conn(Protocol::V500, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("", QosPid::Level0, Some(3)),
        );
        assert_eq!(got, Err(close(Dr::ProtocolError, "unknown topic alias")));
    }

    #[test]
    fn an_alias_set_by_one_publish_names_the_topic_of_the_next() {
        let mut st = PublishState::default();
        let first = publish("sensors/t", QosPid::Level0, Some(2));
        assert_eq!(&*resolve_topic(&mut st, 10, &first).unwrap(), "sensors/t");
        let second = publish("", QosPid::Level0, Some(2));
        assert_eq!(&*resolve_topic(&mut st, 10, &second).unwrap(), "sensors/t");
    }

    /// The aliases both ways and the congestion wait share one box, there only while one of
    /// them is.
    #[test]
    fn the_publish_state_box_exists_only_while_an_alias_or_congestion_does() {
        let mut st = PublishState::default();
        assert!(st.rare.is_none());
        st.set_congested(None);
        assert!(st.rare.is_none(), "no congestion: nothing allocated");
        let mut out: crate::connection::outbound::Aliases = Some(Default::default());
        if let Some(m) = &mut out {
            m.insert(Arc::from("t"), 1);
        }
        st.put_out_aliases(out);
        assert!(st.rare.is_some());
        let lent = st.take_out_aliases();
        assert!(lent.as_ref().is_some_and(|m| m.len() == 1));
        assert!(st.rare.is_none(), "freed while lent to the encoder");
        st.put_out_aliases(None);
        assert!(st.rare.is_none());
        st.put_out_aliases(lent);
        assert!(st.take_congested().is_none());
        assert!(
            st.take_out_aliases().is_some(),
            "kept across a congestion check"
        );
    }

    #[test]
    fn empty_topic_without_alias_closes_with_protocol_error() {
        let t = test_support::conn(Protocol::V500, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("", QosPid::Level0, None),
        );
        assert_eq!(
            got,
            Err(close(Dr::ProtocolError, "empty topic without alias"))
        );
    }

    #[test]
    fn v5_publish_to_a_share_topic_closes_with_topic_name_invalid() {
        let t = test_support::conn(Protocol::V500, true);
        let p = publish("$share/g/t", QosPid::Level0, None);
        let got = run(&t.conn, &mut PublishState::default(), p);
        assert!(matches!(
            got,
            Err(Close::Broker {
                code: Dr::TopicNameInvalid,
                ..
            })
        ));
    }

    #[test]
    fn qos1_publish_past_receive_maximum_closes_with_receive_maximum_exceeded() {
        let t = test_support::conn(Protocol::V500, true);
        let max = t.conn.broker.cfg.limits.receive_maximum as u32;
        t.conn.incoming_unacked.store(max, Ordering::Release);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("a", QosPid::Level1(pid(1)), None),
        );
        assert!(matches!(
            got,
            Err(Close::Broker {
                code: Dr::ReceiveMaximumExceeded,
                ..
            })
        ));
    }

    #[test]
    fn qos1_publish_without_subscribers_is_acked_with_no_matching_subscribers() {
        let t = test_support::conn(Protocol::V500, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("a", QosPid::Level1(pid(5)), None),
        );
        let answer = got.expect("accepted").expect("a PUBACK");
        assert_eq!(
            answer.reply,
            Reply::Puback(pid(5), v5::PubackReasonCode::NoMatchingSubscribers)
        );
        assert!(answer.incoming_done);
    }

    #[test]
    fn qos2_publish_of_a_gone_session_ends_silently_without_pubrec() {
        let t = test_support::conn(Protocol::V500, false);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("a", QosPid::Level2(pid(9)), None),
        );
        assert_eq!(got, Err(Close::Silent));
    }

    #[test]
    fn while_the_disk_is_full_qos1_and_qos2_get_quota_exceeded_in_v5_and_qos0_passes() {
        let t = test_support::conn(Protocol::V500, true);
        let full = t.conn.broker.store.disk_full().clone();
        full.mark_full(&std::io::Error::from_raw_os_error(libc::ENOSPC));
        let mut st = PublishState::default();
        let got = run(&t.conn, &mut st, publish("a", QosPid::Level1(pid(1)), None));
        let answer = got.expect("answered").expect("a PUBACK");
        assert_eq!(
            answer,
            Answer {
                ticket: None,
                reply: Reply::Puback(pid(1), v5::PubackReasonCode::QuotaExceeded),
                incoming_done: true,
            }
        );
        let got = run(&t.conn, &mut st, publish("a", QosPid::Level2(pid(2)), None));
        let answer = got.expect("answered").expect("a PUBREC");
        assert_eq!(
            answer.reply,
            Reply::Pubrec(pid(2), v5::PubrecReasonCode::QuotaExceeded)
        );
        assert!(answer.incoming_done, "no PUBREL follows a refused QoS 2");
        assert_eq!(
            run(&t.conn, &mut st, publish("a", QosPid::Level0, None)),
            Ok(None)
        );
        assert_eq!(full.refused_publishes_total(), 2);
        full.mark_space_returned();
        let got = run(&t.conn, &mut st, publish("a", QosPid::Level1(pid(3)), None));
        assert!(matches!(
            got,
            Ok(Some(Answer {
                reply: Reply::Puback(_, v5::PubackReasonCode::NoMatchingSubscribers),
                ..
            }))
        ));
    }

    #[test]
    fn while_the_disk_is_full_a_v3_qos1_publish_closes_the_connection_without_puback() {
        let t = test_support::conn(Protocol::V311, true);
        let full = t.conn.broker.store.disk_full();
        full.mark_full(&std::io::Error::from_raw_os_error(libc::ENOSPC));
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("a", QosPid::Level1(pid(1)), None),
        );
        assert_eq!(got, Err(close(Dr::QuotaExceeded, "disk full")));
    }

    #[test]
    fn qos0_publish_gets_no_answer() {
        let t = test_support::conn(Protocol::V311, true);
        let got = run(
            &t.conn,
            &mut PublishState::default(),
            publish("a", QosPid::Level0, None),
        );
        assert_eq!(got, Ok(None));
    }
}
