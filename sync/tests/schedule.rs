//! Schedules against a real mosquitto, on a `ManualClock` (no waiting for 01:00): records of a
//! scheduled rule wait in the outbox outside its window and go, in order, when it opens, while
//! unscheduled traffic in the same lane keeps flowing; a rule limited to one upstream waits for
//! it; an upstream with a schedule is used only inside its window.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use edge_sync::schedule::ManualClock;
use edge_sync::{start_with_clock, LinkState, Outbox, SyncConfig};

/// 2024-01-01 00:00 UTC, a Monday.
const MONDAY: u64 = 1_704_067_200_000;
const HOUR: u64 = 3_600_000;

fn sync_cfg(upstreams: &str, extra: &str) -> SyncConfig {
    let s = format!(
        "node_id = \"n1\"\nupstreams = [{upstreams}]\nstatus_interval_secs = 1\n\
         max_messages_per_sec = 0\nmax_bytes_per_sec = 0\n\
         backoff = {{ initial_ms = 100, max_ms = 300 }}\n{extra}"
    );
    SyncConfig::from_toml_str(&s).unwrap()
}

fn start(
    t: &TestDb,
    cfg: SyncConfig,
    clock: &Arc<ManualClock>,
) -> (Arc<Outbox>, edge_sync::SyncHandle) {
    let ob = t.outbox(&cfg);
    let h = start_with_clock(
        ob.clone(),
        cfg,
        t.path().to_path_buf(),
        Arc::new(TestBus::default()),
        clock.clone(),
    );
    (ob, h)
}

/// `logs/#` only 01:00-05:00 (UTC), `live/#` always; both in the same priority lane.
const RULES: &str =
    "[[forward]]\nfilter = \"logs/#\"\nschedule = { windows = [\"01:00-05:00\"] }\n\
    [[forward]]\nfilter = \"live/#\"\n";

fn payloads(got: &[Got], prefix: &str) -> Vec<u64> {
    got.iter()
        .filter(|g| g.topic.starts_with(prefix))
        .map(|g| g.payload.parse().expect("numeric payload"))
        .collect()
}

/// Interleaved: `logs/a` i, `live/a` i, for i in range.
fn capture_interleaved(ob: &Outbox, db: &redb::Database, range: std::ops::Range<u64>) {
    for i in range {
        let p = i.to_string().into_bytes();
        capture(ob, db, &[("logs/a", p.clone(), 1), ("live/a", p, 1)]);
    }
}

/// A fresh mosquitto with a subscriber on `filter`, a new test database, and a clock at
/// Monday 12:00 UTC.
fn monday_noon(filter: &str) -> (Mosquitto, Subscriber, TestDb, Arc<ManualClock>) {
    let (mq, sub) = Mosquitto::with_subscriber(filter);
    let clock = Arc::new(ManualClock::new(MONDAY + 12 * HOUR));
    (mq, sub, TestDb::new(), clock)
}

