//! Session rules, checked on sessions in memory: no socket, no database. Durable effects are
//! checked as the ops a method pushes.

use bytes::Bytes;
use futures_lite::future;
use mqtt_proto::QosPid;

use super::queue::OutState;
use super::*;
use crate::broker::Outgoing;
use crate::message::{now_ms, Message};
use crate::storage::DeliveryRecord;

pub(super) const LIMITS: QueueLimits = QueueLimits {
    max_messages: 8,
    max_bytes: 1 << 20,
    memory_full: false,
    stall_ms: DEFAULT_STALL_MS,
};

/// Room for more than a window.
pub(super) const ROOMY: QueueLimits = QueueLimits {
    max_messages: 100_000,
    max_bytes: 1 << 30,
    memory_full: false,
    stall_ms: DEFAULT_STALL_MS,
};

/// The session's queue as the writer would store it: applies the ops a session pushes and
/// answers backlog reads as `Store::read_queue` does.
#[derive(Default)]
pub(super) struct Disk {
    pub(super) rows: std::collections::BTreeMap<u64, DeliveryRecord>,
}

impl Disk {
    pub(super) fn apply(&mut self, ops: &mut Vec<Op>) {
        for op in ops.drain(..) {
            match op {
                Op::Enqueue {
                    seq,
                    msg,
                    qos,
                    retain,
                    sub_ids,
                    ..
                } => {
                    self.rows.insert(
                        seq,
                        DeliveryRecord {
                            msg: (*msg).clone(),
                            qos,
                            retain,
                            sub_ids,
                            pid: 0,
                            released: false,
                        },
                    );
                }
                Op::MarkSent {
                    seq, pid, released, ..
                } => {
                    if let Some(r) = self.rows.get_mut(&seq) {
                        r.pid = pid.value();
                        r.released = released;
                    }
                }
                Op::Unreserve { seq, .. } => {
                    if let Some(r) = self.rows.get_mut(&seq) {
                        r.pid = 0;
                        r.released = false;
                    }
                }
                Op::Dequeue { seq, .. } => {
                    self.rows.remove(&seq);
                }
                Op::DeleteSession(_) => self.rows.clear(),
                _ => {}
            }
        }
    }

    pub(super) fn read(
        &self,
        r: Refill,
    ) -> crate::error::Result<Vec<(u64, Option<DeliveryRecord>)>> {
        Ok(self
            .rows
            .range(r.from..r.until)
            .take(r.max)
            .map(|(s, d)| (*s, Some(d.clone())))
            .collect())
    }

    /// Runs the refill the session asks for, if any; whether there was one.
    pub(super) fn refill(&mut self, s: &mut Session, ops: &mut Vec<Op>) -> bool {
        let Some(r) = s.refill_request(usize::MAX) else {
            return false;
        };
        s.refilled(r, true, self.read(r), ops);
        self.apply(ops);
        true
    }
}

/// Takes everything, acknowledging as it goes, refilling from `disk`: the topics received.
pub(super) fn drain(s: &mut Session, disk: &mut Disk, ops: &mut Vec<Op>) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        disk.apply(ops);
        disk.refill(s, ops);
        let out = s.take_outgoing(64, now_ms(), ROOMY, ops);
        disk.apply(ops);
        if out.is_empty() {
            return got;
        }
        for o in out {
            if let Outgoing::Publish { msg, qos_pid, .. } = o {
                got.push(msg.topic.to_string());
                if let Some(p) = qos_pid.pid() {
                    assert!(s.complete(p, ops));
                }
            }
        }
        disk.apply(ops);
    }
}

pub(super) fn pid(n: u16) -> Pid {
    Pid::try_from(n).expect("non-zero")
}

pub(super) fn message(topic: &str) -> Message {
    Message::test(topic, Bytes::from_static(b"payload"), 2, "p")
}

pub(super) fn msg(topic: &str) -> Arc<Message> {
    Arc::new(message(topic))
}

