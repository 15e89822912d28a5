//! Outbox behaviour on a real redb file: order, priorities, byte cap under both policies, TTL,
//! exact counters after reopening, rollback, and O(1) open with a large backlog.

mod common;

use std::time::{Duration, Instant};

use common::*;
use edge_sync::outbox::{DropReason, Outbox, Record};
use edge_sync::LocalMessage;

/// Every record of priority lane `lane`: (sequence, record).
fn lane(ob: &Outbox, lane: usize) -> Vec<(u64, Record)> {
    ob.read_lane(lane, 0, 1_000_000, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn seqs(ob: &Outbox, n: usize) -> Vec<u64> {
    lane(ob, n).into_iter().map(|(seq, _)| seq).collect()
}

fn payloads(ob: &Outbox, n: usize) -> Vec<String> {
    lane(ob, n)
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.payload).unwrap())
        .collect()
}

#[test]
fn records_keep_capture_order_and_topic_mapping() {
    let (t, _c, ob) =
        TestDb::with_outbox("[[forward]]\nfilter = \"pos/#\"\nprefix = \"stores/{node_id}/\"\n");
    capture_n(&ob, &t.db, "pos/1/sale", 0, 1200);
    let recs = ob.read_lane(0, 0, 10_000, usize::MAX).unwrap();
    assert_eq!(recs.len(), 1200);
    for (i, r) in recs.iter().enumerate() {
        let (seq, rec) = r.as_ref().unwrap();
        assert_eq!(*seq, i as u64 + 1, "sequences start at 1 and have no gaps");
        assert_eq!(rec.payload, i.to_string().into_bytes());
        assert_eq!(rec.topic, "stores/n1/pos/1/sale");
        assert_eq!(rec.qos, 1);
    }
    // Reading after a cursor continues in order.
    let next = ob.read_lane(0, 1000, 10, usize::MAX).unwrap();
    assert_eq!(next[0].as_ref().unwrap().0, 1001);
    assert_eq!(ob.counters().backlog_messages, 1200);
}

#[test]
fn unmatched_and_qos0_messages_follow_the_rules() {
    let (t, _c, ob) = TestDb::with_outbox("capture_qos0 = false\n[[forward]]\nfilter = \"a/+\"\n");
    assert!(ob.wants("a/x", 1));
    assert!(
        !ob.wants("a/x", 0),
        "QoS 0 not captured when capture_qos0 = false"
    );
    assert!(!ob.wants("b/x", 1));
    assert!(!ob.wants("a/x/y", 1));
    // Messages that came down from the cloud are never captured again.
    let txn = t.db.begin_write().unwrap();
    ob.capture(
        &txn,
        &LocalMessage {
            user_properties: &[(edge_sync::DOWNLINK_MARKER.to_string(), "n1".to_string())],
            ..local_message("a/x", b"loop", 1, now_ms())
        },
    )
    .unwrap();
    txn.commit().unwrap();
    ob.committed(true);
    assert_eq!(ob.counters().backlog_messages, 0);
}

#[test]
fn priorities_have_separate_ordered_lanes() {
    let (t, _c, ob) = TestDb::with_outbox("[[forward]]\nfilter = \"alarm/#\"\npriority = 3\n[[forward]]\nfilter = \"#\"\npriority = 0\n",);
    capture(
        &ob,
        &t.db,
        &[
            ("temp/1", b"a".to_vec(), 1),
            ("alarm/1", b"b".to_vec(), 1),
            ("temp/1", b"c".to_vec(), 1),
            ("alarm/2", b"d".to_vec(), 1),
        ],
    );
    assert_eq!(seqs(&ob, 3), vec![2, 4]);
    assert_eq!(seqs(&ob, 0), vec![1, 3]);
    assert_eq!(payloads(&ob, 3), vec!["b", "d"]);
    assert!(seqs(&ob, 1).is_empty());
}

#[test]
fn byte_cap_drop_oldest_evicts_oldest_and_counts_every_drop() {
    let (t, c, ob) = TestDb::with_outbox(
        "max_backlog_bytes = 4096\nfull_policy = \"drop_oldest\"\n[[forward]]\nfilter = \"#\"\n",
    );
    let payload = vec![b'x'; 100];
    for i in 0..200 {
        let topic = format!("t/{i}");
        capture(&ob, &t.db, &[(&topic, payload.clone(), 1)]);
    }
    let k = ob.counters();
    assert!(k.backlog_bytes <= 4096, "cap held: {}", k.backlog_bytes);
    assert!(k.backlog_messages > 20, "still holds most of the cap");
    assert_eq!(
        k.backlog_messages + k.dropped_full,
        200,
        "every drop counted"
    );
    // The survivors are the newest ones, in order.
    let s = seqs(&ob, 0);
    assert_eq!(*s.last().unwrap(), 200);
    assert_eq!(s.len() as u64, k.backlog_messages);
    assert!(s.windows(2).all(|w| w[1] == w[0] + 1));
    // Counters survive a restart exactly.
    let (_t, ob) = t.reopen_outbox(ob, &c);
    assert_eq!(ob.counters().dropped_full, k.dropped_full);
    assert_eq!(ob.counters().backlog_bytes, k.backlog_bytes);
}

#[test]
fn drop_oldest_evicts_low_priority_before_high() {
    let (t, _c, ob) = TestDb::with_outbox("max_backlog_bytes = 4096\n[[forward]]\nfilter = \"hi/#\"\npriority = 2\n[[forward]]\nfilter = \"#\"\n",);
    let p = vec![b'x'; 100];
    for _ in 0..10 {
        capture(&ob, &t.db, &[("hi/a", p.clone(), 1)]);
    }
    for _ in 0..100 {
        capture(&ob, &t.db, &[("lo/a", p.clone(), 1)]);
    }
    assert_eq!(
        seqs(&ob, 2).len(),
        10,
        "high priority records were not evicted"
    );
    let lows = ob.counters().backlog_messages - 10;
    assert_eq!(lows + ob.counters().dropped_full, 100);
}

