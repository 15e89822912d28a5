//! Store-and-forward sync, end to end: the edge broker with a `[sync]` table, a real upstream
//! `mosquitto` (started here on a free 127.0.0.1 port), local publishers and subscribers on the
//! edge (rumqttc) and an MQTT 5 observer on the upstream that reads the `edge-msg-id` user
//! property of every forwarded message. The edge runs in the test process, except where a test
//! kills it with `kill -9` or measures its memory and disk writes: there it is the
//! `robustmq-edge` binary (`start_edge_process`).
//!
//! The upstream is usually reached through a small TCP proxy owned by the test (mosquitto and the
//! proxy are in `sync_support/upstream.rs`), so the link can be taken down (listener closed, live
//! connections reset), brought back, or turned into a black hole (bytes swallowed, nothing
//! closed) while the observer stays subscribed to mosquitto.
//!
//! Each failure of peer brokers' bridges listed in `peer-failures.md` maps to a test:
//!
//! | reported failure | test |
//! |---|---|
//! | offline data lost, silent drops beyond `max_queued_messages` (mosquitto #3472, #3394) | `backlog_built_while_upstream_down_arrives_complete_in_order` (3,000 messages, session limit 100), `full_backlog_under_drop_oldest_*` (drops counted) |
//! | queue limits do not apply, memory grows while the remote is unreachable (mosquitto #1729, #3296; nanomq #1853, #1506) | `memory_and_disk_writes_stay_bounded_with_50_mib_buffered`, `full_backlog_under_*` |
//! | the same QoS 1/2 messages re-sent again and again after a reconnect; no bridge with a backlog above 20 (mosquitto #2165, #2248, #3002) | `backlog_built_while_upstream_down_*` (link cut mid-drain: duplicates at most one window) |
//! | power loss corrupts persistence; a corrupt file stops the broker (mosquitto #2639, #3159, #3160) | `kill_9_mid_burst_and_mid_drain_loses_nothing`; a damaged file is set aside, what can be read of it salvaged, and message ids never start over: `durability.rs` `a_damaged_database_is_set_aside_and_the_broker_serves_with_an_empty_one`, `after_a_zeroed_database_is_set_aside_message_ids_continue_above_the_old_ones`, `storage/damaged_tests.rs`, `storage/salvage_tests.rs` |
//! | every durable save rewrites the whole file (mosquitto #3695) | `memory_and_disk_writes_stay_bounded_*` (bytes written per message do not grow with the backlog) |
//! | backlog released as a flood, no pacing (mosquitto #1359) | `paced_drain_does_not_flood_the_upstream` |
//! | cache deleted before the remote acknowledged, silent link failure loses it (nanomq #2432) | `silent_link_failure_redelivers_what_was_not_acknowledged` |
//! | the cache only flushes when a new message arrives (nanomq #2423) | every backlog test: nothing is published after the link comes back |
//! | backlog drains far too slowly (nanomq #1980) | `backlog_built_while_upstream_down_*` (time bound), `scripts/bench-sync.sh` |
//! | resuming switched off because it duplicated messages (nanomq #1864) | `backlog_built_while_upstream_down_*`, `silent_link_failure_*` (duplicates bounded, ids let the cloud drop them) |
//! | no persistence, retained messages lost, out of memory (rumqttd #967, #920, #599) | `kill_9_*`, `memory_*`, `online_forwarding_*` (retained forwarded), `downlink_*` (retained kept locally) |
//!
//! Plus online forwarding (topic mapping, ids, order), reject_new, TTL, downlink without loops,
//! and a TLS upstream with a CA generated here.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use robustmq_edge_e2e::rumqttc::{self, QoS};
use robustmq_edge_e2e::*;

use rumqttc::v5::mqttbytes::QoS as Q5;

mod sync_support;
use sync_support::*;

/// Forward rule used by most tests: `sensors/#` -> `edge/gw1/sensors/#`.
const SENSORS: &str =
    "[[sync.forward]]\nfilter = \"sensors/#\"\nprefix = \"edge/{node_id}/\"\nqos = 1\n";

