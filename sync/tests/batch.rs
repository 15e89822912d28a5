//! `batch` rules: envelopes (JSON / postcard, none / zstd / deflate) decode back to the same
//! messages in order, size- and time-triggered, at the outbox level and through mosquitto.

mod common;

use std::time::Duration;

use common::*;
use edge_sync::outbox::{Record, PRIORITIES};
use edge_sync::rules::batch::{self, BatchItem};
use edge_sync::Outbox;

fn records(ob: &Outbox) -> Vec<Record> {
    let mut out = Vec::new();
    for l in 0..PRIORITIES {
        for item in ob.read_lane(l, 0, usize::MAX, usize::MAX).unwrap() {
            out.push(item.unwrap().1);
        }
    }
    out
}

fn prop<'a>(r: &'a Record, k: &str) -> &'a str {
    r.user_properties
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

/// Message `i`: JSON text, except every 9th which is binary.
fn payload(i: usize) -> Vec<u8> {
    if i % 9 == 0 {
        vec![0xfe, 0xff, (i % 256) as u8, 0]
    } else {
        format!("{{\"seq\":{i}}}").into_bytes()
    }
}

#[test]
fn envelopes_decode_back_to_the_same_messages() {
    for (format, compression) in [
        ("json", "none"),
        ("json", "deflate"),
        ("postcard", "zstd"),
        ("postcard", "none"),
    ] {
        let t = TestDb::new();
        let rule = format!(
            "[[forward]]\nfilter = \"m/#\"\nprefix = \"up/\"\nbatch = {{ max_messages = 100, \
             max_ms = 5000, topic = \"batch/{{node_id}}\", format = \"{format}\", \
             compression = \"{compression}\" }}\n"
        );
        let ob = t.outbox(&cfg(&rule));
        let t0 = 1_700_000_000_000u64;
        let mut sent = Vec::new();
        for chunk in (0..1050).collect::<Vec<_>>().chunks(70) {
            let msgs: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|&i| (format!("m/{}", i % 3), payload(i)))
                .collect();
            let refs: Vec<_> = msgs
                .iter()
                .map(|(t, p)| (t.as_str(), p.clone(), 1))
                .collect();
            capture_at(&ob, &t.db, &refs, t0);
            sent.extend(msgs.into_iter().map(|(t, p)| BatchItem {
                topic: format!("up/{t}"),
                payload: p,
                received_at_ms: t0,
                user_properties: vec![],
            }));
        }
        // Ten full batches went to the outbox with their captures; the rest waits for max_ms.
        assert_eq!(records(&ob).len(), 10);
        assert_eq!(ob.flush_due(t0 + 4999).unwrap(), 0);
        assert_eq!(ob.flush_due(t0 + 5000).unwrap(), 1);
        let recs = records(&ob);
        assert_eq!(recs.len(), 11);
        let mut back = Vec::new();
        for r in &recs {
            assert_eq!(r.topic, "batch/n1");
            assert_eq!(prop(r, batch::FORMAT_PROPERTY), format);
            assert_eq!(prop(r, batch::COMPRESSION_PROPERTY), compression);
            assert!(r.content_type.as_deref().unwrap().ends_with(format));
            let items = batch::decode(&r.payload, format, compression).unwrap();
            assert_eq!(prop(r, batch::COUNT_PROPERTY), items.len().to_string());
            back.extend(items);
        }
        assert_eq!(back, sent, "{format} {compression}");
        let s = &ob.rule_stats()[0];
        assert_eq!((s.messages_in, s.messages_out), (1050, 11));
    }
}

#[test]
fn batches_in_progress_survive_a_restart() {
    let t = TestDb::new();
    let rule = "[[forward]]\nfilter = \"m/#\"\n\
                batch = { max_messages = 10, max_ms = 1000, topic = \"b\" }\n";
    let c = cfg(rule);
    let ob = t.outbox(&c);
    capture_at(
        &ob,
        &t.db,
        &[("m/a", b"1".to_vec(), 1), ("m/a", b"2".to_vec(), 1)],
        5000,
    );
    let (_t, ob) = t.reopen_outbox(ob, &c);
    assert_eq!(ob.next_window_due(), 0);
    assert_eq!(ob.flush_due(5500).unwrap(), 0);
    assert_eq!(ob.next_window_due(), 6000);
    assert_eq!(ob.flush_due(6000).unwrap(), 1);
    let r = &records(&ob)[0];
    let items = batch::decode(&r.payload, "json", "none").unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].payload, b"2");
}

#[test]
fn batch_keys_are_validated() {
    assert_rule_errors(&[
        (
            "batch = { max_ms = 10, topic = \"b\" }",
            "sync.forward[0].batch.max_messages",
        ),
        (
            "batch = { max_messages = 5, topic = \"b\" }",
            "sync.forward[0].batch.max_ms",
        ),
        (
            "batch = { max_messages = 5, max_ms = 10 }",
            "sync.forward[0].batch.topic",
        ),
        (
            "batch = { max_messages = 5, max_ms = 10, topic = \"b\", compression = \"lz4\" }",
            "sync.forward[0].batch.compression",
        ),
        (
            "batch = { max_messages = 5, max_ms = 10, topic = \"b\" }\nlatest_only = true",
            "sync.forward[0].batch",
        ),
    ]);
}

#[test]
fn batches_reach_mosquitto_as_one_publish_each() {
    let rule = "[[forward]]\nfilter = \"m/#\"\n\
         batch = { max_messages = 50, max_ms = 300, topic = \"batch/{node_id}\" }\n";
    let (_mq, sub, t, ob, h) = connected_sync("batch/#", rule);
    let msgs: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| (format!("m/{i}"), format!("reading {i}").into_bytes()))
        .collect();
    capture_owned(&ob, &t.db, &msgs);
    // Two full batches at once, the last 20 messages after max_ms.
    let got = sub.wait_for(3, Duration::from_secs(10));
    assert_eq!(got.len(), 3);
    let mut back = Vec::new();
    for g in &got {
        assert!(g.props.contains("edge-batch-format:json"), "{}", g.props);
        back.extend(batch::decode(g.payload.as_bytes(), "json", "none").unwrap());
    }
    let back: Vec<(String, Vec<u8>)> = back.into_iter().map(|i| (i.topic, i.payload)).collect();
    assert_eq!(back, msgs);
    smol::block_on(h.shutdown());
}