pub(super) fn will(delay_secs: u32) -> WillRecord {
    let mut msg = message("will");
    msg.received_ms = 1;
    WillRecord { msg, delay_secs }
}

pub(super) fn request(expiry_secs: u32, will: Option<WillRecord>) -> ConnectRequest {
    ConnectRequest {
        client_id: "client".into(),
        protocol: 5,
        clean_start: false,
        expiry_secs,
        will,
        inflight_limit: 2,
        acl: crate::auth::ClientAcl::unrestricted(),
        username: None,
    }
}

pub(super) fn link(id: u64) -> ConnLink {
    ConnLink {
        id,
        wakeup: Arc::default(),
    }
}

/// A session with connection 1 attached, as after CONNECT (in-flight window of 2).
pub(super) fn online(expiry_secs: u32, will: Option<WillRecord>) -> Session {
    let mut s = Session::new("client".into(), 5, expiry_secs);
    s.attach(request(expiry_secs, will), link(1), &mut Vec::new());
    s
}

pub(super) fn enqueue(s: &mut Session, topic: &str, qos: u8, ops: &mut Vec<Op>) -> bool {
    s.enqueue(msg(topic), qos, false, vec![], LIMITS, ops)
        .is_some()
}

/// What `take_outgoing` hands the connection, reduced to what the rules decide.
#[derive(Debug, PartialEq)]
pub(super) enum Sent {
    Publish(String, QosPid, bool),
    Pubrel(Pid),
}

pub(super) fn take(s: &mut Session, ops: &mut Vec<Op>) -> Vec<Sent> {
    s.take_outgoing(16, now_ms(), LIMITS, ops)
        .into_iter()
        .map(|o| match o {
            Outgoing::Publish {
                msg, qos_pid, dup, ..
            } => Sent::Publish(msg.topic.to_string(), qos_pid, dup),
            Outgoing::Pubrel(p) => Sent::Pubrel(p),
        })
        .collect()
}

pub(super) fn publish(topic: &str, qos_pid: QosPid, dup: bool) -> Sent {
    Sent::Publish(topic.into(), qos_pid, dup)
}

/// The connection drops and comes back (as a CONNECT resuming the session); the session's
/// window, given back to disk when it went offline, is read back.
pub(super) fn reconnect(s: &mut Session, ops: &mut Vec<Op>) {
    let mut disk = Disk::default();
    for d in s
        .inflight
        .iter()
        .chain(s.queue.iter())
        .filter(|d| d.persisted())
    {
        let rec = DeliveryRecord {
            msg: (*d.msg).clone(),
            qos: d.qos,
            retain: d.retain(),
            sub_ids: d.sub_ids.to_vec(),
            pid: d.state.pid().map_or(0, Pid::value),
            released: matches!(d.state, OutState::Released(_)),
        };
        disk.rows.insert(d.seq, rec);
    }
    assert_eq!(
        s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new()),
        None
    );
    assert!(s.claim(false, now_ms()).resumable);
    s.attach(request(s.expiry_secs(), None), link(2), ops);
    disk.refill(s, ops);
}

#[test]
fn qos0_is_queued_only_while_online() {
    let mut s = Session::new("client".into(), 5, 60);
    let mut ops = Vec::new();
    assert!(!enqueue(&mut s, "a", 0, &mut ops));
    assert_eq!(s.queued_len(), 0);
    enqueue(&mut s, "a", 1, &mut ops);
    assert_eq!(s.queued_len(), 1);
    assert_eq!(s.window_len(), 0, "offline: on disk only");
}

