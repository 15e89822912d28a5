//! Unit tests of the session's queue window: what stays in memory, what is read back from
//! disk and in which order, packet ids recorded ahead, and reads racing a disconnect or a
//! take-over (helpers shared with `tests.rs`).

use super::tests::*;
use super::*;
use crate::broker::Outgoing;
use crate::message::now_ms;
use mqtt_proto::QosPid;

#[test]
fn an_online_session_keeps_a_window_in_memory_and_the_rest_on_disk() {
    let mut s = online(60, None);
    s.inflight_limit = 64;
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    for i in 0..WINDOW + 100 {
        s.enqueue(msg(&i.to_string()), 1, false, vec![], ROOMY, &mut ops);
    }
    assert_eq!(s.window_len(), WINDOW);
    assert_eq!(s.queued_len(), WINDOW + 100);
    assert_eq!(ops.len(), WINDOW + 100, "every one is written");
    let got = drain(&mut s, &mut disk, &mut ops);
    let want: Vec<String> = (0..WINDOW + 100).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "in order, none lost, none twice");
    assert_eq!(s.queued_len(), 0);
    assert!(disk.rows.is_empty(), "every delivery dequeued");
}

/// The window is bounded in bytes too: 4 KB messages get `MIN_WINDOW` (256, the window of
/// every session before it grew for small messages), and a read of the backlog brings in no
/// more than that.
#[test]
fn large_messages_get_a_window_of_about_a_megabyte_not_of_8192() {
    use super::queue::MIN_WINDOW;
    let mut s = online(60, None);
    s.inflight_limit = 64;
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    let big = |i: usize| {
        let mut m = crate::message::Message::clone(&msg(&i.to_string()));
        m.payload = bytes::Bytes::from(vec![b'x'; 4096]);
        Arc::new(m)
    };
    for i in 0..MIN_WINDOW + 300 {
        s.enqueue(big(i), 1, false, vec![], ROOMY, &mut ops);
    }
    assert_eq!(s.window_len(), MIN_WINDOW, "the rest waits on disk");
    disk.apply(&mut ops);
    for round in 0..2 {
        assert_eq!(s.refill_request(usize::MAX), None, "not under 3/4 yet");
        let out = s.take_outgoing(64, now_ms(), ROOMY, &mut ops);
        assert_eq!(out.len(), 64, "round {round}");
        for o in out {
            if let Outgoing::Publish { qos_pid, .. } = o {
                assert!(s.complete(qos_pid.pid().expect("QoS 1"), &mut ops));
            }
        }
    }
    disk.apply(&mut ops);
    let r = s
        .refill_request(usize::MAX)
        .expect("under 3/4 of the window");
    assert_eq!(r.max, 128, "read up to the window again, not to {WINDOW}");
    s.refilled(r, true, disk.read(r), &mut ops);
    assert_eq!(s.window_len(), MIN_WINDOW);
    let got = drain(&mut s, &mut disk, &mut ops);
    assert_eq!(got.len(), MIN_WINDOW + 300 - 128, "none lost");
}

#[test]
fn qos0_behind_a_backlog_keeps_its_place_in_order() {
    let mut s = online(60, None);
    s.inflight_limit = 64;
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    for i in 0..WINDOW + 10 {
        s.enqueue(msg(&format!("q1-{i}")), 1, false, vec![], ROOMY, &mut ops);
    }
    s.enqueue(msg("q0"), 0, false, vec![], ROOMY, &mut ops);
    s.enqueue(msg("last"), 1, false, vec![], ROOMY, &mut ops);
    assert_eq!(s.durable().backlog.later.len(), 1);
    let got = drain(&mut s, &mut disk, &mut ops);
    assert_eq!(got.len(), WINDOW + 12);
    let last_q1 = format!("q1-{}", WINDOW + 9);
    assert_eq!(&got[WINDOW + 9..], [last_q1.as_str(), "q0", "last"]);
}

