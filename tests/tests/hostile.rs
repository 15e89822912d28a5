//! Every hostile client of issue 8 at once, while a clean publisher and subscriber exchange
//! 10,000 QoS 1 messages: none may be lost, each hostile case gets its bounded reaction, and
//! the broker's resident memory stays bounded (the broker runs as a process for its RSS).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_mqtt::frame::write_var_int;
use robustmq_edge_e2e::rumqttc::QoS;
use robustmq_edge_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

const MESSAGES: usize = 10_000;
const MAX_RSS_KIB: u64 = 128 * 1024;

const CONFIG: &str = "\
[limits]
connect_timeout_secs = 2
max_connections_per_ip = 20
max_topic_length = 256
max_topic_levels = 16
max_subscriptions_per_session = 100
max_queued_messages = 1000
";

/// A TCP connection from another loopback address (so per-address limits do not touch the
/// clean clients on 127.0.0.1).
async fn from(src: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((src, 0)))?;
    s.connect(to).await
}

fn utf8_field(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Fixed header byte + remaining length (the broker's own var-int writer) + body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    write_var_int(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// MQTT 3.1.1 CONNECT, clean session, keep alive 30 s.
fn connect(id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    utf8_field(b"MQTT", &mut b);
    b.extend_from_slice(&[4, 0x02, 0, 30]);
    utf8_field(id.as_bytes(), &mut b);
    packet(0x10, &b)
}

fn subscribe(pid: u16, filter: &[u8], qos: u8) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    utf8_field(filter, &mut b);
    b.push(qos);
    packet(0x82, &b)
}

fn publish(topic: &[u8], qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    utf8_field(topic, &mut b);
    if qos > 0 {
        b.extend_from_slice(&pid.to_be_bytes());
    }
    b.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &b)
}

/// Connects from `src` and returns the stream after a successful CONNACK.
async fn raw_client(src: [u8; 4], to: SocketAddr, id: &str) -> TcpStream {
    let mut s = from(src, to).await.expect("connect");
    s.write_all(&connect(id)).await.expect("CONNECT");
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.expect("CONNACK");
    assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK for {id}");
    s
}