#[test]
fn only_qos1_2_deliveries_of_a_persistent_session_are_written() {
    let mut ops = Vec::new();
    let mut s = online(0, None);
    enqueue(&mut s, "a", 1, &mut ops);
    assert!(ops.is_empty(), "expiry 0: nothing on disk");
    let mut s = online(60, None);
    enqueue(&mut s, "a", 0, &mut ops);
    enqueue(&mut s, "b", 1, &mut ops);
    enqueue(&mut s, "c", 2, &mut ops);
    let seqs: Vec<u64> = ops
        .iter()
        .map(|op| match op {
            Op::Enqueue { seq, .. } => *seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[test]
fn a_full_queue_drops_the_message_and_counts_it() {
    let mut s = online(0, None);
    let mut ops = Vec::new();
    for _ in 0..LIMITS.max_messages {
        enqueue(&mut s, "a", 1, &mut ops);
    }
    assert!(enqueue(&mut s, "a", 1, &mut ops), "online: congested");
    assert_eq!((s.queue.len(), s.dropped), (LIMITS.max_messages, 1));
    let small = QueueLimits {
        max_messages: 100,
        max_bytes: 100,
        memory_full: false,
        stall_ms: DEFAULT_STALL_MS,
    };
    let mut s = online(0, None);
    s.enqueue(msg("a"), 1, false, vec![], small, &mut ops);
    assert_eq!((s.queue.len(), s.dropped), (1, 0));
    s.enqueue(msg("a"), 1, false, vec![], small, &mut ops);
    assert_eq!((s.queue.len(), s.dropped), (1, 1), "byte bound");
}

#[test]
fn congestion_starts_at_three_quarters_and_ends_at_half() {
    let mut s = online(0, None);
    let mut ops = Vec::new();
    for i in 0..6 {
        let congested = enqueue(&mut s, "a", 0, &mut ops);
        assert_eq!(congested, i == 5, "after {} of 8", i + 1);
    }
    assert!(s.congested(LIMITS));
    let drained = s.congestion(Mark::Queue).drained.listen();
    s.take_outgoing(1, now_ms(), LIMITS, &mut ops);
    assert!(!s.congested(LIMITS), "5 of 8");
    assert!(
        future::block_on(future::poll_once(drained)).is_none(),
        "5 of 8 is not under half: publishers stay paused"
    );
    let drained = s.congestion(Mark::Queue).drained.listen();
    s.take_outgoing(1, now_ms(), LIMITS, &mut ops);
    assert!(
        future::block_on(future::poll_once(drained)).is_some(),
        "4 of 8"
    );
}

#[test]
fn bounds_near_the_types_maximum_neither_overflow_nor_congest_a_short_queue() {
    // `4 * n >= 3 * max` overflowed here (a panic in a debug build, a wrong mark in release).
    let huge = QueueLimits {
        max_messages: usize::MAX,
        max_bytes: u64::MAX,
        memory_full: false,
        stall_ms: DEFAULT_STALL_MS,
    };
    let mut s = online(0, None);
    let mut ops = Vec::new();
    for _ in 0..3 {
        assert_eq!(s.enqueue(msg("a"), 1, false, vec![], huge, &mut ops), None);
    }
    assert!(!s.congested(huge));
    let drained = s.congestion(Mark::Queue).drained.listen();
    s.take_outgoing(1, now_ms(), huge, &mut ops);
    assert!(
        future::block_on(future::poll_once(drained)).is_some(),
        "under half of the bounds: paused publishers go on"
    );
    // A byte bound past 4 GiB (what a u32 `usize` cannot hold) marks at three quarters.
    let big = QueueLimits {
        max_bytes: 6 << 30,
        ..huge
    };
    let mut s = online(0, None);
    s.queued_bytes = (9 << 29) - 1;
    assert!(!s.congested(big), "just under 4.5 GiB");
    s.queued_bytes = 9 << 29;
    assert!(s.congested(big), "4.5 GiB of 6");
}

#[test]
fn each_mark_wakes_only_the_publishers_paused_on_it() {
    use super::{QOS0_PAUSE, QOS0_RESUME};
    // Queue mark at 1,500 (3/4 of 2,000), low side 1,000; the QoS 0 marks at 1,024 and 768.
    let limits = QueueLimits {
        max_messages: 2000,
        max_bytes: 1 << 30,
        memory_full: false,
        stall_ms: DEFAULT_STALL_MS,
    };
    let mut s = online(0, None);
    let mut ops = Vec::new();
    let mut put = |s: &mut Session, qos| s.enqueue(msg("a"), qos, false, vec![], limits, &mut ops);
    for _ in 1..QOS0_PAUSE {
        assert_eq!(put(&mut s, 0), None);
    }
    assert_eq!(put(&mut s, 0), Some(Mark::Qos0));
    assert_eq!(
        put(&mut s, 1),
        None,
        "a QoS 1 delivery is not held to the QoS 0 mark"
    );
    while s.queued_len() < 1500 {
        put(&mut s, 1);
    }
    assert_eq!(put(&mut s, 1), Some(Mark::Queue));
    for _ in 0..200 {
        put(&mut s, 1);
    }
    let mut qos0 = s.congestion(Mark::Qos0).drained.listen();
    let queue = s.congestion(Mark::Queue).drained.listen();
    // The QoS 0 deliveries are first in the queue: 769 of them left.
    s.take_outgoing(
        QOS0_PAUSE - QOS0_RESUME - 1,
        now_ms(),
        limits,
        &mut Vec::new(),
    );
    assert!(
        future::block_on(future::poll_once(&mut qos0)).is_none(),
        "769 of 1,024: its publishers stay paused"
    );
    s.take_outgoing(1, now_ms(), limits, &mut Vec::new());
    assert!(!s.over(Mark::Qos0, limits, now_ms()));
    assert!(s.queued_len() * 2 > limits.max_messages);
    assert!(
        future::block_on(future::poll_once(qos0)).is_some(),
        "768 of 1,024"
    );
    assert!(
        future::block_on(future::poll_once(queue)).is_none(),
        "the queue is still over its low side: its publishers stay paused"
    );
}

/// Queues a QoS 1 message received at `ms` for `s`; what its publisher should pause on.
fn enqueue_at(s: &mut Session, ms: u64, limits: QueueLimits, ops: &mut Vec<Op>) -> Option<Mark> {
    let mut m = message("a");
    m.received_ms = ms;
    s.enqueue(Arc::new(m), 1, false, vec![], limits, ops)
}

#[test]
fn a_subscriber_that_takes_nothing_for_the_stall_time_pauses_no_publisher() {
    const STALL_MS: u64 = LIMITS.stall_ms;
    let mut s = online(0, None);
    let mut ops = Vec::new();
    let t0 = now_ms();
    let mut put = |s: &mut Session, ms: u64| enqueue_at(s, ms, LIMITS, &mut ops);
    for _ in 0..5 {
        assert_eq!(put(&mut s, t0), None);
    }
    assert_eq!(put(&mut s, t0 + 1), Some(Mark::Queue), "6 of 8");
    assert!(s.over(Mark::Queue, LIMITS, t0 + STALL_MS));
    assert!(
        !s.over(Mark::Queue, LIMITS, t0 + STALL_MS + 1),
        "nothing taken since the first delivery began to wait: stalled"
    );
    let later = t0 + STALL_MS + 1;
    assert_eq!(put(&mut s, later), None, "7 of 8, stalled");
    assert_eq!(put(&mut s, later), None, "8 of 8, stalled");
    assert_eq!(put(&mut s, later), None, "dropped, and still no pause");
    assert_eq!(s.queue_figures().dropped, 1);
    // It takes one: it drains again, and holds its publishers again.
    assert_eq!(
        s.take_outgoing(1, later + 5, LIMITS, &mut Vec::new()).len(),
        1
    );
    assert_eq!(put(&mut s, later + 6), Some(Mark::Queue));
    assert!(s.over(Mark::Queue, LIMITS, later + 6));
}

#[test]
fn the_configured_stall_time_decides_when_a_subscriber_stops_holding_publishers() {
    let quick = QueueLimits {
        stall_ms: 200,
        ..LIMITS
    };
    let mut s = online(0, None);
    let mut ops = Vec::new();
    let t0 = now_ms();
    for _ in 0..6 {
        enqueue_at(&mut s, t0, quick, &mut ops);
    }
    assert!(s.over(Mark::Queue, quick, t0 + 200));
    assert!(
        !s.over(Mark::Queue, quick, t0 + 201),
        "stalled after 200 ms"
    );
    assert!(
        s.over(Mark::Queue, LIMITS, t0 + 201),
        "with the default time it still holds its publishers"
    );
    assert_eq!(
        enqueue_at(&mut s, t0 + 201, quick, &mut ops),
        None,
        "7 of 8 for a stalled subscriber: no pause"
    );
}

#[test]
fn a_subscriber_idle_for_long_is_not_stalled_by_its_first_deliveries() {
    const STALL_MS: u64 = LIMITS.stall_ms;
    let mut s = online(0, None);
    let mut ops = Vec::new();
    // Attached, then nothing for ten stall times: the queue was empty all along.
    let t = now_ms() + 10 * STALL_MS;
    for _ in 0..5 {
        assert_eq!(enqueue_at(&mut s, t, LIMITS, &mut ops), None);
    }
    assert_eq!(enqueue_at(&mut s, t, LIMITS, &mut ops), Some(Mark::Queue));
}

#[test]
fn old_messages_do_not_make_a_subscriber_that_just_attached_look_stalled() {
    let mut s = online(0, None);
    let mut ops = Vec::new();
    // Retained an hour ago: their times are older than the attach.
    let old = now_ms() - 3_600_000;
    for _ in 0..6 {
        let mut m = message("a");
        m.received_ms = old;
        s.enqueue(Arc::new(m), 1, true, vec![], LIMITS, &mut ops);
    }
    assert!(s.over(Mark::Queue, LIMITS, now_ms()), "6 of 8, not stalled");
}

#[test]
fn an_offline_session_is_never_congested() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    for _ in 0..LIMITS.max_messages {
        enqueue(&mut s, "a", 1, &mut ops);
    }
    assert!(s.congested(LIMITS));
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    assert!(!s.congested(LIMITS));
}

#[test]
fn the_inflight_window_holds_back_qos1_2_but_not_qos0_ahead_of_them() {
    let mut s = online(0, None);
    let mut ops = Vec::new();
    for (t, qos) in [("a", 1), ("b", 2), ("c", 0), ("d", 1), ("e", 0)] {
        enqueue(&mut s, t, qos, &mut ops);
    }
    assert_eq!(
        take(&mut s, &mut ops),
        vec![
            publish("a", QosPid::Level1(pid(1)), false),
            publish("b", QosPid::Level2(pid(2)), false),
            publish("c", QosPid::Level0, false),
        ],
        "the window (2) is full at d; e waits behind it"
    );
    assert!(s.complete(pid(1), &mut ops));
    assert_eq!(
        take(&mut s, &mut ops),
        vec![
            publish("d", QosPid::Level1(pid(3)), false),
            publish("e", QosPid::Level0, false),
        ]
    );
}

#[test]
fn a_first_send_records_the_packet_id_and_completion_dequeues() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    enqueue(&mut s, "a", 1, &mut ops);
    ops.clear();
    take(&mut s, &mut ops);
    assert!(matches!(
        ops.as_slice(),
        [Op::MarkSent { seq: 1, pid: p, released: false, .. }] if *p == pid(1)
    ));
    ops.clear();
    assert!(s.complete(pid(1), &mut ops));
    assert!(matches!(ops.as_slice(), [Op::Dequeue { seq: 1, .. }]));
    assert!(s.inflight.is_empty());
}

#[test]
fn requeued_deliveries_go_first_with_dup_and_their_packet_ids() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    enqueue(&mut s, "a", 1, &mut ops);
    enqueue(&mut s, "b", 1, &mut ops);
    take(&mut s, &mut ops);
    enqueue(&mut s, "c", 1, &mut ops);
    reconnect(&mut s, &mut ops);
    assert_eq!(
        take(&mut s, &mut ops),
        vec![
            publish("a", QosPid::Level1(pid(1)), true),
            publish("b", QosPid::Level1(pid(2)), true),
        ]
    );
    assert!(s.complete(pid(2), &mut ops));
    assert_eq!(
        take(&mut s, &mut ops),
        vec![publish("c", QosPid::Level1(pid(3)), false)]
    );
}