#[test]
fn going_offline_gives_the_window_back_to_disk_keeps_sent_ids_and_forgets_ids_recorded_ahead() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    for t in ["a", "b", "c"] {
        enqueue(&mut s, t, 1, &mut ops);
    }
    take(&mut s, &mut ops); // a and b in flight (window of 2), c's id recorded ahead
    disk.apply(&mut ops);
    assert_eq!(
        disk.rows[&3].pid, 3,
        "c's id was recorded ahead of its send"
    );
    let mut gone = Vec::new();
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut gone);
    assert!(
        matches!(gone.as_slice(), [Op::Unreserve { seq: 3, .. }]),
        "c was never sent: its recorded id is forgotten, got {gone:?}"
    );
    disk.apply(&mut gone);
    assert_eq!(
        (s.window_len(), s.queued_len()),
        (0, 3),
        "nothing queued in memory"
    );
    assert_eq!(
        s.durable().backlog.sent.iter().collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)],
        "only the ids of what the client may have received stay in memory"
    );
    enqueue(&mut s, "d", 1, &mut ops);
    assert!(s.claim(false, now_ms()).resumable);
    s.attach(request(60, None), link(2), &mut ops);
    assert_eq!(take(&mut s, &mut ops), vec![], "nothing before the read");
    disk.apply(&mut ops);
    assert!(disk.refill(&mut s, &mut ops));
    assert_eq!(
        take(&mut s, &mut ops),
        vec![
            publish("a", QosPid::Level1(pid(1)), true),
            publish("b", QosPid::Level1(pid(2)), true),
        ]
    );
    assert!(s.complete(pid(1), &mut ops));
    assert_eq!(
        take(&mut s, &mut ops),
        vec![publish("c", QosPid::Level1(pid(4)), false)],
        "never sent: a fresh id and no DUP"
    );
}