/// Reads until the broker closes (true) or `limit` passes (false).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hostile_client_at_once_while_a_clean_pair_loses_nothing() {
    let mut broker = Broker::builder().config_text(CONFIG).process().start();
    let addr = broker.addr();
    let mut hostile = JoinSet::new();

    // 1. 300 connections that never send CONNECT: closed at the connect timeout.
    hostile.spawn(async move {
        let mut socks = Vec::new();
        for _ in 0..300 {
            if let Ok(s) = from([127, 0, 0, 3], addr).await {
                socks.push(s);
            }
        }
        let mut closed = 0;
        for s in &mut socks {
            if closed_within(s, Duration::from_secs(6)).await {
                closed += 1;
            }
        }
        assert_eq!(
            closed,
            socks.len(),
            "silent connections end at the connect timeout"
        );
        "silent connections closed"
    });
    // 2. A CONNECT flood from one address: past max_connections_per_ip, CONNACK 3.
    hostile.spawn(async move {
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..60 {
            let mut s = from([127, 0, 0, 2], addr).await.expect("connect");
            s.write_all(&connect(&format!("flood-{i}")))
                .await
                .expect("CONNECT");
            let mut ack = [0u8; 4];
            if s.read_exact(&mut ack).await.is_ok() && ack[3] == 3 {
                refused += 1;
            }
            held.push(s);
        }
        assert_eq!(refused, 40, "60 CONNECTs, 20 allowed per address");
        "connect flood refused past the per-address limit"
    });
    // 3. Remaining length 268,435,455: closed without reading (or allocating) a body.
    hostile.spawn(async move {
        let mut s = from([127, 0, 0, 4], addr).await.expect("connect");
        s.write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f])
            .await
            .expect("write");
        assert!(closed_within(&mut s, Duration::from_secs(5)).await);
        "huge remaining length refused"
    });
    // 4. A CONNECT trickled one byte every 300 ms: ends at the connect timeout.
    hostile.spawn(async move {
        let mut s = from([127, 0, 0, 5], addr).await.expect("connect");
        let started = Instant::now();
        for b in connect("trickle") {
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(closed_within(&mut s, Duration::from_secs(5)).await);
        assert!(started.elapsed() < Duration::from_secs(8));
        "trickled CONNECT cut off"
    });
    // 5. Invalid UTF-8 in a topic, too long a topic, too deep a filter, too many filters.
    hostile.spawn(async move {
        for (id, bad_publish, case) in [
            (
                "bad-utf8",
                publish(&[b'a', 0xff, 0xfe], 0, 0, b"x"),
                "invalid UTF-8",
            ),
            (
                "long-topic",
                publish(&[b'a'; 300], 1, 1, b"x"),
                "long topic",
            ),
        ] {
            let mut s = raw_client([127, 0, 0, 6], addr, id).await;
            s.write_all(&bad_publish).await.expect("write");
            assert!(
                closed_within(&mut s, Duration::from_secs(5)).await,
                "{case}"
            );
        }
        let mut s = raw_client([127, 0, 0, 6], addr, "deep").await;
        let deep = vec!["d"; 40].join("/");
        s.write_all(&subscribe(1, deep.as_bytes(), 0))
            .await
            .expect("write");
        let mut ack = [0u8; 5];
        s.read_exact(&mut ack).await.expect("SUBACK");
        assert_eq!(ack, [0x90, 3, 0, 1, 0x80], "deep filter refused");
        for i in 0..2000u16 {
            let f = format!("many/{i}");
            s.write_all(&subscribe(i + 2, f.as_bytes(), 0))
                .await
                .expect("write");
        }
        let mut granted = 0;
        let mut acks = [0u8; 5];
        for _ in 0..2000 {
            s.read_exact(&mut acks).await.expect("SUBACK");
            if acks[4] == 0 {
                granted += 1;
            }
        }
        assert_eq!(granted, 100, "max_subscriptions_per_session");
        "bad topics and subscription floods refused"
    });
    // 6. A subscriber that never reads while QoS 0 and 1 floods it.
    hostile.spawn(async move {
        let mut sink = raw_client([127, 0, 0, 7], addr, "never-reads").await;
        sink.write_all(&subscribe(1, b"flood/#", 1))
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut p = raw_client([127, 0, 0, 7], addr, "flooder").await;
        let payload = vec![b'f'; 4096];
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_secs(15) {
            let qos = (n % 2) as u8;
            let pid = (n % 60000 + 1) as u16;
            if p.write_all(&publish(b"flood/x", qos, pid, &payload))
                .await
                .is_err()
            {
                break;
            }
            n += 1;
            // Drain PUBACKs without looking at them.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_micros(1), p.read(&mut buf)).await;
        }
        drop(sink);
        "slow subscriber flooded"
    });

    // The clean pair, meanwhile.
    let clean = within(Duration::from_secs(180), "clean pair", async {
        let topic = unique("clean");
        let mut sub = V3Client::connect_with(v3_options(&broker, &unique("csub"), false)).await;
        sub.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        let mut publisher = V3Client::connect(&broker, &unique("cpub"), true).await;
        let payloads: Vec<Vec<u8>> = (0..MESSAGES).map(|i| i.to_string().into_bytes()).collect();
        let mut got = std::collections::HashSet::new();
        let mut max_rss = 0;
        for chunk in payloads.chunks(500) {
            publisher
                .publish_all_qos1(&topic, chunk, Duration::from_secs(60))
                .await;
            while got.len() < MESSAGES {
                match sub.try_recv(Duration::from_millis(200)).await {
                    Some(p) => {
                        got.insert(p.payload.to_vec());
                    }
                    None => break,
                }
            }
            max_rss = max_rss.max(broker.rss_kib());
        }
        while got.len() < MESSAGES {
            let p = sub.recv(Duration::from_secs(20)).await;
            got.insert(p.payload.to_vec());
        }
        (got.len(), max_rss)
    })
    .await;
    let mut reactions = Vec::new();
    while let Some(r) = hostile.join_next().await {
        reactions.push(r.expect("a hostile case failed"));
    }
    let (received, max_rss) = clean;
    eprintln!("clean pair: {received} of {MESSAGES}; broker RSS max {max_rss} KiB; {reactions:?}");
    assert_eq!(received, MESSAGES, "the clean pair lost messages");
    assert!(max_rss < MAX_RSS_KIB, "broker RSS {max_rss} KiB");
    broker.assert_running();
}