#[test]
fn a_received_qos2_delivery_is_redelivered_as_pubrel() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    enqueue(&mut s, "a", 2, &mut ops);
    take(&mut s, &mut ops);
    ops.clear();
    assert!(s.mark_received(pid(1), &mut ops));
    assert!(matches!(
        ops.as_slice(),
        [Op::MarkSent { released: true, .. }]
    ));
    reconnect(&mut s, &mut ops);
    assert_eq!(take(&mut s, &mut ops), vec![Sent::Pubrel(pid(1))]);
    assert!(s.complete(pid(1), &mut ops));
    assert!(s.inflight.is_empty() && s.queue.is_empty());
}

#[test]
fn acknowledgements_of_unknown_packet_ids_change_nothing() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    assert!(!s.complete(pid(9), &mut ops));
    assert!(!s.mark_received(pid(9), &mut ops));
    assert!(ops.is_empty());
}

#[test]
fn an_expired_message_is_dropped_before_its_first_send_only() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    let mut old = message("old");
    old.received_ms = now_ms() - 5_000;
    old.expiry_secs = Some(1);
    s.enqueue(Arc::new(old), 1, false, vec![], LIMITS, &mut ops);
    ops.clear();
    assert!(take(&mut s, &mut ops).is_empty());
    assert!(matches!(ops.as_slice(), [Op::Dequeue { seq: 1, .. }]));

    let mut soon = message("soon");
    soon.expiry_secs = Some(1);
    s.enqueue(Arc::new(soon), 1, false, vec![], LIMITS, &mut ops);
    take(&mut s, &mut ops);
    reconnect(&mut s, &mut ops);
    let later = now_ms() + 5_000;
    let out = s.take_outgoing(16, later, LIMITS, &mut ops);
    assert_eq!(
        out.len(),
        1,
        "sent once: the receiver may hold it, so it is resent"
    );
}

