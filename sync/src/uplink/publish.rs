//! The PUBLISH for an outbox record: the record's own properties plus `edge-msg-id` =
//! `<node_id>:<sequence>` (last), QoS clamped to 1..=the upstream's maximum, and the remaining
//! time to live as Message Expiry (whole seconds, at least 1).

use super::MSG_ID_PROPERTY;
use crate::client::OutPublish;
use crate::outbox::Record;

/// The record's time to live ran out at `now_ms`.
pub(super) fn expired(rec: &Record, now_ms: u64) -> bool {
    rec.expires_at_ms != 0 && rec.expires_at_ms <= now_ms
}

/// User properties sent with the record.
pub(super) fn properties(rec: &Record, node_id: &str, seq: u64) -> Vec<(String, String)> {
    let mut props = rec.user_properties.clone();
    props.push((MSG_ID_PROPERTY.to_string(), format!("{node_id}:{seq}")));
    props
}

/// The PUBLISH of a record that has not expired at `now_ms`; `pid` 0 stands for "not assigned
/// yet" and is encoded as 1 (the length does not depend on it).
pub(super) fn out<'r>(
    rec: &'r Record,
    props: &'r [(String, String)],
    max_qos: u8,
    pid: u16,
    dup: bool,
    now_ms: u64,
) -> OutPublish<'r> {
    let expiry = (rec.expires_at_ms != 0).then(|| {
        ((rec.expires_at_ms - now_ms) / 1000)
            .max(1)
            .min(u32::MAX as u64) as u32
    });
    OutPublish {
        topic: &rec.topic,
        payload: &rec.payload,
        qos: rec.qos.clamp(1, max_qos.max(1)),
        pid: if pid == 0 { 1 } else { pid },
        dup,
        retain: rec.retain,
        user_properties: props,
        content_type: rec.content_type.as_deref(),
        message_expiry_secs: expiry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(qos: u8, expires_at_ms: u64) -> Record {
        Record {
            topic: "stores/n1/a".into(),
            payload: b"x".to_vec(),
            qos,
            retain: true,
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            received_at_ms: 1,
            expires_at_ms,
        }
    }

    #[test]
    fn message_id_property_comes_last() {
        let p = properties(&rec(1, 0), "n1", 42);
        assert_eq!(
            p,
            vec![
                ("k".to_string(), "v".to_string()),
                (MSG_ID_PROPERTY.to_string(), "n1:42".to_string())
            ]
        );
    }

    #[test]
    fn qos_is_clamped_to_the_upstream_maximum_and_at_least_1() {
        let props = [];
        let q = |qos, max| out(&rec(qos, 0), &props, max, 5, false, 0).qos;
        assert_eq!(q(2, 2), 2);
        assert_eq!(q(2, 1), 1);
        assert_eq!(q(2, 0), 1, "max QoS 0 upstream: still QoS 1");
        assert_eq!(q(0, 2), 1);
    }

    #[test]
    fn expiry_is_the_remaining_ttl_in_whole_seconds_at_least_1() {
        let props = [];
        let e = |at, now| out(&rec(1, at), &props, 2, 5, false, now).message_expiry_secs;
        assert_eq!(e(0, 1000), None);
        assert_eq!(e(10_999, 1000), Some(9));
        assert_eq!(e(1500, 1000), Some(1));
        assert!(expired(&rec(1, 1000), 1000));
        assert!(!expired(&rec(1, 1001), 1000));
        assert!(!expired(&rec(1, 0), u64::MAX));
    }

    #[test]
    fn fields_and_placeholder_packet_id() {
        let r = rec(1, 0);
        let props = properties(&r, "n1", 1);
        let o = out(&r, &props, 2, 0, true, 0);
        assert_eq!((o.pid, o.dup, o.retain), (1, true, true));
        assert_eq!((o.topic, o.payload), ("stores/n1/a", &b"x"[..]));
        assert_eq!(o.content_type, Some("text/plain"));
        assert_eq!(out(&r, &props, 2, 9, false, 0).pid, 9);
    }
}