/// Captures `logs/a` and `live/a` 0..n interleaved: `sub` gets the n live readings in order
/// and, half a second later, still no log (`held` says why they must wait).
fn assert_live_flows_while_logs_wait(
    ob: &Outbox,
    db: &redb::Database,
    sub: &Subscriber,
    n: u64,
    held: &str,
) {
    capture_interleaved(ob, db, 0..n);
    let got = sub.wait_for(n as usize, Duration::from_secs(20));
    assert_eq!(payloads(&got, "live/"), (0..n).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    let got = sub.got.lock().unwrap().clone();
    assert!(payloads(&got, "logs/").is_empty(), "{held}");
}

#[test]
fn records_outside_the_window_wait_and_go_in_order_when_it_opens() {
    let (mq, sub, t, clock) = monday_noon("#");
    let cfg = sync_cfg(&format!("\"tcp://127.0.0.1:{}\"", mq.port), RULES);
    let (ob, h) = start(&t, cfg, &clock);
    assert!(wait_connected(&h));

    // Out of the window: live readings flow past the waiting logs of the same lane.
    assert_live_flows_while_logs_wait(&ob, &t.db, &sub, 200, "logs sent out of window");
    let st = h.status();
    assert_eq!(st.backlog_messages, 200, "the logs wait in the outbox");
    let rule = &st.schedules[0];
    assert_eq!((rule.kind.as_str(), rule.window.in_window), ("rule", false));
    assert_eq!(rule.window.next_open_ms, Some(MONDAY + 24 * HOUR + HOUR));

    // The window opens: every waiting log goes, in capture order, and new ones follow.
    clock.set(MONDAY + 25 * HOUR);
    capture_interleaved(&ob, &t.db, 200..300);
    let got = sub.wait_for(600, Duration::from_secs(30));
    assert_eq!(payloads(&got, "logs/"), (0..300).collect::<Vec<_>>());
    assert_eq!(payloads(&got, "live/"), (0..300).collect::<Vec<_>>());
    let logs_seq: Vec<u64> = got
        .iter()
        .filter(|g| g.topic.starts_with("logs/"))
        .map(Got::seq)
        .collect();
    assert!(
        logs_seq.windows(2).all(|w| w[0] < w[1]),
        "logs out of order"
    );
    assert!(wait_backlog(&h, 0));
    let st = h.status();
    assert_eq!(
        st.redelivered, 0,
        "logs that waited are first deliveries, not DUP"
    );
    assert!(st.schedules[0].window.in_window);
    assert_eq!(
        st.schedules[0].window.closes_at_ms,
        Some(MONDAY + 29 * HOUR)
    );

    // Closed again at 05:00: new logs wait, live goes on.
    clock.set(MONDAY + 29 * HOUR);
    std::thread::sleep(Duration::from_millis(300));
    capture_interleaved(&ob, &t.db, 300..350);
    let got = sub.wait_for(650, Duration::from_secs(20));
    assert_eq!(payloads(&got, "live/").len(), 350);
    std::thread::sleep(Duration::from_millis(500));
    let got = sub.got.lock().unwrap().clone();
    assert_eq!(payloads(&got, "logs/").len(), 300, "logs sent after 05:00");
    assert_eq!(h.status().backlog_messages, 50);
    smol::block_on(h.shutdown());
}

#[test]
fn held_records_survive_a_restart_and_wait_for_their_window() {
    let (mq, sub, t, clock) = monday_noon("logs/#");
    let up = format!("\"tcp://127.0.0.1:{}\"", mq.port);
    let (ob, h) = start(&t, sync_cfg(&up, RULES), &clock);
    capture_interleaved(&ob, &t.db, 0..100);
    assert!(wait_backlog(&h, 100));
    smol::block_on(h.shutdown());
    drop(ob);
    let t = t.reopen();
    let (ob, h) = start(&t, sync_cfg(&up, RULES), &clock);
    assert!(wait_connected(&h));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sub.got.lock().unwrap().is_empty(),
        "held logs sent after restart"
    );
    clock.set(MONDAY + 26 * HOUR);
    let got = sub.wait_for(100, Duration::from_secs(20));
    assert_eq!(payloads(&got, "logs/"), (0..100).collect::<Vec<_>>());
    smol::block_on(h.shutdown());
    drop(ob);
}

#[test]
fn a_rule_limited_to_one_upstream_waits_for_it() {
    // Upstream 0 stands for cellular, upstream 1 for the depot's Wi-Fi.
    let cell = Mosquitto::start();
    let depot_port = free_port();
    let cell_sub = Subscriber::start(cell.port, "#");
    let t = TestDb::new();
    let clock = Arc::new(ManualClock::new(MONDAY));
    let depot = format!("tcp://127.0.0.1:{depot_port}");
    let ups = format!("\"tcp://127.0.0.1:{}\", \"{depot}\"", cell.port);
    let rules = format!(
        "[[forward]]\nfilter = \"logs/#\"\nupstreams = [\"{depot}\"]\n[[forward]]\nfilter = \"live/#\"\n"
    );
    let (ob, h) = start(&t, sync_cfg(&ups, &rules), &clock);
    assert!(wait_connected(&h));
    assert_live_flows_while_logs_wait(&ob, &t.db, &cell_sub, 100, "logs sent over cellular");
    assert_eq!(h.status().schedules[0].upstreams, vec![depot.clone()]);

    // Back at the depot: cellular is gone, the depot link comes up, the logs go there.
    let depot_mq = Mosquitto::start_on(depot_port, "");
    let depot_sub = Subscriber::start(depot_port, "#");
    drop(cell);
    let got = depot_sub.wait_for(100, Duration::from_secs(30));
    assert_eq!(payloads(&got, "logs/"), (0..100).collect::<Vec<_>>());
    assert!(wait_backlog(&h, 0));
    smol::block_on(h.shutdown());
    drop(depot_mq);
}