#[test]
fn qos2_packet_ids_are_duplicates_until_released() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    assert!(s.receive_qos2(pid(5), &mut ops));
    assert!(!s.receive_qos2(pid(5), &mut ops), "a resent copy");
    assert!(s.release_qos2(pid(5), &mut ops));
    assert!(!s.release_qos2(pid(5), &mut ops));
    let present: Vec<bool> = ops
        .iter()
        .map(|op| match op {
            Op::Qos2In { present, .. } => *present,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(present, vec![true, false]);
}

#[test]
fn resuming_with_expiry_zero_deletes_the_stored_session() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    enqueue(&mut s, "a", 1, &mut ops);
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    s.claim(false, now_ms());
    ops.clear();
    s.attach(request(0, None), link(2), &mut ops);
    assert!(
        matches!(ops.as_slice(), [Op::ForgetSession(_)]),
        "the record goes at once, {ops:?}"
    );
    assert!(
        s.stored(),
        "its queue rows stay until delivered or the session ends"
    );
    let mut disk = Disk::default();
    disk.rows.insert(1, record_of("a"));
    ops.clear();
    assert!(disk.refill(&mut s, &mut ops));
    assert_eq!(disk.rows[&1].pid, 1, "its id recorded with the read");
    take(&mut s, &mut ops);
    assert!(s.complete(pid(1), &mut ops));
    assert!(matches!(ops.as_slice(), [Op::Dequeue { seq: 1, .. }]));
}

