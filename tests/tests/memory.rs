//! Memory must not grow with the number of clients that have come and gone, nor with the
//! number of messages queued for offline sessions (they wait on disk), and a flood towards a
//! subscriber that does not read stays under `limits.max_memory`.
//!
//! The broker runs as a process (`.process()`): its resident set size is what is measured.

use std::time::{Duration, Instant};

use robustmq_edge_e2e::rumqttc::{self, QoS};
use robustmq_edge_e2e::*;
use tokio::task::JoinSet;

/// Clients per round.
const CLIENTS: usize = 2000;
/// Clients connected at the same time within a round.
const PARALLEL: usize = 25;
/// Measured rounds after the warm-up round.
const MEASURED_ROUNDS: usize = 2;
/// Allowed RSS growth over the measured rounds: 4,000 clients, so a leak of about 2 KiB of
/// per-client state (id, subscription entries, session, buffers) already fails.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

/// One clean client's life: connect, subscribe to its own topics (plain and shared),
/// publish to itself at QoS 1, receive it, disconnect. Even clients use MQTT 5.
async fn one_client(broker_port: u16, round: usize, i: usize) {
    let id = format!("mem-{round}-{i}-{}", std::process::id());
    let topic = format!("mem/{id}/t");
    if i % 2 == 0 {
        use rumqttc::v5::mqttbytes::QoS as Q5;
        let mut o = rumqttc::v5::MqttOptions::new(&id, "127.0.0.1", broker_port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true);
        let mut c = V5Client::connect_with(o).await;
        c.subscribe_ok(&format!("mem/{id}/#"), Q5::AtLeastOnce)
            .await;
        c.subscribe_ok(&format!("$share/g-{id}/{topic}"), Q5::AtMostOnce)
            .await;
        c.publish(&topic, Q5::AtLeastOnce, false, vec![b'x'; 256])
            .await;
        c.recv(WAIT).await;
        c.disconnect().await;
    } else {
        let mut o = rumqttc::MqttOptions::new(&id, "127.0.0.1", broker_port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true);
        let mut c = V3Client::connect_with(o).await;
        c.subscribe_ok(&format!("mem/{id}/#"), QoS::AtLeastOnce)
            .await;
        c.subscribe_ok(&format!("$share/g-{id}/{topic}"), QoS::AtMostOnce)
            .await;
        c.publish(&topic, QoS::AtLeastOnce, false, vec![b'x'; 256])
            .await;
        c.recv(WAIT).await;
        c.disconnect().await;
    }
}