/// Peak VmRSS sampler for a process.
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Bytes the process passed to write-like system calls (`wchar` of /proc/PID/io).
fn written_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    s.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wchar in /proc/PID/io")
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kib.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(rss) = proc_status_kib(pid, "VmRSS:") {
                    p.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            peak_kib,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes payload `i` at QoS 1 on `sensors/cap` and returns the PUBACK reason.
async fn publish_v5(v5: &mut V5Client, i: usize) -> v5bytes::PubAckReason {
    v5.client
        .publish("sensors/cap", Q5::AtLeastOnce, false, payload(i, 100))
        .await
        .expect("queue PUBLISH");
    v5.events
        .wait_for("PUBACK", WAIT, |e| match e {
            rumqttc::v5::Event::Incoming(V5Packet::PubAck(a)) => Some(a.reason),
            _ => None,
        })
        .await
}

/// The edge forwarding by `rules` straight to mosquitto on 127.0.0.1:`port` (no proxy, no
/// pacing), returned once its status reports the link connected.
async fn start_edge_connected(port: u16, rules: &str) -> Broker {
    let edge = start_edge(edge_config(
        "",
        &format!("tcp://127.0.0.1:{port}"),
        UNPACED,
        rules,
    ));
    wait_status(edge.data_dir(), "link connected", WAIT, |s| {
        json_str(s, "link_state").as_deref() == Some("connected")
    })
    .await;
    edge
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// The start of most tests here: [`upstream_behind_down_link`], and the edge broker (in this
/// process) forwarding `rules` through the link, with `top` and `sync_extra` in its config.
async fn edge_behind_down_link(
    top: &str,
    sync_extra: &str,
    rules: &str,
) -> (Mosquitto, Observer, Proxy, Broker) {
    let (mq, obs, proxy) = upstream_behind_down_link().await;
    let edge = start_edge(edge_config(top, &proxy.url(), sync_extra, rules));
    (mq, obs, proxy, edge)
}

/// [`edge_behind_down_link`] forwarding the `SENSORS` rule, with `sync_extra` in `[sync]`.
async fn sensors_behind_down_link(sync_extra: &str) -> (Mosquitto, Observer, Proxy, Broker) {
    edge_behind_down_link("", sync_extra, SENSORS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_forwarding_maps_topics_keeps_order_and_tags_every_message() {
    let mq = Mosquitto::start("");
    let obs = Observer::start(mq.port, &["#"]).await;
    let rules = format!(
        "{SENSORS}[[sync.forward]]\nfilter = \"plant/#\"\nqos = 2\n\
         replace_prefix = {{ from = \"plant/\", to = \"site/{{node_id}}/\" }}\n"
    );
    let edge = start_edge_connected(mq.port, &rules).await;

    // 200 QoS 1 messages from an MQTT 3.1.1 publisher.
    publish_all(edge.port(), "sensors/temp", 0..200, 0).await;
    // MQTT 5 publisher: user property kept, QoS 0 captured, retain carried, QoS 2 rule,
    // a topic no rule takes.
    let mut v5 = V5Client::connect(&edge, &unique("v5pub")).await;
    let props = v5bytes::PublishProperties {
        user_properties: vec![("unit".into(), "C".into())],
        ..Default::default()
    };
    v5.publish_with("sensors/hum", Q5::AtLeastOnce, false, "200", Some(props))
        .await;
    v5.publish("sensors/qos0", Q5::AtMostOnce, false, "201")
        .await;
    v5.publish("other/x", Q5::AtLeastOnce, false, "9999").await;
    v5.publish("sensors/state", Q5::AtLeastOnce, true, "202")
        .await;
    v5.publish("plant/line1/speed", Q5::ExactlyOnce, false, "203")
        .await;

    // Everything goes through one lane in capture order, so once the last one is there,
    // anything wrongly forwarded (other/x) would have arrived before it.
    let got = obs
        .wait("204 forwarded messages", WAIT, |g| {
            g.iter()
                .any(|m| m.topic == format!("site/{NODE}/line1/speed"))
        })
        .await;
    let d = check_delivery(&got, &range_set(0..204), &BTreeSet::new());
    assert_eq!(d.duplicates, 0, "duplicates on a healthy link");
    let topic_of = |n: usize| {
        got.iter()
            .find(|g| g.number() == n)
            .map(|g| g.topic.clone())
            .unwrap()
    };
    for n in [0, 199] {
        assert_eq!(topic_of(n), "edge/gw1/sensors/temp");
    }
    assert_eq!(topic_of(201), "edge/gw1/sensors/qos0");
    assert_eq!(topic_of(203), "site/gw1/line1/speed");
    let hum = got.iter().find(|g| g.number() == 200).unwrap();
    assert_eq!(hum.topic, "edge/gw1/sensors/hum");
    assert!(
        hum.props.contains(&("unit".into(), "C".into())),
        "user property lost: {:?}",
        hum.props
    );
    let speed = got.iter().find(|g| g.number() == 203).unwrap();
    assert_eq!(speed.qos, 2, "rule qos 2 not used upstream");
    let state = got.iter().find(|g| g.number() == 202).unwrap();
    assert!(state.retain, "retain flag not forwarded: {state:?}");
    assert!(
        got.iter()
            .all(|g| g.topic.starts_with("edge/gw1/sensors/") || g.topic.starts_with("site/gw1/")),
        "a message no rule takes was forwarded: {:?}",
        got.iter().map(|g| &g.topic).collect::<BTreeSet<_>>()
    );
    // The retained one is kept upstream as retained.
    let late = Observer::start(mq.port, &["edge/gw1/sensors/state"]).await;
    let r = late
        .wait("retained copy upstream", WAIT, |g| !g.is_empty())
        .await;
    assert!(r[0].retain && r[0].number() == 202, "{:?}", r[0]);

    let s = wait_drained(edge.data_dir(), WAIT, Some(204)).await;
    assert_eq!(json_u64(&s, "next_seq"), 205, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_built_while_upstream_down_arrives_complete_in_order() {
    const N: usize = 3000;
    // The session limit of the local broker must not bound the outbox (mosquitto #3472).
    // Paced at 3,000/s so the link can be cut mid-drain.
    let (_mq, obs, proxy, edge) = edge_behind_down_link(
        "[limits]\nmax_queued_messages = 100\n",
        "max_messages_per_sec = 3000\nmax_bytes_per_sec = 0\n",
        SENSORS,
    )
    .await;
    let t = Instant::now();
    publish_all(edge.port(), "sensors/bulk", 0..N, 0).await;
    eprintln!("{N} QoS 1 publishes acknowledged in {:?}", t.elapsed());
    let s = wait_status(edge.data_dir(), "3000 buffered", WAIT, |s| {
        json_u64(s, "backlog_messages") == N as u64
    })
    .await;
    assert_eq!(json_u64(&s, "full"), 0, "{s}");
    assert_eq!(
        obs.len(),
        0,
        "something reached the upstream while it was down"
    );

    // Up, nothing published any more (nanomq #2423); cut the link mid-drain once.
    let t = Instant::now();
    proxy.set(Link::Up);
    obs.wait("a third of the backlog", Duration::from_secs(20), |g| {
        g.len() >= N / 3
    })
    .await;
    proxy.set(Link::Down);
    let at_cut = obs.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Link::Up);
    let got = obs.wait_distinct(N, Duration::from_secs(30)).await;
    let drain = t.elapsed();
    let d = check_delivery(&got, &range_set(0..N), &BTreeSet::new());
    eprintln!(
        "drained {N} in {drain:?} (cut at {at_cut}): {} distinct, {} duplicates",
        d.distinct, d.duplicates
    );
    // One cut: at most the window in flight (max_inflight 64) is sent again.
    assert!(
        d.duplicates <= 64,
        "{} duplicates after one link cut",
        d.duplicates
    );
    let s = wait_drained(edge.data_dir(), WAIT, None).await;
    assert_eq!(json_u64(&s, "acked"), N as u64, "{s}");
    assert_eq!(json_u64(&s, "full"), 0, "{s}");
    // After the drain nothing more: no replays once everything is acknowledged.
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        obs.len(),
        got.len(),
        "messages re-sent after the drain completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_and_mid_drain_loses_nothing() {
    let (_mq, obs, proxy) = upstream_behind_down_link().await;
    let mut edge = start_edge_process(edge_config(
        "",
        &proxy.url(),
        "max_messages_per_sec = 1000\nmax_bytes_per_sec = 0\n",
        SENSORS,
    ));

    // Mid-burst kill: the publisher is still sending when the broker dies.
    let count = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_qos1(
        edge.port(),
        "sensors/k",
        0..3000,
        0,
        Duration::from_secs(60),
        count.clone(),
    ));
    let t = Instant::now();
    while count.load(Ordering::SeqCst) < 1000 {
        assert!(t.elapsed() < Duration::from_secs(30), "publisher stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    edge.kill9();
    let first = within(WAIT, "publisher to notice the kill", publisher)
        .await
        .unwrap();
    assert!(
        first.error.is_some(),
        "publisher did not lose its connection"
    );
    let acked1 = first.acked;
    assert!(acked1.len() >= 1000);

    // Killed broker: its database needs the repair of the next start, so `sync status` cannot
    // read it; it must say the figures are stale instead of passing the last status file off as
    // a running broker's.
    let s = sync_status(edge.data_dir());
    assert_eq!(
        json_str(&s, "link_state").as_deref(),
        Some("offline"),
        "{s}"
    );
    assert_eq!(
        json_str(&s, "source").as_deref(),
        Some("stale_status_file"),
        "{s}"
    );
    assert!(
        json_str(&s, "last_error").is_some_and(|e| e.contains("repair")),
        "{s}"
    );

    let restarted_ms = unix_ms();
    edge.restart();
    let s = wait_status(
        edge.data_dir(),
        "status of the restarted broker",
        WAIT,
        |s| {
            json_str(s, "source").as_deref() == Some("broker")
                && json_u64(s, "updated_at_ms") > restarted_ms
        },
    )
    .await;
    let buffered = json_u64(&s, "backlog_messages");
    assert!(
        buffered >= acked1.len() as u64,
        "{buffered} buffered after the restart, {} were acknowledged: {s}",
        acked1.len()
    );
    publish_all(edge.port(), "sensors/k", 3000..4000, 0).await;
    // Clean stop: exact backlog (from the database, or from the status file the sync shutdown
    // writes last; `clean_stop_leaves_a_database_sync_status_can_read` checks which).
    edge.stop();
    let s = sync_status(edge.data_dir());
    assert_eq!(json_u64(&s, "backlog_messages"), buffered + 1000, "{s}");
    edge.restart();

    // Mid-drain kill.
    proxy.set(Link::Up);
    obs.wait("500 forwarded", Duration::from_secs(20), |g| g.len() >= 500)
        .await;
    edge.kill9();
    let at_kill = obs.len();
    edge.restart();

    let mut expected = acked1.clone();
    expected.extend(3000..4000);
    let t = Instant::now();
    let got = obs
        .wait("every acknowledged message", Duration::from_secs(30), |g| {
            let seen: BTreeSet<usize> = g.iter().map(|m| m.number()).collect();
            expected.is_subset(&seen)
        })
        .await;
    // Published before the kill but never acknowledged: may or may not be there.
    let maybe: BTreeSet<usize> = (0..3000).filter(|i| !acked1.contains(i)).collect();
    let d = check_delivery(&got, &expected, &maybe);
    eprintln!(
        "kill -9 mid-drain at {at_kill} received; all {} acknowledged arrived {:?} after restart; \
         {} distinct, {} duplicates",
        expected.len(),
        t.elapsed(),
        d.distinct,
        d.duplicates
    );
    let s = wait_drained(edge.data_dir(), WAIT, None).await;
    assert_eq!(json_u64(&s, "acked"), d.distinct as u64, "{s}");
    edge.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_leaves_a_database_sync_status_can_read() {
    let proxy = Proxy::start(free_port(), Link::Down);
    let mut edge = start_edge(edge_config("", &proxy.url(), UNPACED, SENSORS));
    publish_all(edge.port(), "sensors/stop", 0..50, 0).await;
    let status = edge.stop();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    // After SIGTERM the database must be closed cleanly: read directly (exact), not through the
    // status file, and the next start needs no repair.
    let s = sync_status(edge.data_dir());
    assert_eq!(json_u64(&s, "backlog_messages"), 50, "{s}");
    assert_eq!(
        json_str(&s, "source").as_deref(),
        Some("database"),
        "the broker left its database needing a repair after a clean stop: {s}"
    );
}

/// A database zeroed by a power cut is set aside (`storage.on_damaged`) and nothing of it can be
/// read: the outbox of the new one must not count `edge-msg-id`s from 1 again, or the cloud,
/// which drops replays by that id, would drop new messages as replays of old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_zeroed_database_is_set_aside_message_ids_continue_above_the_old_ones() {
    let proxy = Proxy::start(free_port(), Link::Down);
    let mut edge = start_edge_process(edge_config("", &proxy.url(), UNPACED, SENSORS));
    publish_all(edge.port(), "sensors/before", 0..50, 0).await;
    assert!(edge.stop().success());
    let s = sync_status(edge.data_dir());
    assert_eq!(json_u64(&s, "next_seq"), 51, "{s}");
    let db = edge.data_dir().join("edge.redb");
    let len = std::fs::metadata(&db).expect("database").len() as usize;
    std::fs::write(&db, vec![0u8; len]).expect("zero the database");
    edge.restart();
    assert!(edge.log().contains("salvage"), "{}", edge.log());
    publish_all(edge.port(), "sensors/after", 0..5, 0).await;
    assert!(edge.stop().success());
    let s = sync_status(edge.data_dir());
    assert_eq!(
        json_u64(&s, "backlog_messages"),
        5,
        "the old backlog was in the zeroed file: {s}"
    );
    let next = json_u64(&s, "next_seq");
    assert!(
        next > 1_000_000_000,
        "ids from 1 again would be taken for replays: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backlog_under_drop_oldest_drops_the_oldest_and_counts_them() {
    const N: usize = 200;
    let (_mq, obs, proxy, edge) = sensors_behind_down_link(&format!(
        "{UNPACED}max_backlog_bytes = 8192\nfull_policy = \"drop_oldest\"\n"
    ))
    .await;
    publish_all(edge.port(), "sensors/cap", 0..N, 100).await;
    let s = wait_status(
        edge.data_dir(),
        "every message buffered or dropped",
        WAIT,
        |s| json_u64(s, "backlog_messages") + json_u64(s, "full") == N as u64,
    )
    .await;
    let kept = json_u64(&s, "backlog_messages") as usize;
    let dropped = json_u64(&s, "full") as usize;
    assert!(json_u64(&s, "backlog_bytes") <= 8192, "{s}");
    assert!(
        kept > 10 && dropped > 50,
        "8 KiB should hold a few dozen: {s}"
    );

    proxy.set(Link::Up);
    let got = obs.wait_distinct(kept, WAIT).await;
    // Exactly the newest `kept` survive, in order: the oldest were dropped.
    let d = check_delivery(&got, &range_set(dropped..N), &BTreeSet::new());
    assert_eq!(d.distinct, kept);
    let s = wait_drained(edge.data_dir(), WAIT, None).await;
    assert_eq!(
        json_u64(&s, "full") as usize,
        dropped,
        "drop count changed: {s}"
    );
    assert_eq!(json_u64(&s, "acked") as usize, kept, "{s}");
    assert_eq!(json_u64(&s, "rejected"), 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backlog_under_reject_new_refuses_v5_with_0x97_and_disconnects_v311() {
    let (_mq, obs, proxy, edge) = sensors_behind_down_link(&format!(
        "{UNPACED}max_backlog_bytes = 8192\nfull_policy = \"reject_new\"\n"
    ))
    .await;
    let mut v5 = V5Client::connect(&edge, &unique("rej5")).await;
    let mut accepted = 0;
    loop {
        let r = publish_v5(&mut v5, accepted).await;
        match r {
            v5bytes::PubAckReason::Success | v5bytes::PubAckReason::NoMatchingSubscribers => {
                accepted += 1
            }
            v5bytes::PubAckReason::QuotaExceeded => break,
            other => panic!("PUBACK {other:?} for message {accepted}"),
        }
        assert!(accepted < 200, "8 KiB outbox never reported full");
    }
    assert!(accepted > 10, "only {accepted} accepted before the quota");
    // Still full: refused again (and the connection stays up).
    for i in 0..3 {
        assert_eq!(
            publish_v5(&mut v5, 1000 + i).await,
            v5bytes::PubAckReason::QuotaExceeded
        );
    }
    // MQTT 3.1.1 has no negative PUBACK: the publisher is disconnected, never acknowledged.
    let mut v3 = V3Client::connect(&edge, &unique("rej3"), true).await;
    v3.publish_refused_by_close(
        "sensors/cap",
        payload(2000, 100),
        "on a full reject_new outbox",
    )
    .await;
    let s = wait_status(edge.data_dir(), "rejections counted", WAIT, |s| {
        json_u64(s, "rejected") >= 5
    })
    .await;
    assert_eq!(json_u64(&s, "backlog_messages") as usize, accepted, "{s}");
    assert_eq!(json_u64(&s, "full"), 0, "{s}");

    // Link up: exactly the accepted ones arrive, none of the refused.
    proxy.set(Link::Up);
    let got = obs.wait_distinct(accepted, WAIT).await;
    check_delivery(&got, &range_set(0..accepted), &BTreeSet::new());
    wait_drained(edge.data_dir(), WAIT, None).await;
    // Room again: accepted and forwarded.
    assert!(matches!(
        publish_v5(&mut v5, 500).await,
        v5bytes::PubAckReason::Success | v5bytes::PubAckReason::NoMatchingSubscribers
    ));
    obs.wait("message accepted after the drain", WAIT, |g| {
        g.iter().any(|m| m.number() == 500)
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let got = obs.snapshot();
    let mut exp = range_set(0..accepted);
    exp.insert(500);
    check_delivery(&got, &exp, &BTreeSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_their_ttl_are_dropped_counted_and_never_sent() {
    let rules =
        "[[sync.forward]]\nfilter = \"ttl/#\"\nprefix = \"edge/{node_id}/\"\nttl_secs = 1\n\
                 [[sync.forward]]\nfilter = \"keep/#\"\nprefix = \"edge/{node_id}/\"\n";
    let (_mq, obs, proxy, edge) = edge_behind_down_link("", UNPACED, rules).await;
    publish_all(edge.port(), "ttl/a", 0..20, 0).await;
    publish_all(edge.port(), "keep/a", 20..40, 0).await;
    let s = wait_status(
        edge.data_dir(),
        "20 dropped by TTL",
        Duration::from_secs(10),
        |s| json_u64(s, "ttl") == 20,
    )
    .await;
    assert_eq!(json_u64(&s, "backlog_messages"), 20, "{s}");

    proxy.set(Link::Up);
    // The kept ones were captured after the expired ones: once they are all there, an expired
    // one would have arrived before them.
    let got = obs.wait_distinct(20, WAIT).await;
    check_delivery(&got, &range_set(20..40), &BTreeSet::new());
    assert!(got.iter().all(|g| g.topic == "edge/gw1/keep/a"), "{got:?}");
    let s = wait_drained(edge.data_dir(), WAIT, None).await;
    assert_eq!(json_u64(&s, "ttl"), 20, "{s}");
    assert_eq!(json_u64(&s, "acked"), 20, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlink_delivers_with_qos_and_retain_and_never_loops_back_up() {
    let mq = Mosquitto::start("");
    let obs = Observer::start(mq.port, &["edge/#"]).await;
    // A forward rule matching the downlinked topics: they must still not go back up.
    let rules = "[[sync.forward]]\nfilter = \"cmd/#\"\nprefix = \"edge/{node_id}/\"\n\
                 [[sync.downlink]]\nfilter = \"cmd/{node_id}/#\"\nqos = 2\n";
    let edge = start_edge(edge_config(
        "",
        &format!("tcp://127.0.0.1:{}", mq.port),
        UNPACED,
        rules,
    ));
    let mut local = V5Client::connect(&edge, &unique("local")).await;
    let mut f = v5bytes::Filter::new("cmd/gw1/#", Q5::ExactlyOnce);
    f.preserve_retain = true;
    local.subscribe_with(f, None).await;

    let mut o = rumqttc::v5::MqttOptions::new(unique("cloud"), "127.0.0.1", mq.port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true);
    let mut cloud = V5Client::connect_with(o).await;
    probe_downlink(
        &mut cloud,
        &mut local,
        "cmd/gw1/probe",
        Q5::AtMostOnce,
        Duration::from_millis(200),
        Duration::from_secs(15),
    )
    .await;

    let commands = [
        ("cmd/gw1/reboot", Q5::AtLeastOnce, true, "now"),
        ("cmd/gw1/q0", Q5::AtMostOnce, false, "zero"),
        ("cmd/gw1/q2", Q5::ExactlyOnce, false, "two"),
    ];
    assert_sent_down(&mut cloud, &mut local, "cmd/gw1/probe", WAIT, &commands).await;
    // The retained command is kept locally for later subscribers.
    let mut late = V3Client::subscribed(&edge, "late", "cmd/gw1/reboot", QoS::AtLeastOnce).await;
    let r = late.recv(WAIT).await;
    assert!(r.retain && r.payload == "now", "{r:?}");

    // No loop: a local publish on the same topics is forwarded, and it is the first and only
    // thing the upstream sees under edge/ (same lane, capture order).
    let mut pubr = V3Client::connect(&edge, &unique("localpub"), true).await;
    pubr.publish("cmd/gw1/local", QoS::AtLeastOnce, false, "7")
        .await;
    let got = obs
        .wait("the local control message upstream", WAIT, |g| {
            !g.is_empty()
        })
        .await;
    assert_eq!(got[0].topic, "edge/gw1/cmd/gw1/local", "{got:?}");
    tokio::time::sleep(QUIET).await;
    let got = obs.snapshot();
    assert_eq!(got.len(), 1, "downlinked messages went back up: {got:?}");
    let s = wait_status(edge.data_dir(), "downlink counted", WAIT, |s| {
        json_u64(s, "downlink_delivered") >= 4
    })
    .await;
    assert_eq!(json_u64(&s, "acked"), 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_disk_writes_stay_bounded_with_50_mib_buffered() {
    const N: usize = 30_000;
    const WARM_UP: usize = 2_000;
    const CHUNK: usize = 4_000;
    const SIZE: usize = 1700;
    const CACHE_MIB: u64 = 4;
    let (_mq, obs, proxy) = upstream_behind_down_link().await;
    let edge = start_edge_process(edge_config(
        &format!("[storage]\ncache_size_bytes = {}\n", CACHE_MIB << 20),
        &proxy.url(),
        UNPACED,
        SENSORS,
    ));
    let pid = edge.pid();
    // Warm up (first commits, first outbox pages), then take the baseline.
    publish_all(edge.port(), "sensors/mem", 0..WARM_UP, SIZE).await;
    let base_kib = proc_status_kib(pid, "VmRSS:").unwrap();
    let sampler = RssSampler::start(pid);
    let mut writes = Vec::new();
    let mut rss = Vec::new();
    let t = Instant::now();
    for chunk in 0..(N - WARM_UP) / CHUNK {
        let w0 = written_bytes(pid);
        let from = WARM_UP + chunk * CHUNK;
        publish_all(edge.port(), "sensors/mem", from..from + CHUNK, SIZE).await;
        writes.push((written_bytes(pid) - w0) / CHUNK as u64);
        rss.push(proc_status_kib(pid, "VmRSS:").unwrap());
    }
    let fill = t.elapsed();
    let s = wait_status(edge.data_dir(), "all buffered", WAIT, |s| {
        json_u64(s, "backlog_messages") == N as u64
    })
    .await;
    let backlog_mib = json_u64(&s, "backlog_bytes") >> 20;
    let fill_peak = sampler.peak_kib();
    eprintln!(
        "filled {N} x {SIZE} B in {fill:?}: backlog {backlog_mib} MiB on disk; RSS baseline \
         {base_kib} KiB, after each {CHUNK}-message chunk {rss:?} KiB, peak {fill_peak} KiB; \
         bytes written per message by chunk: {writes:?}"
    );
    // Bound: baseline + the redb page cache (4 MiB, `storage.cache_size_bytes`) + 16 MiB of
    // allocator slack: glibc gives each thread its own arena and the outbox is read and written
    // from several (measured: +10 MiB filling, +15 MiB draining; +4/+5 MiB with
    // MALLOC_ARENA_MAX=1). The backlog is ~50 MiB: a bridge buffering it in memory cannot fit.
    let bound_kib = base_kib + ((CACHE_MIB + 16) << 10);
    assert!(backlog_mib >= 45, "{s}");
    assert!(
        fill_peak <= bound_kib,
        "RSS peaked at {fill_peak} KiB while buffering offline (bound {bound_kib} KiB)"
    );
    // And it does not follow the backlog: the last three chunks (~20 MiB) add at most 4 MiB.
    let late_growth = rss[rss.len() - 1].saturating_sub(rss[rss.len() - 4]);
    assert!(
        late_growth <= 4 * 1024,
        "RSS grew {late_growth} KiB over the last {} messages: {rss:?}",
        3 * CHUNK
    );
    // Bytes written per message do not grow with the backlog (no whole-file rewrite per save,
    // mosquitto #3695), and stay a small multiple of the message.
    let first = writes[0].max(1);
    let last = *writes.last().unwrap();
    assert!(
        last <= first * 2,
        "bytes written per message grew with the backlog: {writes:?}"
    );
    assert!(
        last < 16 * 1024,
        "{last} bytes written per {SIZE}-byte message"
    );

    // Drain: memory stays within the same bound.
    let t = Instant::now();
    proxy.set(Link::Up);
    let got = obs.wait_distinct(N, Duration::from_secs(90)).await;
    let d = check_delivery(&got, &range_set(0..N), &BTreeSet::new());
    let drain_peak = sampler.peak_kib();
    eprintln!(
        "drained in {:?} ({} duplicates); RSS peak over fill and drain {drain_peak} KiB",
        t.elapsed(),
        d.duplicates
    );
    assert!(
        drain_peak <= bound_kib,
        "RSS peaked at {drain_peak} KiB while draining (bound {bound_kib} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_with_generated_ca_is_verified_and_forwards() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki("sync-e2e");
    let ca_file = write_pem(certs.path(), "ca.pem", &ca);
    let cert_file = write_pem(certs.path(), "server.pem", &cert);
    let key_file = write_pem(certs.path(), "server.key", &key);
    let tls_port = free_port();
    let mq = Mosquitto::start(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    ));
    wait_port(tls_port, "mosquitto TLS listener");
    let obs = Observer::start(mq.port, &["edge/#"]).await;
    let tls = |ca: &Path| {
        format!(
            "{UNPACED}[sync.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
            ca.display()
        )
    };
    let edge = start_edge(edge_config(
        "",
        &format!("tls://127.0.0.1:{tls_port}"),
        &tls(&ca_file),
        SENSORS,
    ));
    publish_all(edge.port(), "sensors/tls", 0..100, 0).await;
    let got = obs.wait_distinct(100, WAIT).await;
    check_delivery(&got, &range_set(0..100), &BTreeSet::new());
    // The status file is written every second: it may still be the one from before the link
    // came up.
    let upstream = format!("tls://127.0.0.1:{tls_port}");
    let s = wait_status(edge.data_dir(), "TLS upstream in the status", WAIT, |s| {
        json_str(s, "current_upstream").is_some()
    })
    .await;
    assert_eq!(
        json_str(&s, "current_upstream").as_deref(),
        Some(upstream.as_str()),
        "{s}"
    );

    // A CA that did not sign the server certificate: refused, said so, nothing sent.
    let (other_ca, _, _) = make_pki("other");
    let other_file = write_pem(certs.path(), "other-ca.pem", &other_ca);
    let bad = start_edge(
        edge_config(
            "",
            &format!("tls://127.0.0.1:{tls_port}"),
            &tls(&other_file),
            SENSORS,
        )
        .replace("node_id = \"gw1\"", "node_id = \"gw2\""),
    );
    publish_all(bad.port(), "sensors/tls", 100..110, 0).await;
    let s = wait_status(bad.data_dir(), "a TLS error and 10 buffered", WAIT, |s| {
        json_str(s, "last_error").is_some() && json_u64(s, "backlog_messages") == 10
    })
    .await;
    let err = json_str(&s, "last_error").unwrap().to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer") || err.contains("tls"),
        "last_error does not name the TLS problem: {err}"
    );
    assert_eq!(json_u64(&s, "acked"), 0, "{s}");
    assert_eq!(obs.len(), got.len(), "the unverified edge sent something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_drain_does_not_flood_the_upstream() {
    const N: usize = 600;
    const RATE: usize = 200;
    let (_mq, obs, proxy, edge) = sensors_behind_down_link(&format!(
        "max_messages_per_sec = {RATE}\nmax_bytes_per_sec = 0\n"
    ))
    .await;
    publish_all(edge.port(), "sensors/paced", 0..N, 0).await;
    wait_status(edge.data_dir(), "buffered", WAIT, |s| {
        json_u64(s, "backlog_messages") == N as u64
    })
    .await;
    proxy.set(Link::Up);
    let got = obs.wait_distinct(N, Duration::from_secs(20)).await;
    check_delivery(&got, &range_set(0..N), &BTreeSet::new());
    let t0 = got[0].at;
    let span = got.last().unwrap().at - t0;
    let first_second = got
        .iter()
        .filter(|g| g.at - t0 < Duration::from_secs(1))
        .count();
    eprintln!("{N} at {RATE}/s: {span:?} from first to last, {first_second} in the first second");
    // Token bucket of one second: a burst of RATE, then RATE per second.
    assert!(
        span >= Duration::from_millis(((N - RATE) * 1000 / RATE) as u64 * 8 / 10),
        "drained in {span:?}: pacing not applied"
    );
    assert!(
        first_second <= 2 * RATE + 20,
        "{first_second} in the first second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_link_failure_redelivers_what_was_not_acknowledged() {
    const N: usize = 1500;
    let (_mq, obs, proxy, edge) = sensors_behind_down_link(
        "max_messages_per_sec = 1000\nmax_bytes_per_sec = 0\nkeep_alive_secs = 1\n",
    )
    .await;
    publish_all(edge.port(), "sensors/silent", 0..N, 0).await;
    proxy.set(Link::Up);
    obs.wait("300 forwarded", Duration::from_secs(20), |g| g.len() >= 300)
        .await;
    // Everything sent from now on disappears, acks included, and nobody closes anything.
    proxy.set(Link::Blackhole);
    let before = obs.len();
    let s = wait_status(
        edge.data_dir(),
        "keep-alive timeout noticed",
        Duration::from_secs(15),
        |s| json_str(s, "last_error").is_some_and(|e| e.contains("keep alive")),
    )
    .await;
    // Every record removed as acknowledged really reached the upstream (the observer's count
    // is read after the status, and mosquitto -> observer is not behind the black hole).
    let acked = json_u64(&s, "acked") as usize;
    assert_eq!(json_u64(&s, "backlog_messages") as usize, N - acked, "{s}");
    let seen = distinct_numbers(&obs.snapshot());
    assert!(
        acked <= seen,
        "{acked} records removed as acknowledged, only {seen} reached the upstream: {s}"
    );
    proxy.set(Link::Up);
    let got = obs.wait_distinct(N, Duration::from_secs(30)).await;
    let d = check_delivery(&got, &range_set(0..N), &BTreeSet::new());
    eprintln!(
        "after a black hole at {before}: {} duplicates",
        d.duplicates
    );
    assert!(
        d.duplicates <= 64,
        "{} duplicates after one silent failure",
        d.duplicates
    );
    wait_drained(edge.data_dir(), WAIT, Some(N as u64)).await;
}

/// Schedules end to end with the real clock: a rule whose window (UTC, to the second) opens
/// a few seconds after start keeps its records in the outbox while an unscheduled rule's
/// records flow, then sends them all, in order, once the window is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rule_waits_for_its_window_while_live_traffic_flows() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let mq = Mosquitto::start("");
    let obs = Observer::start(mq.port, &["#"]).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let open_s = now.as_secs() + 12;
    let open_at = Instant::now() + (Duration::from_secs(open_s) - now);
    let hms = |t: u64| {
        let d = t % 86_400;
        format!("{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
    };
    let rules = format!(
        "[[sync.forward]]\nfilter = \"logs/#\"\nprefix = \"edge/{{node_id}}/\"\n\
         schedule = {{ windows = [\"{}-{}\"] }}\n{SENSORS}",
        hms(open_s),
        hms(open_s + 3600)
    );
    let edge = start_edge_connected(mq.port, &rules).await;
    publish_all(edge.port(), "logs/app", 0..100, 0).await;
    publish_all(edge.port(), "sensors/temp", 100..200, 0).await;
    obs.wait("live readings", WAIT, |g| {
        g.iter()
            .filter(|m| m.topic == "edge/gw1/sensors/temp")
            .count()
            == 100
    })
    .await;
    let s = wait_status(edge.data_dir(), "logs waiting", WAIT, |s| {
        json_u64(s, "backlog_messages") == 100
    })
    .await;
    if Instant::now() < open_at {
        assert!(s.contains("\"in_window\": false"), "{s}");
    }
    let got = obs
        .wait(
            "logs after the window opened",
            Duration::from_secs(60),
            |g| g.iter().filter(|m| m.topic == "edge/gw1/logs/app").count() >= 100,
        )
        .await;
    let logs: Vec<&Got> = got
        .iter()
        .filter(|m| m.topic == "edge/gw1/logs/app")
        .collect();
    assert_eq!(
        logs.iter().map(|m| m.number()).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>(),
        "logs out of order or duplicated"
    );
    // The gate reads the wall clock; allow its 100 ms polling granularity the other way.
    let early = open_at - Duration::from_millis(100);
    assert!(
        logs.iter().all(|m| m.at >= early),
        "a log arrived before its window opened"
    );
    wait_drained(edge.data_dir(), WAIT, None).await;
}