#[test]
fn ids_are_recorded_for_the_whole_window_so_the_next_sends_wait_for_no_commit() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    let marked = |ops: &[Op]| -> Vec<u64> {
        ops.iter()
            .filter_map(|op| match op {
                Op::MarkSent { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    };
    for i in 0..20 {
        s.enqueue(msg(&format!("m{i}")), 1, false, vec![], ROOMY, &mut ops);
    }
    ops.clear();
    take(&mut s, &mut ops); // 1, 2: in flight (window of 2); 3..=20: ids recorded ahead
    let w = s.take_wait();
    assert!(w.fresh_ids && !w.reserved_ids && w.reserved_now);
    assert_eq!(
        marked(&ops),
        (1..=20).collect::<Vec<_>>(),
        "the two sent and every stored one of the window"
    );
    assert!(s.complete(pid(1), &mut ops) && s.complete(pid(2), &mut ops));
    ops.clear();
    assert_eq!(
        take(&mut s, &mut ops),
        vec![
            publish("m2", QosPid::Level1(pid(3)), false),
            publish("m3", QosPid::Level1(pid(4)), false),
        ],
        "first sends: no DUP, the ids recorded before"
    );
    let w = s.take_wait();
    assert!(!w.fresh_ids && w.reserved_ids, "nothing new to wait for");
    assert!(ops.is_empty(), "16 still ahead: no top-up: {ops:?}");
    for i in 20..25 {
        s.enqueue(msg(&format!("m{i}")), 1, false, vec![], ROOMY, &mut ops);
    }
    ops.clear();
    for p in [3, 4] {
        assert!(s.complete(pid(p), &mut ops));
    }
    take(&mut s, &mut ops);
    assert_eq!(
        marked(&ops),
        (21..=25).collect::<Vec<_>>(),
        "deliveries queued since get theirs in the next round"
    );
    assert!(
        !s.take_wait().fresh_ids,
        "the sends themselves used ids recorded before"
    );
}

/// A drain of a backlog many windows long: every send after the first window takes ids that
/// were recorded (with the read that brought them in) at least 4,000 sends before: at 500k
/// msg/s (1.5x mosquitto here) that is 8 ms for their commit to finish, two group commits of
/// a disk whose fsync takes 4 ms (measured here under load). So the drain does not wait for a
/// commit per window (with ids four in-flight windows ahead it did). The commit holding a
/// round is named here by the sends before it.
#[test]
fn a_drain_sends_ids_recorded_a_refill_ahead_so_it_waits_for_no_commit() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    let n = 5 * WINDOW + 7;
    for i in 0..n {
        s.enqueue(msg(&i.to_string()), 1, false, vec![], ROOMY, &mut ops);
    }
    assert!(s.claim(false, now_ms()).resumable);
    s.attach(request(60, None), link(2), &mut ops);
    s.inflight_limit = 64;
    disk.apply(&mut ops);
    const LEAD: usize = 4000;
    let stamp = |sent: usize| Some(crate::storage::Ticket::for_test(sent as u64 + 1));
    let (mut sent, mut fresh, mut short_lead, mut got) = (0, 0, 0, Vec::new());
    loop {
        if let Some(r) = s.refill_request(usize::MAX) {
            let rows = disk.read(r);
            if let Some(round) = s.refilled(r, true, rows, &mut ops) {
                s.reservations_committed_by(round, stamp(sent));
            }
            disk.apply(&mut ops);
        }
        let out = s.take_outgoing(64, now_ms(), ROOMY, &mut ops);
        let w = s.take_wait();
        if w.reserved_now {
            s.reservations_committed_by(w.reserved_round, stamp(sent));
        }
        disk.apply(&mut ops);
        if out.is_empty() {
            break;
        }
        fresh += usize::from(w.fresh_ids);
        let recorded = w.reserved_ticket.expect("the round's commit is named");
        if sent >= WINDOW && recorded > stamp(sent - LEAD).expect("some") {
            short_lead += 1;
        }
        sent += out.len();
        for o in out {
            if let Outgoing::Publish { msg, qos_pid, .. } = o {
                got.push(msg.topic.to_string());
                assert!(s.complete(qos_pid.pid().expect("QoS 1"), &mut ops));
            }
        }
        disk.apply(&mut ops);
    }
    assert_eq!(got, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(fresh, 0, "no round assigned ids at its own send");
    assert_eq!(short_lead, 0, "no send used ids recorded shortly before");
    assert!(disk.rows.is_empty(), "every delivery dequeued");
}

#[test]
fn a_read_started_before_going_offline_is_not_applied() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    for t in ["a", "b"] {
        enqueue(&mut s, t, 1, &mut ops);
    }
    s.claim(false, now_ms());
    s.attach(request(60, None), link(2), &mut ops);
    disk.apply(&mut ops);
    let r = s.refill_request(usize::MAX).expect("a read");
    assert_eq!(s.refill_request(usize::MAX), None, "one read at a time");
    let rows = disk.read(r);
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    s.refilled(r, true, rows, &mut ops);
    assert_eq!(
        (s.window_len(), s.queued_len()),
        (0, 2),
        "still on disk only"
    );
    s.claim(false, now_ms());
    s.attach(request(60, None), link(3), &mut ops);
    assert_eq!(drain(&mut s, &mut disk, &mut ops), ["a", "b"]);
}

#[test]
fn a_take_over_during_a_read_gets_the_rows_after_the_requeued_deliveries() {
    let mut s = online(60, None);
    s.inflight_limit = 64;
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    for i in 0..WINDOW + 5 {
        s.enqueue(msg(&i.to_string()), 1, false, vec![], ROOMY, &mut ops);
    }
    disk.apply(&mut ops);
    // The first connection sends a few batches, then asks for more while it is taken over.
    let acked_rounds = WINDOW / 4 / 64;
    let mut first = Vec::new();
    for _ in 0..acked_rounds {
        first.extend(s.take_outgoing(64, now_ms(), ROOMY, &mut ops));
        for o in &first {
            if let Outgoing::Publish { qos_pid, .. } = o {
                s.complete(qos_pid.pid().unwrap(), &mut ops);
            }
        }
        first.clear();
    }
    first.extend(s.take_outgoing(64, now_ms(), ROOMY, &mut ops)); // in flight, not acked
    disk.apply(&mut ops);
    let r = s.refill_request(usize::MAX).expect("window under half");
    let rows = disk.read(r);
    s.claim(false, now_ms());
    s.attach(request(60, None), link(2), &mut ops);
    s.inflight_limit = 64;
    s.refilled(r, true, rows, &mut ops);
    let got = drain(&mut s, &mut disk, &mut ops);
    let want: Vec<String> = (acked_rounds * 64..WINDOW + 5)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(got, want, "resent in flight first, then the rest in order");
}

/// The backlog and the ids recorded ahead live in one box that only a session with stored
/// deliveries allocates: a clean session delivering QoS 0 and 1 never does, a persistent one
/// gets it with its first stored delivery and keeps its backlog there.
#[test]
fn only_a_session_with_stored_deliveries_allocates_the_durable_box() {
    let mut ops = Vec::new();
    let mut clean = online(0, None);
    for qos in [0, 1, 1] {
        enqueue(&mut clean, "a", qos, &mut ops);
    }
    assert_eq!(
        take(&mut clean, &mut ops).len(),
        3,
        "QoS 0 and two QoS 1 in flight"
    );
    assert!(clean.complete(pid(1), &mut ops));
    assert!(clean.complete(pid(2), &mut ops));
    clean.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    assert!(clean.durable.is_none(), "a clean session needs no box");
    assert_eq!(clean.take_wait(), TakeWait::default());

    let mut stored = online(60, None);
    enqueue(&mut stored, "a", 0, &mut ops);
    assert!(stored.durable.is_none(), "QoS 0 is not stored");
    stored.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    assert!(
        stored.durable.is_none(),
        "nothing stored to give back to disk"
    );
    enqueue(&mut stored, "b", 1, &mut ops);
    assert_eq!(stored.durable().backlog.count, 1, "offline: on disk only");
    assert!(stored.durable.is_some());
    assert_eq!(stored.queued_len(), 2, "the QoS 0 one stays in memory");
}

/// A client coming back to a long backlog gets its first deliveries after a read of
/// `FIRST_READ` rows (and the commit of their ids), not of a whole window; each read after it
/// doubles, within the room left in the window, and going offline starts over.
#[test]
fn a_returning_client_first_gets_a_small_read_and_later_reads_double_up_to_the_window() {
    use super::backlog::FIRST_READ;
    let mut s = online(60, None);
    s.inflight_limit = 64;
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    let total = 3 * WINDOW;
    for i in 0..total {
        s.enqueue(msg(&i.to_string()), 1, false, vec![], ROOMY, &mut ops);
    }
    disk.apply(&mut ops);
    s.claim(false, now_ms());
    s.attach(request(60, None), link(2), &mut ops);

    let mut reads = Vec::new();
    let mut got = Vec::new();
    loop {
        disk.apply(&mut ops);
        if let Some(r) = s.refill_request(usize::MAX) {
            reads.push(r.max);
            s.refilled(r, true, disk.read(r), &mut ops);
            disk.apply(&mut ops);
        }
        let out = s.take_outgoing(64, now_ms(), ROOMY, &mut ops);
        if out.is_empty() {
            break;
        }
        for o in out {
            if let Outgoing::Publish { msg, qos_pid, .. } = o {
                got.push(msg.topic.to_string());
                assert!(s.complete(qos_pid.pid().expect("QoS 1"), &mut ops));
            }
        }
    }
    let want: Vec<String> = (0..total).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "in order, none lost, none twice");
    assert_eq!(reads[0], FIRST_READ, "the first read is small: {reads:?}");
    assert_eq!(reads[1], 2 * FIRST_READ, "then it doubles: {reads:?}");
    assert!(
        reads.iter().all(|&n| n <= WINDOW),
        "never past the window: {reads:?}"
    );
    assert!(
        reads.iter().any(|&n| n >= WINDOW / 2),
        "reads grow to half the window and more, then take what room there is: {reads:?}"
    );

    // Offline again with more queued: the next connection starts small again.
    for i in 0..WINDOW {
        s.enqueue(
            msg(&format!("again-{i}")),
            1,
            false,
            vec![],
            ROOMY,
            &mut ops,
        );
    }
    s.take_outgoing(64, now_ms(), ROOMY, &mut ops);
    disk.apply(&mut ops);
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut ops);
    disk.apply(&mut ops);
    s.claim(false, now_ms());
    s.attach(request(60, None), link(3), &mut ops);
    disk.apply(&mut ops);
    let r = s.refill_request(usize::MAX).expect("a read");
    assert_eq!(
        r.max, FIRST_READ,
        "a new connection's first read is small again"
    );
}
