//! Edge processing of forward rules (`where`, `deadband`, `latest_only`, per-rule counters):
//! at the outbox level, and end to end against a real mosquitto behind a cuttable proxy.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use edge_sync::outbox::PRIORITIES;
use edge_sync::{LinkState, Outbox, SyncConfig};

/// Every buffered record, in lane then sequence order: (topic, payload).
fn buffered(ob: &Outbox) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in 0..PRIORITIES {
        for item in ob.read_lane(l, 0, usize::MAX, usize::MAX).unwrap() {
            let (_, r) = item.unwrap();
            out.push((r.topic, String::from_utf8(r.payload).unwrap()));
        }
    }
    out
}

/// Reading `i` of a cold-chain sensor: -2.0 ..= 11.9 °C, cycling.
fn temp(i: usize) -> f64 {
    (i % 140) as f64 / 10.0 - 2.0
}

fn reading(i: usize) -> Vec<u8> {
    format!("{{\"temp\":{:.1},\"i\":{i}}}", temp(i)).into_bytes()
}

const WHERE_RULE: &str = "[[forward]]\nfilter = \"fridge/#\"\nwhere = \"temp < 2 or temp > 8\"\n";

#[test]
fn where_rule_keeps_exactly_the_out_of_range_readings() {
    let t = TestDb::new();
    let ob = t.outbox(&cfg(WHERE_RULE));
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(500) {
        let msgs: Vec<_> = chunk
            .iter()
            .map(|&i| ("fridge/1/temp", reading(i), 1))
            .collect();
        capture(&ob, &t.db, &msgs);
    }
    // Non-JSON and a reading without the field: dropped (on_missing = "drop").
    capture(
        &ob,
        &t.db,
        &[
            ("fridge/1/temp", b"not json".to_vec(), 1),
            ("fridge/1/temp", b"{\"hum\":40}".to_vec(), 1),
        ],
    );
    let expect: Vec<String> = (0..10_000)
        .filter(|&i| !(2.0..=8.0).contains(&temp(i)))
        .map(|i| String::from_utf8(reading(i)).unwrap())
        .collect();
    let got: Vec<String> = buffered(&ob).into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, expect);
    let s = &ob.rule_stats()[0];
    assert_eq!(s.messages_in, 10_002);
    assert_eq!(s.messages_out, expect.len() as u64);
    assert_eq!(s.dropped_filter, 10_002 - expect.len() as u64);
    assert!(s.bytes_saved > 0);
}

#[test]
fn on_missing_pass_forwards_non_json() {
    let t = TestDb::new();
    let rule = format!("{WHERE_RULE}on_missing = \"pass\"\n");
    let ob = t.outbox(&cfg(&rule));
    capture(
        &ob,
        &t.db,
        &[
            ("fridge/1/temp", b"not json".to_vec(), 1),
            ("fridge/1/temp", b"{\"temp\":5}".to_vec(), 1),
        ],
    );
    assert_eq!(buffered(&ob).len(), 1);
}

#[test]
fn deadband_sends_moves_and_heartbeats() {
    let t = TestDb::new();
    let rule = "[[forward]]\nfilter = \"line/#\"\n\
                deadband = { field = \"v\", absolute = 1.0, max_silence_secs = 60 }\n";
    let ob = t.outbox(&cfg(rule));
    let t0 = 1_000_000_000;
    let series = [
        (0, 10.0, true),    // first value of the topic
        (1, 10.5, false),   // within 1.0
        (2, 11.2, true),    // moved 1.2
        (3, 10.9, false),   // 0.3 from the last sent
        (70, 10.9, true),   // 68 s of silence since the last sent
        (71, 10.95, false), // quiet again
    ];
    for (s, v, _) in series {
        let p = format!("{{\"v\":{v}}}").into_bytes();
        capture_at(&ob, &t.db, &[("line/a", p.clone(), 1)], t0 + s * 1000);
        // Another topic keeps its own last value.
        capture_at(&ob, &t.db, &[("line/b", p, 1)], t0 + s * 1000);
    }
    let sent: Vec<String> = series
        .iter()
        .filter(|x| x.2)
        .map(|x| format!("{{\"v\":{}}}", x.1))
        .collect();
    let a: Vec<String> = buffered(&ob)
        .into_iter()
        .filter(|(t, _)| t == "line/a")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(a, sent);
    assert_eq!(ob.rule_stats()[0].dropped_deadband, 6);
}

#[test]
fn a_rolled_back_transaction_changes_no_rule_state() {
    let t = TestDb::new();
    let rule = "[[forward]]\nfilter = \"line/#\"\ndeadband = { field = \"v\", absolute = 1.0 }\n";
    let ob = t.outbox(&cfg(rule));
    capture_rolled_back(&ob, &t.db, "line/a", b"{\"v\":5}");
    assert_eq!(ob.rule_stats()[0].messages_in, 0);
    // The aborted value was not remembered: 5.5 is the topic's first value and is sent.
    capture(&ob, &t.db, &[("line/a", b"{\"v\":5.5}".to_vec(), 1)]);
    assert_eq!(buffered(&ob).len(), 1);
}