async fn round(port: u16, round: usize) {
    let mut set = JoinSet::new();
    let mut next = 0;
    while next < CLIENTS || !set.is_empty() {
        while next < CLIENTS && set.len() < PARALLEL {
            set.spawn(one_client(port, round, next));
            next += 1;
        }
        if let Some(res) = set.join_next().await {
            res.expect("client task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_grow_with_clients_that_came_and_went() {
    let mut broker = Broker::builder().process().start();
    let port = broker.port();
    let started = Instant::now();
    within(Duration::from_secs(100), "warm-up round", round(port, 0)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = broker.rss_kib();
    for r in 1..=MEASURED_ROUNDS {
        within(Duration::from_secs(100), "measured round", round(port, r)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.assert_running();
    let after = broker.rss_kib();
    let growth = after.saturating_sub(before);
    eprintln!(
        "{:?}: RSS {before} KiB after {CLIENTS} warm-up clients, {after} KiB after {} more \
         (growth {growth} KiB, limit {MAX_GROWTH_KIB} KiB) in {:.1?}",
        broker.kind(),
        CLIENTS * MEASURED_ROUNDS,
        started.elapsed()
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB over {} clean clients that connected and left \
         ({before} -> {after} KiB)",
        CLIENTS * MEASURED_ROUNDS
    );
}

/// Messages queued for one offline session in the backlog test.
const BACKLOG: usize = 200_000;
/// Generous bound on RSS after a restart with them queued and while draining (the 48 MiB):
/// with the debug build the tests run, 38.6 MB after the restart and 45.6 MB while draining
/// (its redb fills the 16 MiB page cache at open; a release build: ~9 MB); 200,000 messages in
/// memory cost about 88 MiB before queues moved to disk.
const MAX_RSS_WITH_BACKLOG_KIB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_after_a_restart_does_not_grow_with_an_offline_backlog() {
    let mut broker = Broker::builder()
        .process()
        .config_text(
            "durability = \"none\"\n[limits]\nmax_queued_messages = 300000\n\
             max_queued_bytes = 1000000000\n",
        )
        .start();
    let mut sub = V3Client::connect(&broker, "backlog-sub", false).await;
    sub.subscribe_ok("backlog/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let started = Instant::now();
    let port = broker.port();
    tokio::task::spawn_blocking(move || fill_qos1(port, "backlog/t", BACKLOG))
        .await
        .expect("fill");
    let filled = broker.rss_kib();
    eprintln!(
        "{BACKLOG} queued in {:.1?}: RSS {filled} KiB",
        started.elapsed()
    );
    broker.stop();
    broker.restart();
    let after_restart = broker.rss_kib();
    eprintln!("RSS after restart with {BACKLOG} queued: {after_restart} KiB");
    assert!(
        after_restart < MAX_RSS_WITH_BACKLOG_KIB,
        "RSS {after_restart} KiB after a restart with {BACKLOG} messages queued (bound \
         {MAX_RSS_WITH_BACKLOG_KIB} KiB): the queue is read into memory"
    );
    // The backlog is all there, from its first message on.
    let mut sub = V3Client::connect(&broker, "backlog-sub", false).await;
    for i in 0..1000 {
        let p = sub.recv(WAIT).await;
        assert_eq!(p.payload.as_ref(), format!("{i:064}").as_bytes());
    }
    let draining = broker.rss_kib();
    eprintln!("RSS while draining: {draining} KiB");
    assert!(
        draining < MAX_RSS_WITH_BACKLOG_KIB,
        "RSS {draining} KiB while draining"
    );
}

/// Publishes `n` QoS 1 messages (payload: the number, 64 digits) on `topic` over a raw socket,
/// 100 in flight at a time, and reads every PUBACK (the test harness's clients keep every event
/// and are too slow for hundreds of thousands).
fn fill_qos1(port: u16, topic: &str, n: usize) {
    use std::io::{Read, Write};
    let mut s = raw_v311_client(port, "backlog-pub", 60);
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(100);
        let mut buf = Vec::with_capacity(batch * 100);
        for k in 0..batch {
            let len = 2 + topic.len() + 2 + 64;
            buf.extend_from_slice(&[0x32, len as u8, 0, topic.len() as u8]);
            buf.extend_from_slice(topic.as_bytes());
            buf.extend_from_slice(&((k + 1) as u16).to_be_bytes());
            buf.extend_from_slice(format!("{:064}", sent + k).as_bytes());
        }
        s.write_all(&buf).expect("PUBLISH");
        let mut acks = vec![0u8; 4 * batch];
        s.read_exact(&mut acks).expect("PUBACKs");
        assert!(acks.chunks(4).all(|a| a[0] == 0x40), "PUBACKs expected");
        sent += batch;
    }
}

/// `limits.max_memory` of the flood test, and the RSS it must stay under.
const MAX_MEMORY: u64 = 64 * 1024 * 1024;

/// A subscriber that connects (clean session), subscribes at QoS 0 and never reads again.
fn stuck_subscriber(port: u16, filter: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = raw_v311_client(port, "stuck", 60);
    let mut subscribe = vec![0x82, (5 + filter.len()) as u8, 0, 1, 0, filter.len() as u8];
    subscribe.extend_from_slice(filter.as_bytes());
    subscribe.push(0);
    s.write_all(&subscribe).expect("SUBSCRIBE");
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).expect("SUBACK");
    s
}

/// Publishes 4 KiB QoS 0 messages on `flood/<p>` until `deadline` over a raw socket (the
/// broker may stop reading it: writes then time out and are retried); how many were written.
fn flood_publisher(port: u16, p: usize, deadline: Instant) -> u64 {
    use std::io::Write;
    let mut s = raw_v311_client(port, &format!("flood-{p}"), 60);
    let topic = format!("flood/{p}");
    let len = 2 + topic.len() + 4096;
    let mut publish = vec![0x30, (len & 0x7f) as u8 | 0x80, (len >> 7) as u8];
    publish.extend_from_slice(&[0, topic.len() as u8]);
    publish.extend_from_slice(topic.as_bytes());
    publish.extend(std::iter::repeat_n(b'f', 4096));
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let mut written = 0usize;
    while Instant::now() < deadline {
        match s.write(&publish[written % publish.len()..]) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("publisher {p}: {e}"),
        }
    }
    (written / publish.len()) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_towards_a_subscriber_that_does_not_read_stays_under_max_memory() {
    let broker = Broker::builder()
        .process()
        .config_text(format!(
            "durability = \"none\"\n[limits]\nmax_memory = {MAX_MEMORY}\n\
             max_queued_messages = 100000000\nmax_queued_bytes = 100000000000\n\
             [storage]\ncache_size_bytes = 4194304\n"
        ))
        .start();
    let port = broker.port();
    let _stuck = stuck_subscriber(port, "flood/#");
    let before = broker.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(10);
    let publishers: Vec<_> = (0..8)
        .map(|p| std::thread::spawn(move || flood_publisher(port, p, deadline)))
        .collect();
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(broker.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent: u64 = publishers
        .into_iter()
        .map(|t| t.join().expect("publisher thread"))
        .sum();
    let peak_bytes = peak * 1024;
    eprintln!(
        "{sent} QoS 0 messages of 4 KiB ({} MiB) towards a subscriber that does not read: RSS \
         {before} KiB before, peak {peak} KiB, max_memory {} KiB",
        sent * 4 / 1024,
        MAX_MEMORY / 1024
    );
    assert!(
        sent * 4096 > MAX_MEMORY / 2,
        "the flood ({sent} messages) was too small to reach the bound"
    );
    assert!(
        peak_bytes < MAX_MEMORY,
        "RSS peaked at {peak} KiB, over limits.max_memory ({} KiB)",
        MAX_MEMORY / 1024
    );
}

/// Idle connections opened for the per-connection measurement.
const IDLE_CONNECTIONS: usize = 2000;
/// Allowed RSS per idle MQTT 3.1.1 connection (plain TCP, no subscription, keep alive 0): a
/// regression guard for the debug binary the tests run, with a 10% margin: 784 bytes measured
/// here with the task's block at 320 bytes (the reply queue boxed) and a 144-byte session (its
/// deques one pointer each while empty); 877 with them inline (a 344-byte task block in
/// mimalloc's 384 class, a 192-byte session). 948 with the session at 200 bytes (sorted boxed
/// subscriptions, rare state in one box), the task's idle state one pointer and the sessions
/// in a table of pointers (1,230 before, with a
/// 280-byte session, a 56-byte timer and three pointers in the idle wait; 1,814 with a separate
/// connection block, an event-listener wake-up and a 464-byte session, 2,357 with a reader and
/// a writer loop, 4.5 KB before the idle-memory work). The release build and its numbers at
/// 10,000 connections are in BENCHMARKS.md.
const MAX_BYTES_PER_IDLE_CONNECTION: u64 = 860;

/// Opens one MQTT 3.1.1 connection (clean session) and waits for its CONNACK.
fn idle_client(addr: std::net::SocketAddr, id: &str, keep_alive: u16) -> std::net::TcpStream {
    raw_v311_client(addr.port(), id, keep_alive)
}

/// Raises this process's open-file limit (inherited by the broker process) to hold `n` sockets.
fn raise_open_files(n: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < n {
            r.rlim_cur = r.rlim_max.min(n.max(r.rlim_cur));
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[test]
fn an_idle_connection_costs_the_broker_little_memory() {
    if skip_unless_edge("an_idle_connection_costs_the_broker_little_memory") {
        // Takes a config file (all clients share 127.0.0.1 under max_connections_per_ip).
        return;
    }
    idle_connections_cost_at_most(0, MAX_BYTES_PER_IDLE_CONNECTION);
}

/// Allowed RSS per idle connection that asked for a Keep Alive (60 s, as mosquitto_sub and
/// paho do), debug binary, with a 10% margin: measured here 782 bytes with the broker's one
/// keep-alive sweep (as without a keep-alive); 937-942 with a timer per connection (a boxed
/// 56-byte `smol::Timer` and its entry in async-io's timer tree), which fails it.
const MAX_BYTES_PER_IDLE_KEEP_ALIVE_CONNECTION: u64 = 860;

#[test]
fn an_idle_connection_with_a_keep_alive_costs_the_broker_little_memory() {
    if skip_unless_edge("an_idle_connection_with_a_keep_alive_costs_the_broker_little_memory") {
        return;
    }
    idle_connections_cost_at_most(60, MAX_BYTES_PER_IDLE_KEEP_ALIVE_CONNECTION);
}

/// Opens [`IDLE_CONNECTIONS`] MQTT 3.1.1 connections asking for `keep_alive` seconds and
/// asserts the broker's RSS grew by less than `limit` bytes each.
fn idle_connections_cost_at_most(keep_alive: u16, limit: u64) {
    raise_open_files(IDLE_CONNECTIONS as u64 + 512);
    let mut broker = Broker::builder()
        .process()
        .config_text("[limits]\nmax_connections_per_ip = 10000\n")
        .start();
    let addr = broker.addr();
    let tag = std::process::id();
    // One connection first: the allocator, reactor and tables have warmed up.
    let _first = idle_client(addr, &format!("idle-{tag}-first"), keep_alive);
    std::thread::sleep(Duration::from_millis(300));
    let before = broker.rss_kib();
    let conns: Vec<_> = (0..IDLE_CONNECTIONS)
        .map(|i| idle_client(addr, &format!("idle-{tag}-{i}"), keep_alive))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    broker.assert_running();
    let after = broker.rss_kib();
    let what = format!("connection (keep alive {keep_alive} s)");
    assert_rss_per_connection(&what, (before, after), conns.len(), limit);
}

/// Asserts that RSS grew by less than `limit` bytes per connection from `before` to `after`
/// (KiB) over `n` more `what`s.
fn assert_rss_per_connection(what: &str, (before, after): (u64, u64), n: usize, limit: u64) {
    let per_conn = after.saturating_sub(before) * 1024 / n as u64;
    eprintln!(
        "RSS {before} KiB with 1 {what}, {after} KiB with {n} more: {per_conn} bytes each \
         (limit {limit})"
    );
    assert!(
        per_conn < limit,
        "{per_conn} bytes of RSS per idle {what} ({before} -> {after} KiB over {n})"
    );
}

/// Allowed RSS per idle MQTT-over-WebSocket connection (ws://, MQTT 3.1.1, keep alive 0), with
/// a ~28% margin: 2,187 bytes measured here on the debug binary (2,185 on the release one),
/// the plain connection's ~0.9 KB plus the WebSocket stream (tungstenite's state and its
/// 256-byte read buffer, the split halves). The regression it guards: a WebSocket connection
/// never went idle, so it kept its busy phase (~2.6 KB) and a 2 KB read buffer while it
/// waited: 7,403 bytes (release build; BENCHMARKS.md "MQTT over WebSocket vs plain TCP").
const MAX_BYTES_PER_IDLE_WS_CONNECTION: u64 = 2800;

/// Opens a ws:// connection to `/mqtt` on `port` by hand (upgrade, then CONNECT in one binary
/// frame) and waits for the CONNACK frame.
fn idle_ws_client(port: u16, id: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    s.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .expect("send upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read upgrade reply");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgrade for {id}");
    let connect = v311_connect_packet(id, 0);
    // A final binary frame, masked with the key 0 (the payload as it is).
    let mut frame = vec![0x82, 0x80 | connect.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(&connect);
    s.write_all(&frame).expect("send CONNECT");
    let mut connack = [0u8; 6];
    s.read_exact(&mut connack).expect("read CONNACK");
    assert_eq!(
        connack,
        [0x82, 0x04, 0x20, 0x02, 0x00, 0x00],
        "CONNACK for {id}"
    );
    s
}

#[test]
fn an_idle_websocket_connection_costs_the_broker_little_memory() {
    if skip_unless_edge("an_idle_websocket_connection_costs_the_broker_little_memory") {
        return;
    }
    raise_open_files(IDLE_CONNECTIONS as u64 + 512);
    let mut broker = Broker::builder()
        .process()
        .config_text("[limits]\nmax_connections_per_ip = 10000\n")
        .websocket_listener()
        .start();
    let port = broker.ws_port();
    let tag = std::process::id();
    let _first = idle_ws_client(port, &format!("ws-idle-{tag}-first"));
    std::thread::sleep(Duration::from_millis(300));
    let before = broker.rss_kib();
    let conns: Vec<_> = (0..IDLE_CONNECTIONS)
        .map(|i| idle_ws_client(port, &format!("ws-idle-{tag}-{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    broker.assert_running();
    let after = broker.rss_kib();
    let limit = MAX_BYTES_PER_IDLE_WS_CONNECTION;
    assert_rss_per_connection("ws connection", (before, after), conns.len(), limit);
}
