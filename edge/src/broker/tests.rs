//! The broker's cross-session decisions, driven through its API over a temporary database (no
//! socket): tickets, routing, take-over, the end of a session.

use bytes::Bytes;
use mqtt_proto::v5::SubscribeReasonCode;
use mqtt_proto::{Pid, QoS, QosPid};

use super::*;
use crate::session::Kick;
use crate::topic::SubOptions;

struct TestBroker {
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

fn broker() -> TestBroker {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let (store, loaded) = Store::open(&cfg).expect("open store");
    TestBroker {
        broker: Broker::new(Arc::new(cfg), store, loaded),
        _dir: dir,
    }
}

fn connect(b: &Broker, id: &str, expiry_secs: u32) -> Connected {
    smol::block_on(b.connect(ConnectRequest {
        client_id: id.into(),
        protocol: 5,
        clean_start: false,
        expiry_secs,
        will: None,
        inflight_limit: 16,
        acl: crate::auth::ClientAcl::unrestricted(),
        username: None,
    }))
}

fn subscribe(b: &Broker, id: &str, filter: &str) -> Vec<SubResult> {
    let opts = SubOptions::test(1, 0);
    smol::block_on(b.subscribe(&id.into(), vec![(filter.into(), opts)])).0
}

fn publish(b: &Broker, topic: &str, qos: u8, retain: bool) -> Published {
    let msg = Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"x"),
        qos,
        retain,
        received_ms: now_ms(),
        expiry_secs: None,
        publisher: "publisher".into(),
        from_downlink: false,
        props: None,
    });
    smol::block_on(b.publish(msg, None))
}

fn matched(p: Published) -> bool {
    match p {
        Published::Accepted { matched, .. } => matched,
        other => panic!("not accepted: {other:?}"),
    }
}

fn pid(n: u16) -> Pid {
    Pid::try_from(n).expect("non-zero")
}

#[test]
fn only_changes_that_write_something_get_a_ticket() {
    let t = broker();
    assert_eq!(connect(&t.broker, "transient", 0).ticket, None);
    let ticket = connect(&t.broker, "persistent", 60)
        .ticket
        .expect("session stored");
    smol::block_on(t.broker.store.wait(ticket)).expect("committed");
    let (existed, ticket) = smol::block_on(t.broker.unsubscribe(&"nobody".into(), &["a".into()]));
    assert_eq!((existed, ticket), (vec![false], None));
}

#[test]
fn a_publish_is_delivered_with_a_packet_id_until_acknowledged() {
    let t = broker();
    let sub = connect(&t.broker, "sub", 0);
    assert_eq!(subscribe(&t.broker, "sub", "a/+"), vec![Ok(QoS::Level1)]);
    assert!(matched(publish(&t.broker, "a/b", 2, false)));
    let id: Arc<str> = "sub".into();
    let (out, _) = smol::block_on(t.broker.take_outgoing(&id, sub.conn_id, 8));
    assert!(matches!(
        out.as_slice(),
        [Outgoing::Publish { qos_pid: QosPid::Level1(p), dup: false, .. }] if *p == pid(1)
    ));
    assert!(smol::block_on(t.broker.complete(&id, pid(1))));
    assert!(!smol::block_on(t.broker.complete(&id, pid(1))));
}

#[test]
fn a_qos2_publish_resent_before_pubrel_is_not_routed_again() {
    let t = broker();
    connect(&t.broker, "publisher", 0);
    let sub = connect(&t.broker, "sub", 0);
    subscribe(&t.broker, "sub", "t");
    let publisher: Arc<str> = "publisher".into();
    let msg = Arc::new(Message::test(
        "t",
        Bytes::from_static(b"x"),
        2,
        publisher.clone(),
    ));
    let first = smol::block_on(t.broker.publish(msg.clone(), Some((&publisher, pid(7)))));
    assert!(matched(first));
    let again = smol::block_on(t.broker.publish(msg, Some((&publisher, pid(7)))));
    assert!(matches!(again, Published::Duplicate { .. }));
    let (out, _) = smol::block_on(t.broker.take_outgoing(&"sub".into(), sub.conn_id, 8));
    assert_eq!(out.len(), 1);
    let (known, _) = smol::block_on(t.broker.release(&publisher, pid(7)));
    assert!(known);
}

