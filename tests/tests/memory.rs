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