pub(super) fn record_of(topic: &str) -> DeliveryRecord {
    DeliveryRecord {
        msg: message(topic),
        qos: 1,
        retain: false,
        sub_ids: vec![],
        pid: 0,
        released: false,
    }
}

#[test]
fn subscriptions_are_bounded_per_session_but_may_be_replaced() {
    let mut s = online(0, None);
    let opts = SubOptions::test(1, 0);
    assert_eq!(s.subscribe("a".into(), opts, 2), Ok(false));
    assert_eq!(s.subscribe("b".into(), opts, 2), Ok(false));
    assert_eq!(
        s.subscribe("c".into(), opts, 2),
        Err(SubscribeReasonCode::QuotaExceeded)
    );
    assert_eq!(s.subscribe("a".into(), opts, 2), Ok(true));
    assert!(s.unsubscribe("a"));
    assert!(!s.unsubscribe("a"));
}

#[test]
fn a_restored_session_resumes_its_queue_without_reusing_packet_ids() {
    let record = |pid: u16, released: bool| DeliveryRecord {
        msg: message("r"),
        qos: 2,
        retain: false,
        sub_ids: vec![],
        pid,
        released,
    };
    let mut loaded = loaded_session(vec![]);
    loaded.record.will = Some(will(5));
    loaded.queue = crate::storage::QueueShape {
        messages: 3,
        bytes: 3 * message("r").weight() as u64,
        first_seq: 4,
        next_seq: 10,
        sent: [(4, 1), (7, 2)].into_iter().collect(),
    };
    loaded.qos2_in = vec![pid(3)];
    let mut disk = Disk::default();
    disk.rows.insert(4, record(1, false));
    disk.rows.insert(7, record(2, true));
    disk.rows.insert(9, record(0, false));
    let mut s = Session::restore("client".into(), loaded, 50_000);
    assert!(s.stored());
    assert_eq!(
        s.disconnected_ms().map(|d| d.get()),
        Some(50_000),
        "cut off by the crash"
    );
    assert_eq!(s.will().and_then(|w| w.due_ms), Some(55_000));
    assert_eq!(s.next_seq, 10);
    let mut ops = Vec::new();
    assert!(!s.receive_qos2(pid(3), &mut ops), "still awaiting PUBREL");
    s.claim(false, 50_001);
    s.attach(request(60, None), link(1), &mut ops);
    s.inflight_limit = 3;
    assert_eq!(s.window_len(), 0, "nothing read at start");
    assert_eq!(s.queued_len(), 3);
    assert!(disk.refill(&mut s, &mut ops));
    assert_eq!(
        take(&mut s, &mut ops),
        vec![
            publish("r", QosPid::Level2(pid(1)), true),
            Sent::Pubrel(pid(2)),
            publish("r", QosPid::Level2(pid(3)), false),
        ]
    );
}