#[test]
fn latest_only_keeps_one_record_per_topic_across_restarts() {
    let t = TestDb::new();
    let rule = "[[forward]]\nfilter = \"shelf/#\"\nlatest_only = true\npriority = 1\n";
    let c = cfg(rule);
    let ob = t.outbox(&c);
    for round in 0..20 {
        let msgs: Vec<_> = (0..10)
            .map(|s| {
                let t = format!("shelf/{s}/stock");
                (t, format!("{round}").into_bytes())
            })
            .collect();
        capture_owned(&ob, &t.db, &msgs);
    }
    assert_eq!(ob.counters().backlog_messages, 10);
    assert_eq!(ob.rule_stats()[0].conflated, 190);
    let (t, ob) = t.reopen_outbox(ob, &c);
    capture(&ob, &t.db, &[("shelf/3/stock", b"final".to_vec(), 1)]);
    let mut got = buffered(&ob);
    got.sort();
    assert_eq!(got.len(), 10);
    assert!(got.contains(&("shelf/3/stock".into(), "final".into())));
    assert!(got.contains(&("shelf/4/stock".into(), "19".into())));
    assert_eq!(ob.counters().backlog_messages, 10);
}

#[test]
fn where_rule_end_to_end_delivers_only_out_of_range_readings() {
    let (_mq, sub, t, ob, h) = connected_sync("fridge/#", WHERE_RULE);
    let msgs: Vec<_> = (0..1400)
        .map(|i| ("fridge/1/temp", reading(i), 1))
        .collect();
    capture(&ob, &t.db, &msgs);
    let expect: Vec<String> = (0..1400)
        .filter(|&i| !(2.0..=8.0).contains(&temp(i)))
        .map(|i| String::from_utf8(reading(i)).unwrap())
        .collect();
    sub.wait_for(expect.len(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let got = sub.payloads();
    assert_eq!(got, expect);
    let st = h.status();
    assert_eq!(st.rules[0].messages_in, 1400);
    assert_eq!(st.rules[0].messages_out, expect.len() as u64);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["rules"][0]["in"], 1400);
    smol::block_on(h.shutdown());
}

#[test]
fn latest_only_during_an_outage_delivers_one_record_per_topic() {
    let (_mq, sub, mut link) = Mosquitto::behind_proxy("stores/#");
    let t = TestDb::new();
    let rule =
        "[[forward]]\nfilter = \"shelf/#\"\nprefix = \"stores/{node_id}/\"\nlatest_only = true\n";
    let c = sync_cfg(link.port, rule);
    let (ob, h) = start_sync(&t, c);
    // Link down: 50 shelves report their stock 40 times each.
    for round in 0..40 {
        let msgs: Vec<(String, Vec<u8>)> = (0..50)
            .map(|s| {
                (
                    format!("shelf/{s}/stock"),
                    format!("{}", round * 100 + s).into_bytes(),
                )
            })
            .collect();
        capture_owned(&ob, &t.db, &msgs);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(h.status().link_state, LinkState::Connected);
    assert_eq!(ob.counters().backlog_messages, 50);
    link.up();
    sub.wait_for(50, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let got = sub.got.lock().unwrap().clone();
    assert_eq!(got.len(), 50, "one record per topic");
    let by_topic: HashMap<String, String> = got.into_iter().map(|g| (g.topic, g.payload)).collect();
    for s in 0..50 {
        assert_eq!(
            by_topic.get(&format!("stores/n1/shelf/{s}/stock")),
            Some(&format!("{}", 3900 + s))
        );
    }
    assert!(outbox_drains(&ob, Duration::from_secs(10)));
    assert_eq!(h.status().rules[0].conflated, 50 * 39);
    smol::block_on(h.shutdown());
}

#[test]
fn readme_edge_processing_examples_parse() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Edge processing")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("Edge processing section");
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 5);
    for b in blocks {
        let body = b
            .replace("[[sync.forward]]", "[[forward]]")
            .replace("[[sync.upstream_schedule]]", "[[upstream_schedule]]");
        let s = match body.strip_prefix("[sync]\n") {
            // A whole [sync] table (the HTTP uplink's CA file does not exist here).
            Some(table) => {
                let table = table.split("[sync.tls]").next().unwrap_or("");
                if table.lines().any(|l| l.starts_with("node_id")) {
                    table.to_string()
                } else {
                    format!("node_id = \"n1\"\n{table}")
                }
            }
            None => format!("node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1\"]\n{body}"),
        };
        if let Err(e) = SyncConfig::from_toml_str(&s) {
            panic!("{e}\n{body}");
        }
    }
}

#[test]
fn vehicle_example_sync_table_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/sync/vehicle.toml"
    ))
    .expect("examples/sync/vehicle.toml");
    let doc: toml::Table = toml::from_str(&text).expect("TOML");
    let table = doc.get("sync").and_then(|v| v.as_table()).expect("[sync]");
    let sync = toml::to_string(table).expect("serialize [sync]");
    let cfg = match SyncConfig::from_toml_str(&sync) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.upstream_schedule.len(), 1);
    assert!(cfg
        .forward
        .iter()
        .any(|r| r.schedule.is_some() && r.upstreams.is_some()));
}
