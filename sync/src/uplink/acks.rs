//! What an acknowledgement does to the bookkeeping: PUBACK/PUBCOMP moves a record from the window
//! to the removal batch; a refusal either drops it for good (the message itself is bad: topic
//! name invalid 0x90, packet too large 0x95, payload format invalid 0x99) or ends the session so
//! it is retried; a refused downlink subscription is logged and reported as the last error.

use edge_mqtt::reason::Code;
use mqtt_proto::v5::{DisconnectReasonCode, PubackReasonCode, SubscribeReasonCode};

use super::removal::Removals;
use super::window::Window;
use crate::client::AckCode;
use crate::error::SyncError;
use crate::outbox::DropReason;
use crate::status::Live;
use crate::topic::CompiledDownlink;

/// PUBACK (success) or PUBCOMP for `pid`.
pub(super) fn acked(window: &mut Window<'_>, removals: &mut Removals, pid: u16) {
    match window.complete(pid) {
        Some(key) => removals.acked(key),
        None => tracing::debug!(pid, "ack for an unknown packet id ignored"),
    }
}

/// A refusal that no retry can turn into a success: the message itself is bad.
fn is_permanent(code: AckCode) -> bool {
    match code {
        Code::Known(c) => matches!(
            c,
            PubackReasonCode::TopicNameInvalid | PubackReasonCode::PayloadFormatInvalid
        ),
        // Packet too large is no PUBACK code in MQTT 5.0, but brokers send it (read leniently).
        Code::Unknown(b) => b == DisconnectReasonCode::PacketTooLarge as u8,
    }
}

/// Error reason in PUBACK/PUBREC: permanent ones drop the record, others end the session so
/// the record is retried after the backoff.
pub(super) fn refused(
    window: &mut Window<'_>,
    removals: &mut Removals,
    pid: u16,
    code: AckCode,
    node_id: &str,
) -> Result<(), SyncError> {
    let Some(key) = window.complete(pid) else {
        return Ok(());
    };
    if is_permanent(code) {
        tracing::error!(
            seq = key.1,
            %code,
            "upstream refused a message permanently: dropped"
        );
        removals.dropped(key, DropReason::Corrupt);
        return Ok(());
    }
    Err(SyncError::Protocol(format!(
        "upstream refused message {node_id}:{} with reason code {code}; will retry",
        key.1
    )))
}

/// SUBACK for the downlink filters (in `downlinks` order).
pub(super) fn suback(
    downlinks: &[CompiledDownlink],
    live: &Live,
    codes: &[Code<SubscribeReasonCode>],
) {
    for (i, c) in codes.iter().enumerate() {
        if c.is_failure() {
            let f = downlinks.get(i).map(|d| d.filter.as_str()).unwrap_or("?");
            tracing::error!(
                filter = f,
                code = %c,
                "upstream refused a downlink subscription"
            );
            live.set_error(format!(
                "downlink subscription `{f}` refused ({:#04x})",
                c.byte()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::topic::TopicMap;
    use crate::uplink::window::Carry;

    /// Runs `f` on a window of 4 in which packet id `pid` carries `record`, and an empty
    /// removal batch.
    fn with_one_sent(pid: u16, record: (u8, u64), f: impl FnOnce(&mut Window, &mut Removals)) {
        let mut carry = Carry::default();
        let mut w = Window::new(4, &mut carry);
        let mut r = Removals::new(Instant::now());
        w.sent(pid, record);
        f(&mut w, &mut r)
    }

    #[test]
    fn an_ack_moves_the_record_from_the_window_to_the_batch() {
        with_one_sent(7, (2, 30), |w, r| {
            acked(w, r, 7);
            assert!(!w.holds((2, 30)));
            assert!(r.is_pending((2, 30)));
            acked(w, r, 7); // a second ack is ignored
            let b = r.take(Instant::now()).unwrap();
            assert_eq!(b.acked, vec![(2, 30)]);
        });
    }

    #[test]
    fn permanent_refusals_drop_the_record() {
        for code in [0x90, 0x95, 0x99] {
            with_one_sent(1, (0, 5), |w, r| {
                refused(w, r, 1, Code::from_byte(code), "n1").unwrap();
                assert!(!w.holds((0, 5)));
                let b = r.take(Instant::now()).unwrap();
                assert_eq!(b.dropped, vec![(0, 5, DropReason::Corrupt)]);
                assert!(b.acked.is_empty());
            });
        }
    }

    #[test]
    fn other_refusals_end_the_session_and_keep_the_record() {
        with_one_sent(1, (3, 8), |w, r| {
            let e = refused(w, r, 1, Code::from_byte(0x97), "n1").unwrap_err();
            assert!(e.to_string().contains("n1:8"), "{e}");
            assert!(e.to_string().contains("0x97"), "{e}");
            assert!(!w.holds((3, 8)));
            assert!(!r.is_pending((3, 8)), "not removed: read and sent again");
            assert!(r.take(Instant::now()).is_none());
            // Unknown packet id: nothing happens.
            refused(w, r, 2, Code::from_byte(0x97), "n1").unwrap();
        });
    }

    fn codes(bytes: &[u8]) -> Vec<Code<SubscribeReasonCode>> {
        bytes.iter().map(|b| Code::from_byte(*b)).collect()
    }

    #[test]
    fn a_refused_subscription_is_reported_by_filter() {
        let rule = |f: &str| CompiledDownlink {
            filter: f.into(),
            map: TopicMap::Keep,
            qos: 1,
        };
        let live = Live::default();
        suback(&[rule("a/#"), rule("b/#")], &live, &codes(&[1, 0x87]));
        assert_eq!(
            live.link().last_error.as_deref(),
            Some("downlink subscription `b/#` refused (0x87)")
        );
        let live = Live::default();
        suback(&[rule("a/#")], &live, &codes(&[0, 1, 0x03]));
        assert_eq!(live.link().last_error, None);
    }
}