#[test]
fn a_read_that_does_not_wait_takes_the_committed_prefix_and_reads_the_rest_later() {
    let mut s = online(60, None);
    let mut ops = Vec::new();
    let mut disk = Disk::default();
    s.detach(now_ms(), Departure::Abnormal, 3600, &mut Vec::new());
    for t in ["a", "b", "c"] {
        enqueue(&mut s, t, 1, &mut ops);
    }
    s.claim(false, now_ms());
    s.attach(request(60, None), link(2), &mut ops);
    disk.apply(&mut ops);
    let c = disk.rows.remove(&3).expect("c stored"); // not committed yet
    let r = s.refill_request(usize::MAX).expect("a read");
    s.refilled(r, false, disk.read(r), &mut ops);
    assert_eq!(
        (s.window_len(), s.queued_len()),
        (2, 3),
        "a and b in memory"
    );
    disk.rows.insert(3, c);
    assert_eq!(drain(&mut s, &mut disk, &mut ops), ["a", "b", "c"]);
}

/// What start-up reads of session "client" (MQTT 5, expiry 60 s) with `subscriptions`, no
/// will and an empty queue.
pub(super) fn loaded_session(subscriptions: Vec<(String, SubOptions)>) -> LoadedSession {
    LoadedSession {
        client_id: "client".into(),
        user: None,
        record: SessionRecord {
            protocol: 5,
            expiry_secs: 60,
            subscriptions,
            disconnected_ms: None,
            will: None,
        },
        queue: Default::default(),
        qos2_in: vec![],
    }
}

