//! Edge-processing benchmark: 1,000 sensors x 10 msg/s for 60 s of simulated time captured into
//! a real outbox (redb in a temp dir) under each rule, printing the uplink messages and bytes
//! (topic + payload) each rule leaves to send, against forwarding everything raw, and the
//! reduction factor of the factory-line scenario (per-line per-second windows, `group_by`).
//!
//! `cargo run --release -p robustmq-edge-sync --example processing_bench [sensors] [secs]`

use std::sync::Arc;
use std::time::Instant;

use edge_sync::outbox::PRIORITIES;
use edge_sync::{LocalMessage, Outbox, SyncConfig};

const RATE_HZ: u64 = 10;
/// The factory-line scenario of the README: per-line, per-second aggregates (count, avg, min,
/// max: an anomaly shows in min/max) of every sensor of a line.
const FACTORY: &str = "window 1 s per line (level:2)";
const T0: u64 = 1_700_000_000_000;

struct Scenario {
    name: &'static str,
    rule: &'static str,
    /// Link down for the whole run (latest_only shows what an outage costs).
    outage: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "raw (every reading)",
        rule: "",
        outage: false,
    },
    Scenario {
        name: "where temp not in 2..8",
        rule: "where = \"temp not in 2..8\"",
        outage: false,
    },
    Scenario {
        name: "deadband 0.5, 60 s silence",
        rule: "deadband = { field = \"temp\", absolute = 0.5, max_silence_secs = 60 }",
        outage: false,
    },
    Scenario {
        name: "latest_only (60 s outage)",
        rule: "latest_only = true",
        outage: true,
    },
    Scenario {
        name: "window 1 s avg/min/max",
        rule: "window = { secs = 1, fields = [\"temp\"], ops = [\"avg\", \"min\", \"max\"] }",
        outage: false,
    },
    Scenario {
        name: FACTORY,
        rule: "window = { secs = 1, fields = [\"temp\"], ops = [\"count\", \"avg\", \"min\", \"max\"], group_by = \"level:2\" }",
        outage: false,
    },
    Scenario {
        name: "window 10 s avg/min/max",
        rule: "window = { secs = 10, fields = [\"temp\"], ops = [\"avg\", \"min\", \"max\"] }",
        outage: false,
    },
    Scenario {
        name: "batch 100 / 1 s, json",
        rule: "batch = { max_messages = 100, max_ms = 1000, topic = \"b\" }",
        outage: false,
    },
    Scenario {
        name: "batch 100 / 1 s, postcard+zstd",
        rule: "batch = { max_messages = 100, max_ms = 1000, topic = \"b\", format = \"postcard\", compression = \"zstd\" }",
        outage: false,
    },
    Scenario {
        name: "batch 1000 / 1 s, json+deflate",
        rule: "batch = { max_messages = 1000, max_ms = 1000, topic = \"b\", compression = \"deflate\" }",
        outage: false,
    },
];

/// Uplink (messages, bytes) after `secs` of `sensors` at 10 Hz under `rule`.
fn run(sensors: usize, secs: u64, s: &Scenario) -> (u64, u64, u64) {
    let dir = tempfile_dir();
    let db = Arc::new(redb::Database::create(dir.join("edge.redb")).expect("create db"));
    let toml = format!(
        "node_id = \"bench\"\nupstreams = [\"tcp://127.0.0.1:1\"]\n\
         max_backlog_bytes = 4294967296\n[[forward]]\nfilter = \"factory/#\"\n{}\n",
        s.rule
    );
    let cfg = SyncConfig::from_toml_str(&toml).expect("config");
    let ob = Outbox::open(db.clone(), &cfg).expect("outbox");
    let mut rng = fastrand::Rng::with_seed(42);
    // Cold-chain style readings: a slow random walk around 5 °C, with rare excursions.
    let mut temps: Vec<f64> = (0..sensors).map(|_| 4.0 + rng.f64() * 2.0).collect();
    let topics: Vec<String> = (0..sensors)
        .map(|i| format!("factory/line{}/sensor{i:04}/temp", i % 10))
        .collect();
    let mut sent = (0u64, 0u64);
    let mut in_bytes = 0u64;
    for tick in 0..secs * RATE_HZ {
        let at = T0 + tick * 1000 / RATE_HZ;
        let mut txn = db.begin_write().expect("txn");
        txn.set_durability(redb::Durability::None)
            .expect("durability");
        for (i, t) in temps.iter_mut().enumerate() {
            *t += (rng.f64() - 0.5) * 0.1;
            let v = if rng.u32(0..1000) == 0 { *t + 5.0 } else { *t };
            let payload = format!("{{\"temp\":{v:.2},\"ts\":{at}}}");
            in_bytes += (topics[i].len() + payload.len()) as u64;
            let m = LocalMessage {
                topic: &topics[i],
                payload: payload.as_bytes(),
                qos: 1,
                retain: false,
                user_properties: &[],
                content_type: None,
                received_at_ms: at,
            };
            ob.capture(&txn, &m).expect("capture");
        }
        txn.commit().expect("commit");
        ob.committed(true);
        ob.flush_due(at.saturating_sub(250)).expect("flush");
        if !s.outage {
            // The link is up: what reached the outbox goes upstream and is acknowledged.
            sent = drain(&ob, sent);
        }
    }
    ob.flush_due(T0 + secs * 1000 + 1000).expect("flush");
    sent = drain(&ob, sent);
    let _ = std::fs::remove_dir_all(&dir);
    (sent.0, sent.1, in_bytes)
}

/// Reads every buffered record, counts it as sent and removes it as acknowledged.
fn drain(ob: &Outbox, mut sent: (u64, u64)) -> (u64, u64) {
    for l in 0..PRIORITIES {
        let items = ob.read_lane(l, 0, usize::MAX, usize::MAX).expect("read");
        let mut acked = Vec::with_capacity(items.len());
        for (seq, r) in items.into_iter().flatten() {
            sent.0 += 1;
            sent.1 += (r.topic.len() + r.payload.len()) as u64;
            acked.push((l as u8, seq));
        }
        ob.remove(&acked, &[], None, None).expect("remove");
    }
    sent
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "edge-processing-bench-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sensors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    println!(
        "{sensors} sensors x {RATE_HZ} msg/s x {secs} s = {} readings (simulated time)",
        sensors as u64 * RATE_HZ * secs
    );
    println!(
        "{:<30} {:>12} {:>14} {:>10} {:>10} {:>8}",
        "rule", "uplink msgs", "uplink bytes", "msgs/raw", "bytes/raw", "wall s"
    );
    let mut raw = None;
    let mut factory = None;
    for s in SCENARIOS {
        let t = Instant::now();
        let (msgs, bytes, _in) = run(sensors, secs, s);
        let (raw_msgs, raw_bytes) = *raw.get_or_insert((msgs, bytes));
        let less = (
            raw_msgs as f64 / msgs.max(1) as f64,
            raw_bytes as f64 / bytes.max(1) as f64,
        );
        if s.name == FACTORY {
            factory = Some(less);
        }
        println!(
            "{:<30} {:>12} {:>14} {:>9.1}x {:>9.1}x {:>8.1}",
            s.name,
            msgs,
            bytes,
            less.0,
            less.1,
            t.elapsed().as_secs_f64()
        );
    }
    if let Some((m, b)) = factory {
        println!(
            "factory line ({sensors} sensors, {FACTORY}): {m:.0}x fewer uplink messages, \
             {b:.0}x fewer uplink bytes than raw (issue 11 target: ~100x)"
        );
    }
}