#[test]
fn byte_cap_reject_new_refuses_and_counts() {
    let (t, c, ob) = TestDb::with_outbox(
        "max_backlog_bytes = 4096\nfull_policy = \"reject_new\"\n[[forward]]\nfilter = \"#\"\n",
    );
    let p = vec![b'x'; 100];
    let mut rejected = 0;
    for _ in 0..100 {
        if ob.admit("t/a", p.len()).is_err() {
            rejected += 1;
            continue;
        }
        capture(&ob, &t.db, &[("t/a", p.clone(), 1)]);
    }
    let k = ob.counters();
    assert!(rejected > 0);
    assert_eq!(k.rejected, rejected, "every refusal counted");
    assert_eq!(k.backlog_messages + rejected, 100);
    assert!(k.backlog_bytes <= 4096);
    assert_eq!(k.dropped_full, 0, "reject_new never evicts");
    // The oldest records are all still there.
    assert_eq!(seqs(&ob, 0)[0], 1);
    // Rejections are persisted with the next commit (here: an ack removal).
    ob.remove(&[(0, 1)], &[], None, None).unwrap();
    let rejected_now = ob.counters().rejected;
    let (_t, ob) = t.reopen_outbox(ob, &c);
    assert_eq!(ob.counters().rejected, rejected_now);
    assert_eq!(ob.counters().acked, 1);
}

#[test]
fn ttl_expired_records_are_dropped_and_counted() {
    let (t, _c, ob) = TestDb::with_outbox(
        "[[forward]]\nfilter = \"short/#\"\nttl_secs = 60\n[[forward]]\nfilter = \"#\"\n",
    );
    let old = now_ms() - 120_000;
    capture_at(
        &ob,
        &t.db,
        &[("short/a", b"1".to_vec(), 1), ("long/a", b"2".to_vec(), 1)],
        old,
    );
    capture(&ob, &t.db, &[("short/b", b"3".to_vec(), 1)]);
    let n = ob.sweep_expired(now_ms(), 1000).unwrap();
    assert_eq!(n, 1);
    let k = ob.counters();
    assert_eq!(k.dropped_ttl, 1);
    assert_eq!(k.backlog_messages, 2);
    assert_eq!(payloads(&ob, 0), vec!["2", "3"]);
}

#[test]
fn rollback_leaves_counters_and_records_untouched() {
    let (t, _c, ob) = TestDb::with_outbox("[[forward]]\nfilter = \"#\"\n");
    capture(&ob, &t.db, &[("a", b"1".to_vec(), 1)]);
    capture_rolled_back(&ob, &t.db, "a", b"2");
    assert_eq!(ob.counters().backlog_messages, 1);
    capture(&ob, &t.db, &[("a", b"3".to_vec(), 1)]);
    assert_eq!(
        seqs(&ob, 0),
        vec![1, 2],
        "sequence of the rolled back capture is reused"
    );
    assert_eq!(ob.counters().backlog_messages, 2);
}

#[test]
fn reopen_recovers_exact_counters_without_scanning() {
    let (t, c, ob) = TestDb::with_outbox(
        "[[forward]]\nfilter = \"hi/#\"\npriority = 1\n[[forward]]\nfilter = \"#\"\n",
    );
    capture_n(&ob, &t.db, "x/y", 0, 700);
    capture_n(&ob, &t.db, "hi/y", 0, 300);
    let acked: Vec<(u8, u64)> = (1..=100).map(|s| (0u8, s)).collect();
    ob.remove(&acked, &[(0, 101, DropReason::Ttl)], Some(42), None)
        .unwrap();
    let before = ob.counters();
    assert_eq!(before.backlog_messages, 1000 - 101);
    assert_eq!(before.acked, 100);
    assert_eq!(before.dropped_ttl, 1);
    assert_eq!(before.last_offset, Some(42));
    let (t, ob) = t.reopen_outbox(ob, &c);
    assert_eq!(
        ob.counters(),
        before,
        "counters after reopen equal those before"
    );
    // New captures continue the sequence.
    capture(&ob, &t.db, &[("x/y", b"new".to_vec(), 1)]);
    assert_eq!(*seqs(&ob, 0).last().unwrap(), 1001);
}

#[test]
fn open_time_does_not_grow_with_backlog() {
    // A backlog of 200,000 records (the 1,000,000 case: `cargo run --release --example
    // outbox_open_bench`); open reads one meta row, so it must stay far below a second.
    let (t, c, ob) = TestDb::with_outbox("[[forward]]\nfilter = \"#\"\n");
    let p = vec![b'p'; 32];
    let mut n = 0;
    while n < 200_000 {
        let mut txn = t.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        for _ in 0..10_000 {
            ob.capture(&txn, &local_message("sensors/1/temp", &p, 1, now_ms()))
                .unwrap();
        }
        txn.commit().unwrap();
        ob.committed(true);
        n += 10_000;
    }
    ob.flush().unwrap();
    drop(ob);
    let t = t.reopen();
    let start = Instant::now();
    let ob = t.outbox(&c);
    let took = start.elapsed();
    println!("open with 200000 buffered records: {took:?}");
    assert_eq!(ob.counters().backlog_messages, 200_000);
    assert!(took < Duration::from_millis(500), "open took {took:?}");
}