#[test]
fn an_upstream_with_a_schedule_is_used_only_inside_its_window() {
    let (mq, sub, t, clock) = monday_noon("#");
    let up = format!("tcp://127.0.0.1:{}", mq.port);
    let extra = format!(
        "[[upstream_schedule]]\nupstream = \"{up}\"\nwindows = [\"22:00-02:00\"]\n\
         [[forward]]\nfilter = \"live/#\"\n"
    );
    let (ob, h) = start(&t, sync_cfg(&format!("\"{up}\""), &extra), &clock);
    capture_n(&ob, &t.db, "live/a", 0, 50);
    assert!(wait_until(Duration::from_secs(5), || h.status().link_state
        == LinkState::OutsideWindow));
    std::thread::sleep(Duration::from_millis(300));
    assert!(sub.got.lock().unwrap().is_empty());
    let up_status = &h.status().schedules[0];
    assert_eq!(up_status.kind, "upstream");
    assert_eq!(up_status.window.next_open_ms, Some(MONDAY + 22 * HOUR));

    clock.set(MONDAY + 23 * HOUR);
    let got = sub.wait_for(50, Duration::from_secs(20));
    assert_eq!(payloads(&got, "live/"), (0..50).collect::<Vec<_>>());

    // 02:00 the next day: the session ends and nothing more goes up.
    clock.set(MONDAY + 26 * HOUR);
    assert!(wait_until(Duration::from_secs(5), || h.status().link_state
        == LinkState::OutsideWindow));
    capture_n(&ob, &t.db, "live/a", 50, 10);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sub.got.lock().unwrap().len(), 50);
    assert_eq!(h.status().backlog_messages, 10);
    smol::block_on(h.shutdown());
}

#[test]
fn schedule_config_errors_name_the_key() {
    assert_rule_errors(&[
        (
            "schedule = { windows = [] }",
            "sync.forward[0].schedule.windows",
        ),
        (
            "schedule = { windows = [\"1-5\"] }",
            "sync.forward[0].schedule.windows",
        ),
        (
            "schedule = { windows = [\"01:00-05:00\"], days = [\"someday\"] }",
            "sync.forward[0].schedule.days",
        ),
        (
            "schedule = { windows = [\"01:00-05:00\"], hours = 3 }",
            "sync.forward[0].schedule",
        ),
        (
            "upstreams = [\"tcp://elsewhere:1883\"]",
            "sync.forward[0].upstreams",
        ),
        ("upstreams = []", "sync.forward[0].upstreams"),
    ]);
    let bad = |extra: &str| {
        SyncConfig::from_toml_str(&format!(
            "node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1\"]\n{extra}"
        ))
        .unwrap_err()
        .to_string()
    };
    assert!(bad("timezone = \"Mars/Olympus\"").contains("sync.timezone"));
    let e = bad("[[upstream_schedule]]\nupstream = \"tcp://other:1\"\nwindows = [\"01:00-02:00\"]");
    assert!(e.contains("sync.upstream_schedule[0].upstream"), "{e}");
    let e = SyncConfig::from_toml_str(
        "node_id = \"n1\"\nupstreams = [\"http://127.0.0.1:1\"]\n\
         [[upstream_schedule]]\nupstream = \"http://127.0.0.1:1\"\nwindows = [\"01:00-02:00\"]",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("sync.upstream_schedule") && e.contains("HTTP"),
        "{e}"
    );
    let e = bad("[[upstream_schedule]]\nupstream = \"tcp://127.0.0.1:1\"\nwindows = [\"x\"]");
    assert!(e.contains("sync.upstream_schedule[0].windows"), "{e}");
}