#[test]
fn a_second_connection_takes_the_session_over() {
    let t = broker();
    let first = connect(&t.broker, "c", 60);
    let second = connect(&t.broker, "c", 60);
    assert!(second.session_present);
    assert_eq!(first.wakeup.kicked(), Some(Kick::TakenOver));
    subscribe(&t.broker, "c", "t");
    publish(&t.broker, "t", 1, false);
    let id: Arc<str> = "c".into();
    let (stale, _) = smol::block_on(t.broker.take_outgoing(&id, first.conn_id, 8));
    assert!(stale.is_empty(), "the old connection gets nothing");
    // Its late departure does not detach the new connection.
    smol::block_on(t.broker.disconnect(&id, first.conn_id, Departure::Abnormal));
    let (out, _) = smol::block_on(t.broker.take_outgoing(&id, second.conn_id, 8));
    assert_eq!(out.len(), 1);
}

#[test]
fn an_ended_session_leaves_the_subscription_tree() {
    let t = broker();
    let c = connect(&t.broker, "c", 0);
    subscribe(&t.broker, "c", "t/#");
    assert!(matched(publish(&t.broker, "t/1", 1, false)));
    smol::block_on(
        t.broker
            .disconnect(&"c".into(), c.conn_id, Departure::Abnormal),
    );
    assert!(!matched(publish(&t.broker, "t/1", 1, false)));
    assert_eq!(
        subscribe(&t.broker, "c", "t/#"),
        vec![Err(SubscribeReasonCode::UnspecifiedError)],
        "no session to subscribe"
    );
}

#[test]
fn a_retained_message_is_queued_for_a_new_subscription() {
    let t = broker();
    assert!(!matched(publish(&t.broker, "r", 1, true)));
    let c = connect(&t.broker, "c", 0);
    subscribe(&t.broker, "c", "r");
    let (out, _) = smol::block_on(t.broker.take_outgoing(&"c".into(), c.conn_id, 8));
    assert!(matches!(
        out.as_slice(),
        [Outgoing::Publish { retain: true, .. }]
    ));
}

fn broker_with(change: impl FnOnce(&mut Config)) -> TestBroker {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    change(&mut cfg);
    let (store, loaded) = Store::open(&cfg).expect("open store");
    TestBroker {
        broker: Broker::new(Arc::new(cfg), store, loaded),
        _dir: dir,
    }
}

#[test]
fn sys_topics_stay_in_memory_and_do_not_count_against_the_retained_limit() {
    let t = broker_with(|c| c.limits.max_retained_messages = 1);
    let b = &t.broker;
    b.publish_sys(vec![
        ("$SYS/broker/uptime".into(), "1 seconds".into()),
        ("$SYS/broker/version".into(), "v".into()),
    ]);
    b.publish_sys(vec![("$SYS/broker/uptime".into(), "2 seconds".into())]);
    assert_eq!(b.store.latest_ticket(), None, "nothing was written");
    assert!(matches!(
        publish(b, "user/t", 1, true),
        Published::Accepted { .. }
    ));
    assert_eq!(b.gauges().retained_messages, 3, "user/t was retained");
    publish(b, "user/u", 1, true);
    assert_eq!(b.gauges().retained_messages, 3, "the user limit (1) holds");
    let c = b.stats.counters();
    assert_eq!(
        c.dropped[crate::stats::Dropped::RetainedLimit as usize].1,
        1
    );
}

fn broker_in(dir: &std::path::Path) -> Arc<Broker> {
    let cfg = Config {
        data_dir: dir.to_path_buf(),
        limits: crate::config::Limits {
            max_queued_messages: 100_000,
            ..Default::default()
        },
        ..Config::default()
    };
    let (store, loaded) = Store::open(&cfg).expect("open store");
    Broker::new(Arc::new(cfg), store, loaded)
}

/// Drains the session of connection `c` through the broker, acknowledging every delivery,
/// until `n` messages came or nothing more comes within a second: their payloads in order.
/// Stops early (leaving the last batch unacknowledged) after `stop_after` messages.
fn drain(b: &Arc<Broker>, id: &str, c: &Connected, n: usize, stop_after: usize) -> Vec<String> {
    let id: Arc<str> = id.into();
    let mut got = Vec::new();
    while got.len() < n {
        // Taken before looking: a wake-up after the look is kept for the wait below.
        c.wakeup.take();
        let (out, ticket) = smol::block_on(b.take_outgoing(&id, c.conn_id, 64));
        if let Some(t) = ticket {
            smol::block_on(b.store.wait(t)).expect("committed");
        }
        if out.is_empty() {
            let woke = smol::block_on(futures_lite::future::or(
                async {
                    futures_lite::future::poll_fn(|cx| c.wakeup.poll_woken(cx)).await;
                    true
                },
                async {
                    smol::Timer::after(std::time::Duration::from_secs(1)).await;
                    false
                },
            ));
            if !woke {
                break;
            }
            continue;
        }
        let mut pids = Vec::new();
        for o in out {
            if let Outgoing::Publish { msg, qos_pid, .. } = o {
                got.push(String::from_utf8_lossy(&msg.payload).into_owned());
                pids.extend(qos_pid.pid());
            }
        }
        if got.len() >= stop_after {
            return got;
        }
        for p in pids {
            assert!(smol::block_on(b.complete(&id, p)));
        }
    }
    got
}

