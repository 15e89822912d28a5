//! Unit tests of the session's life: wills with and without delay, expiry from the
//! disconnection, take-over and clean start (helpers shared with `tests.rs`).

use super::queue::OutState;
use super::tests::*;
use super::*;
use crate::message::now_ms;

#[test]
fn a_will_without_delay_is_published_when_the_connection_drops() {
    let mut s = online(60, Some(will(0)));
    assert_eq!(
        s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new()),
        Some(will(0))
    );
    assert!(s.will().is_none());
}

#[test]
fn a_delayed_will_is_due_after_its_delay_capped_by_the_expiry() {
    let mut s = online(10, Some(will(60)));
    let mut ops = Vec::new();
    assert_eq!(
        s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new()),
        None
    );
    assert_eq!(s.take_due_will(10_999, &mut ops), None);
    assert_eq!(s.take_due_will(11_000, &mut ops), Some(will(60)));
    assert!(matches!(ops.as_slice(), [Op::PutSession(..)]));
    assert_eq!(s.take_due_will(12_000, &mut ops), None, "only once");
}

#[test]
fn a_graceful_disconnect_discards_the_will_and_may_change_the_expiry() {
    let mut s = online(60, Some(will(0)));
    let how = Departure::Graceful {
        send_will: false,
        expiry: Some(100_000),
    };
    assert_eq!(s.detach(1_000, how, 3600, &mut Vec::new()), None);
    assert_eq!(s.expiry_secs(), 3600, "capped");
    let mut s = online(60, Some(will(0)));
    let how = Departure::Graceful {
        send_will: true,
        expiry: None,
    };
    assert_eq!(
        s.detach(1_000, how, 3600, &mut Vec::new()),
        Some(will(0)),
        "reason 0x04"
    );
}

#[test]
fn expiry_counts_from_the_disconnection() {
    let mut s = online(10, None);
    assert!(!s.expired(u64::MAX / 2), "online");
    s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new());
    assert!(!s.expired(10_999));
    assert!(s.expired(11_000));
}

#[test]
fn a_take_over_kicks_the_old_connection_and_requeues_its_deliveries() {
    let mut s = online(60, Some(will(30)));
    let old = s.conn().cloned().expect("attached");
    let mut ops = Vec::new();
    enqueue(&mut s, "a", 1, &mut ops);
    take(&mut s, &mut ops);
    let claim = s.claim(false, now_ms());
    assert_eq!(old.wakeup.kicked(), Some(Kick::TakenOver));
    assert!(claim.resumable);
    assert_eq!(
        claim.will_now, None,
        "a delayed will is cancelled by the resumption"
    );
    assert!(s.inflight.is_empty());
    assert!(matches!(s.queue.front().map(|d| d.state), Some(OutState::Sent(p)) if p == pid(1)));
}

#[test]
fn a_take_over_publishes_a_will_without_delay() {
    let mut s = online(60, Some(will(0)));
    let claim = s.claim(false, now_ms());
    assert_eq!(claim.will_now, Some(will(0)));
}

#[test]
fn a_clean_start_ends_the_session_and_publishes_its_will() {
    let mut s = online(60, Some(will(30)));
    s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new());
    let claim = s.claim(true, 2_000);
    assert!(!claim.resumable);
    assert_eq!(claim.will_now, Some(will(30)));
}

#[test]
fn an_expired_session_is_not_resumed() {
    let mut s = online(10, None);
    s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new());
    assert!(s.claim(false, 10_999).resumable);
    s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new());
    assert!(!s.claim(false, 11_000).resumable);
}

#[test]
fn subscriptions_are_kept_sorted_replaced_in_place_and_freed_when_the_last_goes() {
    let mut s = Session::new("c".into(), 5, 0);
    for f in ["b/#", "a", "$share/g/x", "c/+"] {
        assert_eq!(s.subscribe(f.into(), SubOptions::test(0, 0), 10), Ok(false));
    }
    assert_eq!(
        s.subscribe("a".into(), SubOptions::test(2, 7), 10),
        Ok(true),
        "replaced"
    );
    let listed: Vec<(String, u8)> = s
        .subscriptions()
        .map(|(f, o)| (f.to_string(), o.qos))
        .collect();
    assert_eq!(
        listed,
        [("$share/g/x", 0), ("a", 2), ("b/#", 0), ("c/+", 0)].map(|(f, q)| (f.to_string(), q))
    );
    assert!(!s.unsubscribe("nope"));
    for f in ["c/+", "a", "$share/g/x", "b/#"] {
        assert!(s.unsubscribe(f), "{f}");
    }
    assert_eq!(s.subscriptions().count(), 0);
    assert!(s.subs.is_empty(), "an idle session keeps no list");
}

#[test]
fn the_extras_box_exists_only_while_a_will_or_qos2_id_or_publisher_event_does() {
    let mut s = online(60, None);
    assert!(
        s.extras.is_none(),
        "no will, nothing received, nobody waiting"
    );
    let mut ops = Vec::new();
    assert!(s.receive_qos2(pid(1), &mut ops));
    assert!(!s.receive_qos2(pid(1), &mut ops), "a duplicate");
    assert!(s.extras.is_some());
    assert!(s.release_qos2(pid(1), &mut ops));
    assert!(s.extras.is_none(), "freed with the last packet id");

    let mut s = online(60, Some(will(0)));
    assert!(s.extras.is_some());
    assert_eq!(
        s.detach(1_000, Departure::Abnormal, 3600, &mut Vec::new()),
        Some(will(0))
    );
    assert!(s.extras.is_none(), "freed with the will");
    // 144 bytes (rustc 1.95): its block is in mimalloc's 160-byte size class. It was 192 with
    // the window and in-flight deques inline (32 bytes each, `deliveries.rs`).
    assert!(
        std::mem::size_of::<Session>() <= 160,
        "session {} bytes",
        std::mem::size_of::<Session>()
    );
}

#[test]
fn a_restored_session_finds_its_stored_subscriptions_in_any_stored_order() {
    let loaded = loaded_session(
        ["z/#", "a/b", "m", "a/b"]
            .iter()
            .enumerate()
            .map(|(i, f)| (f.to_string(), SubOptions::test(0, i as u32)))
            .collect(),
    );
    let mut s = Session::restore("client".into(), loaded, 1_000);
    let listed: Vec<String> = s.subscriptions().map(|(f, _)| f.to_string()).collect();
    assert_eq!(listed, ["a/b", "m", "z/#"], "sorted, one per filter");
    let a = s
        .subscriptions()
        .find(|(f, _)| &***f == "a/b")
        .map(|(_, o)| *o);
    assert_eq!(a, Some(SubOptions::test(0, 3)), "the last stored wins");
    assert_eq!(
        s.subscribe("m".into(), SubOptions::test(1, 0), 10),
        Ok(true)
    );
    assert!(s.unsubscribe("z/#"));
    assert!(!s.unsubscribe("z/#"));
}
