//! Memory must not grow with the number of clients that have come and gone.
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

/// Idle connections opened for the per-connection measurement.
const IDLE_CONNECTIONS: usize = 2000;
/// Allowed RSS per idle MQTT 3.1.1 connection (plain TCP, no subscription, keep alive 0): a
/// regression guard for the debug binary the tests run (2,357 bytes measured here; the release
/// build and its numbers are in BENCHMARKS.md; 4.5 KB before the idle-memory work).
const MAX_BYTES_PER_IDLE_CONNECTION: u64 = 3072;

/// Opens one MQTT 3.1.1 connection (clean session, keep alive 0) and waits for its CONNACK.
fn idle_client(addr: std::net::SocketAddr, id: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    s.write_all(&connect).expect("send CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("read CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK for {id}");
    s
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
    raise_open_files(IDLE_CONNECTIONS as u64 + 512);
    let mut broker = Broker::builder()
        .process()
        .config_text("[limits]\nmax_connections_per_ip = 10000\n")
        .start();
    let addr = broker.addr();
    let tag = std::process::id();
    // One connection first: the allocator, reactor and tables have warmed up.
    let _first = idle_client(addr, &format!("idle-{tag}-first"));
    std::thread::sleep(Duration::from_millis(300));
    let before = broker.rss_kib();
    let conns: Vec<_> = (0..IDLE_CONNECTIONS)
        .map(|i| idle_client(addr, &format!("idle-{tag}-{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    broker.assert_running();
    let after = broker.rss_kib();
    let per_conn = after.saturating_sub(before) * 1024 / IDLE_CONNECTIONS as u64;
    eprintln!(
        "RSS {before} KiB with 1 connection, {after} KiB with {} more: {per_conn} bytes each \
         (limit {MAX_BYTES_PER_IDLE_CONNECTION})",
        conns.len()
    );
    assert!(
        per_conn < MAX_BYTES_PER_IDLE_CONNECTION,
        "{per_conn} bytes of RSS per idle connection ({before} -> {after} KiB over {} connections)",
        conns.len()
    );
}
