//! `window` rules: exact aggregates of 10,000 readings (simulated time), delivery through a real
//! mosquitto, and no accepted contribution lost when the capturing process is killed with -9.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_sync::outbox::PRIORITIES;
use edge_sync::Outbox;
use serde_json::Value;

const RULE: &str = "[[forward]]\nfilter = \"line/#\"\n\
    window = { secs = 1, fields = [\"temp\", \"rpm\"], topic = \"agg/{node_id}/{topic}\" }\n";

/// Every buffered record's payload, parsed.
fn buffered_json(ob: &Outbox) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for l in 0..PRIORITIES {
        for item in ob.read_lane(l, 0, usize::MAX, usize::MAX).unwrap() {
            let (_, r) = item.unwrap();
            out.push((r.topic, serde_json::from_slice(&r.payload).unwrap()));
        }
    }
    out
}

/// The readings of one window, in order, from which the test computes the aggregates the rule
/// should report.
#[derive(Default, Debug)]
struct Exp(Vec<f64>);

impl Exp {
    fn add(&mut self, v: f64) {
        self.0.push(v);
    }
    fn n(&self) -> u64 {
        self.0.len() as u64
    }
    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    fn sum(&self) -> f64 {
        self.0.iter().sum()
    }
    fn first(&self) -> f64 {
        self.0[0]
    }
    fn last(&self) -> f64 {
        self.0[self.0.len() - 1]
    }
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn ten_thousand_readings_give_the_right_aggregates() {
    let t = TestDb::new();
    let ob = t.outbox(&cfg(RULE));
    let t0 = 1_700_000_000_000u64;
    let mut exp: BTreeMap<(String, u64), Exp> = BTreeMap::new();
    // 10 sensors, 1,000 readings each, one every 7 ms: ~7 windows per sensor.
    for batch in 0..20 {
        let mut msgs = Vec::new();
        for k in 0..500 {
            let i = batch * 500 + k;
            let sensor = i % 10;
            let at = t0 + (i / 10) as u64 * 7;
            let temp = ((i * 37) % 1000) as f64 / 10.0 - 20.0;
            let topic = format!("line/s{sensor}/v");
            exp.entry((topic.clone(), at - at % 1000))
                .or_default()
                .add(temp);
            msgs.push((topic, at, format!("{{\"temp\":{temp},\"rpm\":{i}}}")));
        }
        // Each reading in its own broker-like transaction, at its own time.
        for (topic, at, p) in msgs {
            capture_at(&ob, &t.db, &[(topic.as_str(), p.into_bytes(), 1)], at);
        }
    }
    // Windows roll over as readings of the next second arrive; the last ones at flush.
    assert!(ob.next_window_due() < u64::MAX);
    ob.flush_due(t0 + 3_600_000).unwrap();
    assert_eq!(ob.next_window_due(), u64::MAX);
    let got = buffered_json(&ob);
    assert_eq!(got.len(), exp.len());
    let mut total = 0;
    for (remote, v) in &got {
        let local = v["topic"].as_str().unwrap().to_string();
        assert_eq!(remote, &format!("agg/n1/{local}"));
        let start = v["window_start_ms"].as_u64().unwrap();
        assert_eq!(v["window_end_ms"].as_u64().unwrap(), start + 1000);
        let e = &exp[&(local, start)];
        let f = &v["fields"]["temp"];
        assert_eq!(v["messages"].as_u64().unwrap(), e.n());
        assert_eq!(f["count"].as_u64().unwrap(), e.n());
        assert!(
            close(&f["min"], e.min()) && close(&f["max"], e.max()),
            "{v}"
        );
        assert!(
            close(&f["sum"], e.sum()) && close(&f["avg"], e.sum() / e.n() as f64),
            "{v}"
        );
        assert!(
            close(&f["first"], e.first()) && close(&f["last"], e.last()),
            "{v}"
        );
        assert_eq!(v["fields"]["rpm"]["count"].as_u64().unwrap(), e.n());
        total += e.n();
    }
    assert_eq!(total, 10_000);
    let s = &ob.rule_stats()[0];
    assert_eq!((s.messages_in, s.messages_out), (10_000, exp.len() as u64));
    assert!(s.bytes_saved > s.bytes_out * 10, "{s:?}");
}

#[test]
fn window_keys_are_validated() {
    assert_rule_errors(&[
        (
            "window = { fields = [\"t\"] }",
            "sync.forward[0].window.secs",
        ),
        (
            "window = { secs = 1, fields = [\"a..b\"] }",
            "sync.forward[0].window.fields",
        ),
        (
            "window = { secs = 1, ops = [\"median\"] }",
            "sync.forward[0].window.ops",
        ),
        (
            "window = { secs = 1 }\nlatest_only = true",
            "sync.forward[0].window",
        ),
        (
            "window = { secs = 1, topic = \"a/#\" }",
            "sync.forward[0].window.topic",
        ),
        (
            "window = { secs = 1, group_by = \"level:0\" }",
            "sync.forward[0].window.group_by",
        ),
        (
            "window = { secs = 1, group_by = \"{1}/{x}\" }",
            "sync.forward[0].window.group_by",
        ),
    ]);
}

/// The factory line: 1,000 sensors on 10 lines at 10 Hz for 3 s, grouped by line.
#[test]
fn group_by_level_aggregates_a_line_of_sensors_per_second() {
    let t = TestDb::new();
    let rule = "[[forward]]\nfilter = \"factory/#\"\n\
        window = { secs = 1, fields = [\"temp\"], group_by = \"level:2\", topic = \"agg/{topic}\" }\n";
    let ob = t.outbox(&cfg(rule));
    let t0 = 1_700_000_000_000u64;
    let mut exp: BTreeMap<(String, u64), Exp> = BTreeMap::new();
    for tick in 0..30u64 {
        let at = t0 + tick * 100;
        let mut msgs = Vec::new();
        for s in 0..1000u64 {
            let line = format!("factory/line{}", s % 10);
            let temp = ((s * 7 + tick * 13) % 100) as f64 / 4.0;
            exp.entry((line.clone(), at - at % 1000))
                .or_default()
                .add(temp);
            msgs.push((
                format!("{line}/sensor{s:04}/temp"),
                format!("{{\"temp\":{temp}}}"),
            ));
        }
        let msgs: Vec<(&str, Vec<u8>, u8)> = msgs
            .iter()
            .map(|(t, p)| (t.as_str(), p.clone().into_bytes(), 1))
            .collect();
        capture_at(&ob, &t.db, &msgs, at);
    }
    ob.flush_due(t0 + 3_600_000).unwrap();
    let got = buffered_json(&ob);
    // 10 lines x 3 seconds, each from 100 sensors x 10 readings.
    assert_eq!(got.len(), 30);
    assert_eq!(exp.len(), 30);
    for (remote, v) in &got {
        let group = v["topic"].as_str().unwrap().to_string();
        assert_eq!(remote, &format!("agg/{group}"));
        let e = &exp[&(group, v["window_start_ms"].as_u64().unwrap())];
        assert_eq!(v["messages"].as_u64().unwrap(), 1000);
        let f = &v["fields"]["temp"];
        assert_eq!(f["count"].as_u64().unwrap(), e.n());
        assert!(
            close(&f["min"], e.min()) && close(&f["max"], e.max()),
            "{v}"
        );
        assert!(close(&f["avg"], e.sum() / e.n() as f64), "{v}");
        assert!(
            close(&f["first"], e.first()) && close(&f["last"], e.last()),
            "{v}"
        );
    }
    let s = &ob.rule_stats()[0];
    assert_eq!((s.messages_in, s.messages_out), (30_000, 30));
}

/// Windows in progress, per topic or grouped (stored like per-topic ones), survive a restart:
/// ten readings before it and one after make one window of 11.
#[test]
fn windows_in_progress_survive_a_restart() {
    let grouped = "[[forward]]\nfilter = \"factory/#\"\n\
        window = { secs = 1, fields = [\"temp\"], group_by = \"{1}/{2}/{4}\" }\n";
    /// The local topic of reading i.
    type TopicOf = fn(u64) -> String;
    // (rule, local topic of reading i, of the reading after the restart, remote topic)
    let cases: [(&str, TopicOf, &str, Option<&str>); 2] = [
        (RULE, |_| "line/a".to_string(), "line/a", None),
        (
            grouped,
            |i| format!("factory/l1/s{i}/temp"),
            "factory/l1/s99/temp",
            Some("factory/l1/temp"),
        ),
    ];
    for (rule, topic_of, late_topic, remote) in cases {
        let t = TestDb::new();
        let c = cfg(rule);
        let ob = t.outbox(&c);
        let t0 = 1_700_000_000_000u64;
        for i in 0..10u64 {
            let p = format!("{{\"temp\":{i}}}").into_bytes();
            capture_at(&ob, &t.db, &[(topic_of(i).as_str(), p, 1)], t0 + i);
        }
        let (t, ob) = t.reopen_outbox(ob, &c);
        assert_eq!(ob.next_window_due(), t0 + 1000, "{rule}");
        let late = (late_topic, b"{\"temp\":10}".to_vec(), 1);
        capture_at(&ob, &t.db, &[late], t0 + 20);
        ob.flush_due(t0 + 1000).unwrap();
        let got = buffered_json(&ob);
        assert_eq!(got.len(), 1, "{rule}");
        if let Some(remote) = remote {
            assert_eq!(got[0].0, remote);
            assert_eq!(got[0].1["topic"], remote);
        }
        assert_eq!(got[0].1["messages"], 11, "{rule}");
        assert_eq!(got[0].1["fields"]["temp"]["sum"], 55.0, "{rule}");
    }
}

#[test]
fn window_aggregates_reach_mosquitto() {
    let (_mq, sub, t, ob, h) = connected_sync("agg/#", RULE);
    // 10,000 readings of 4 sensors, in batches as a broker would commit them.
    for b in 0..20 {
        let msgs: Vec<(String, Vec<u8>)> = (0..500)
            .map(|k| {
                let i = b * 500 + k;
                (
                    format!("line/s{}/v", i % 4),
                    format!("{{\"temp\":{i}}}").into_bytes(),
                )
            })
            .collect();
        capture_owned(&ob, &t.db, &msgs);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut n, mut sum) = (0u64, 0.0);
    while Instant::now() < deadline {
        let got = sub.got.lock().unwrap().clone();
        (n, sum) = got.iter().fold((0, 0.0), |(n, s), g| {
            let v: Value = serde_json::from_str(&g.payload).unwrap();
            (
                n + v["messages"].as_u64().unwrap(),
                s + v["fields"]["temp"]["sum"].as_f64().unwrap(),
            )
        });
        if n >= 10_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(n, 10_000);
    assert_eq!(sum, (0..10_000).sum::<u64>() as f64);
    smol::block_on(h.shutdown());
}

const CHILD_ENV: &str = "EDGE_WINDOW_KILL_CHILD_DIR";
const CHILD_RULE: &str =
    "[[forward]]\nfilter = \"k/#\"\nwindow = { secs = 3600, fields = [\"v\"] }\n";
const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;

/// Child: one reading per durable commit, printing `acked i` after each commit, until killed.
fn child(dir: &str) {
    let db = Arc::new(redb::Database::create(format!("{dir}/edge.redb")).unwrap());
    let ob = Outbox::open(db.clone(), &cfg(CHILD_RULE)).unwrap();
    for i in 0u64.. {
        let p = format!("{{\"v\":{i}}}").into_bytes();
        capture_at(&ob, &db, &[("k/a", p, 1)], T0 + 1 + i % 1000);
        println!("acked {i}");
    }
}

#[test]
fn kill_9_mid_window_loses_no_accepted_contribution() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_mid_window_loses_no_accepted_contribution",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(c.stdout.take().unwrap());
    let mut acked: Option<u64> = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().ok();
            if acked >= Some(300) {
                break;
            }
        }
    }
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    let acked = acked.expect("child acknowledged readings");
    let db = Arc::new(redb::Database::create(dir.path().join("edge.redb")).unwrap());
    let ob = Outbox::open(db.clone(), &cfg(CHILD_RULE)).unwrap();
    ob.flush_due(T0 + 3_600_000).unwrap();
    let got = buffered_json(&ob);
    assert_eq!(got.len(), 1);
    let m = got[0].1["messages"].as_u64().unwrap();
    // Every acknowledged reading is in; at most the ones committed after the last line printed.
    assert!(m > acked, "{m} readings aggregated, {acked} acknowledged");
    assert_eq!(
        got[0].1["fields"]["v"]["sum"].as_f64().unwrap(),
        (m * (m - 1) / 2) as f64
    );
    assert_eq!(
        got[0].1["fields"]["v"]["last"].as_f64().unwrap(),
        (m - 1) as f64
    );
}