/// Publishes `topic` with payloads `range` and waits until all are on disk (for the last
/// ticket: tickets commit in order, so the messages share commits).
fn publish_numbered(b: &Broker, topic: &str, range: std::ops::Range<usize>) {
    let mut last = None;
    for i in range {
        let msg = Arc::new(Message::test(
            topic,
            Bytes::from(i.to_string()),
            1,
            "publisher",
        ));
        if let Published::Accepted {
            ticket: Some(t), ..
        } = smol::block_on(b.publish(msg, None))
        {
            last = Some(t);
        }
    }
    if let Some(t) = last {
        smol::block_on(b.store.wait(t)).expect("committed");
    }
}

fn numbers(r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| i.to_string()).collect()
}

#[test]
fn a_backlog_longer_than_the_window_is_read_back_in_order_after_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let n = 3 * crate::session::WINDOW + 17;
    {
        let b = broker_in(dir.path());
        let c = connect(&b, "sub", 600);
        subscribe(&b, "sub", "t");
        smol::block_on(b.disconnect(&"sub".into(), c.conn_id, Departure::Abnormal));
        publish_numbered(&b, "t", 0..n);
        b.store.close();
    }
    let b = broker_in(dir.path());
    let c = connect(&b, "sub", 600);
    assert!(c.session_present);
    assert_eq!(drain(&b, "sub", &c, n, usize::MAX), numbers(0..n));
    assert!(
        drain(&b, "sub", &c, 1, usize::MAX).is_empty(),
        "nothing twice"
    );
}

/// Draining a stored backlog several windows long: the reads of the backlog never wait for
/// the writer (the rows are committed, and the ids of what they bring in are recorded with
/// them rather than before them). How often the sends waited (`DrainWaits`, first count) is
/// timed by the disk: the deterministic check of that is the session's
/// `a_drain_sends_ids_recorded_a_refill_ahead_so_it_waits_for_no_commit`.
#[test]
fn a_backlog_drain_reads_without_waiting_for_the_writer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let b = broker_in(dir.path());
    let n = 4 * crate::session::WINDOW + 3;
    let c = connect(&b, "sub", 600);
    subscribe(&b, "sub", "t");
    smol::block_on(b.disconnect(&"sub".into(), c.conn_id, Departure::Abnormal));
    publish_numbered(&b, "t", 0..n);
    let c = connect(&b, "sub", 600);
    assert_eq!(drain(&b, "sub", &c, n, usize::MAX), numbers(0..n));
    let (_, reads) = b.drain_waits.counts();
    assert_eq!(reads, 0, "no read of the backlog waited for the writer");
}

#[test]
fn the_pubacks_of_one_read_complete_their_deliveries_in_one_storage_batch() {
    let t = broker();
    let b = &t.broker;
    let c = connect(b, "sub", 600);
    subscribe(b, "sub", "t");
    for _ in 0..3 {
        publish(b, "t", 1, false);
    }
    let (out, _) = smol::block_on(b.take_outgoing(&"sub".into(), c.conn_id, 64));
    let pids: Vec<Pid> = out
        .iter()
        .filter_map(|d| match d {
            Outgoing::Publish { qos_pid, .. } => qos_pid.pid(),
            Outgoing::Pubrel(_) => None,
        })
        .collect();
    assert_eq!(pids.len(), 3);
    let before = b.store.latest_ticket();
    assert_eq!(smol::block_on(b.complete_all(&"sub".into(), &pids)), 3);
    let after = b.store.latest_ticket();
    assert_eq!(
        after.map(Ticket::number),
        Some(before.map_or(0, Ticket::number) + 1),
        "the three removals were pushed as one batch"
    );
    assert_eq!(
        smol::block_on(b.complete_all(&"sub".into(), &pids)),
        0,
        "acknowledged once only"
    );
    assert_eq!(b.gauges().queued_messages, 0);
}