#[test]
fn a_drained_window_and_in_flight_window_give_their_memory_back() {
    let mut s = online(0, None);
    s.inflight_limit = 1000;
    let mut ops = Vec::new();
    for _ in 0..1000 {
        s.enqueue(msg("a"), 1, false, vec![], ROOMY, &mut ops);
    }
    assert_eq!(s.queue.len(), 1000);
    let mut pids = Vec::new();
    while pids.len() < 1000 {
        let out = s.take_outgoing(64, now_ms(), ROOMY, &mut ops);
        assert!(!out.is_empty(), "{} taken", pids.len());
        pids.extend(out.iter().filter_map(|o| match o {
            Outgoing::Publish { qos_pid, .. } => qos_pid.pid(),
            Outgoing::Pubrel(_) => None,
        }));
    }
    assert!(
        s.queue.is_empty() && s.queue.capacity() <= 64,
        "window shrunk"
    );
    assert_eq!(s.inflight.len(), 1000);
    for p in pids {
        assert!(s.complete(p, &mut ops));
    }
    assert!(
        s.inflight.is_empty() && s.inflight.capacity() <= 64,
        "in-flight shrunk"
    );
}

#[test]
fn a_waiting_delivery_takes_32_bytes_and_keeps_its_subscription_ids() {
    // 64 with the subscription identifiers in a `Vec` (see `SubIds`), 48 with the whole
    // reservation round in `OutState::Reserved`, 40 with its low 32 bits and the retain and
    // stored flags as two `bool`s.
    assert!(std::mem::size_of::<super::queue::Delivery>() <= 32);
    assert_eq!(
        super::queue::SubIds::from(Vec::new()),
        super::queue::SubIds::default()
    );
    let mut s = online(0, None);
    s.inflight_limit = 10;
    let mut ops = Vec::new();
    s.enqueue(msg("a"), 1, false, vec![7, 9], ROOMY, &mut ops);
    s.enqueue(msg("b"), 0, false, vec![3], ROOMY, &mut ops);
    s.enqueue(msg("c"), 1, false, vec![], ROOMY, &mut ops);
    let ids: Vec<_> = s
        .take_outgoing(10, now_ms(), ROOMY, &mut ops)
        .into_iter()
        .map(|o| match o {
            Outgoing::Publish { sub_ids, .. } => sub_ids,
            Outgoing::Pubrel(_) => panic!("no PUBREL expected"),
        })
        .collect();
    assert_eq!(ids, vec![vec![7, 9], vec![3], vec![]]);
    // A redelivery after a reconnection carries them again.
    let pid = s.inflight.front().and_then(|d| d.state.pid());
    s.requeue_inflight();
    let again = s.take_outgoing(10, now_ms(), ROOMY, &mut ops);
    assert!(
        matches!(again.first(), Some(Outgoing::Publish { sub_ids, qos_pid, .. })
        if *sub_ids == vec![7, 9] && qos_pid.pid() == pid)
    );
}

#[test]
fn a_reservation_round_is_found_from_its_low_half_across_the_wrap() {
    use super::queue::round_from_low;
    assert_eq!(round_from_low(7, 7), 7);
    assert_eq!(round_from_low(7, 3), 3);
    let wrapped = (1u64 << 32) + 5;
    assert_eq!(round_from_low(wrapped, 5), wrapped);
    assert_eq!(round_from_low(wrapped, 2), wrapped - 3);
    assert_eq!(round_from_low(wrapped, u16::MAX), (1u64 << 32) - 1);
    assert_eq!(round_from_low(wrapped, u16::MAX - 8190), wrapped - 8196);
    // Across the low half's own wrap, a window of rounds behind.
    let low_wrapped = (1u64 << 16) + 100;
    assert_eq!(round_from_low(low_wrapped, 100), low_wrapped);
    assert_eq!(
        round_from_low(low_wrapped, u16::MAX - 8000),
        (1u64 << 16) - 8001
    );
}