#[test]
fn messages_beyond_a_full_queue_are_counted_as_queue_full_drops() {
    let t = broker_with(|c| c.limits.max_queued_messages = 1);
    let b = &t.broker;
    connect(b, "slow", 60);
    subscribe(b, "slow", "q/#");
    for _ in 0..3 {
        publish(b, "q/1", 1, false);
    }
    let g = b.gauges();
    assert_eq!(g.queued_messages, 1);
    assert_eq!(g.sessions_online, 1);
    assert_eq!(g.subscriptions, 1);
    let c = b.stats.counters();
    assert_eq!(c.dropped[crate::stats::Dropped::QueueFull as usize].1, 2);
}

#[test]
fn a_take_over_in_the_middle_of_a_backlog_resends_in_flight_then_reads_on() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let b = broker_in(dir.path());
    let n = 2 * crate::session::WINDOW + 5;
    let c = connect(&b, "sub", 600);
    subscribe(&b, "sub", "t");
    smol::block_on(b.disconnect(&"sub".into(), c.conn_id, Departure::Abnormal));
    publish_numbered(&b, "t", 0..n);
    let first = connect(&b, "sub", 600);
    let early = drain(&b, "sub", &first, n, 300);
    assert_eq!(early, numbers(0..early.len()));
    let second = connect(&b, "sub", 600);
    let unacked = early.len() % 16;
    let unacked = if unacked == 0 { 16 } else { unacked };
    let rest = drain(&b, "sub", &second, n, usize::MAX);
    assert_eq!(
        rest,
        numbers(early.len() - unacked..n),
        "the unacknowledged batch again, then the rest in order"
    );
}

#[test]
fn the_memory_bound_pauses_publishers_and_refuses_deliveries_kept_in_memory_only() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static USED: AtomicUsize = AtomicUsize::new(0);
    let mut t = broker();
    Arc::get_mut(&mut t.broker)
        .expect("not shared yet")
        .set_memory_meter(|| Some(USED.load(Ordering::Relaxed)));
    let max = t.broker.cfg.limits.max_memory;
    let sub = connect(&t.broker, "sub", 0);
    subscribe(&t.broker, "sub", "t");
    let congested = |p: Published| match p {
        Published::Accepted { congested, .. } => congested.map(|c| c.cause),
        other => panic!("not accepted: {other:?}"),
    };
    assert_eq!(congested(publish(&t.broker, "t", 1, false)), None);
    USED.store(max / 2 + 1, Ordering::Relaxed);
    assert_eq!(
        congested(publish(&t.broker, "t", 1, false)),
        Some(Cause::Memory)
    );
    USED.store(max / 8 * 5 + 1, Ordering::Relaxed);
    publish(&t.broker, "t", 1, false);
    let (out, _) = smol::block_on(t.broker.take_outgoing(&"sub".into(), sub.conn_id, 64));
    assert_eq!(out.len(), 2, "the third, for a clean session, was refused");
    USED.store(0, Ordering::Relaxed);
    let c = Congestion {
        cause: Cause::Memory,
        drained: Arc::new(event_listener::Event::new()),
    };
    assert!(!t.broker.congested(&c), "relieved under 3/8");
}

#[test]
fn a_qos0_flood_pauses_its_publisher_at_the_qos0_mark_and_lets_qos1_publishers_through() {
    use crate::session::{Mark, QOS0_PAUSE, QOS0_RESUME};
    let t = broker();
    let sub = connect(&t.broker, "sub", 0);
    subscribe(&t.broker, "sub", "t");
    let cause = |p: Published| match p {
        Published::Accepted { congested, .. } => congested.map(|c| c.cause),
        other => panic!("not accepted: {other:?}"),
    };
    for i in 1..QOS0_PAUSE {
        assert_eq!(cause(publish(&t.broker, "t", 0, false)), None, "after {i}");
    }
    let paused = Cause::Subscriber("sub".into(), Mark::Qos0);
    assert_eq!(
        cause(publish(&t.broker, "t", 0, false)),
        Some(paused.clone())
    );
    // Far under the queue's own mark (7,500): a QoS 1 delivery does not count towards the
    // QoS 0 one, and its publisher goes on.
    assert_eq!(cause(publish(&t.broker, "t", 1, false)), None);
    let c = Congestion {
        cause: paused,
        drained: Arc::new(event_listener::Event::new()),
    };
    assert!(t.broker.congested(&c));
    let mut taken = 0;
    while taken < QOS0_PAUSE - QOS0_RESUME {
        let (out, _) = smol::block_on(t.broker.take_outgoing(&"sub".into(), sub.conn_id, 64));
        assert!(!out.is_empty());
        taken += out.len();
    }
    assert!(!t.broker.congested(&c), "under the QoS 0 mark again");
}
