//! Acknowledged means durable: sessions, queued messages and retained messages survive
//! `kill -9` of the broker and a restart on the same data folder and port.
//!
//! Under the mosquitto reference (`E2E_BROKER=mosquitto`) "crash" is a SIGTERM, since
//! mosquitto only persists on shutdown; the tests then check their own logic, not durability.
//!
//! The broker runs as a process (`.process()`) wherever the test kills it or reads its exit
//! status; the clean-restart test runs it in the test process.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use robustmq_edge_e2e::rumqttc::{self, QoS};
use robustmq_edge_e2e::*;

const TEST_LIMIT: Duration = Duration::from_secs(90);

/// What a subscriber received of numbered payloads 0..n.
struct Received {
    /// Deliveries per payload number: (dup flag of each delivery).
    deliveries: BTreeMap<usize, Vec<bool>>,
    /// First deliveries in arrival order.
    first_order: Vec<usize>,
}

impl Received {
    fn new() -> Self {
        Received {
            deliveries: BTreeMap::new(),
            first_order: Vec::new(),
        }
    }

    fn add(&mut self, n: usize, dup: bool) {
        let d = self.deliveries.entry(n).or_default();
        if d.is_empty() {
            self.first_order.push(n);
        }
        d.push(dup);
    }

    fn missing(&self, expected: impl Iterator<Item = usize>) -> Vec<usize> {
        expected
            .filter(|n| !self.deliveries.contains_key(n))
            .collect()
    }

    /// Number of repeated deliveries, and those of them without the DUP flag.
    fn duplicates(&self) -> (usize, Vec<usize>) {
        let mut repeats = 0;
        let mut without_dup = Vec::new();
        for (n, d) in &self.deliveries {
            repeats += d.len() - 1;
            if d[1..].iter().any(|dup| !dup) {
                without_dup.push(*n);
            }
        }
        (repeats, without_dup)
    }

    fn assert_complete(&self, n: usize, context: &str) {
        let missing = self.missing(0..n);
        let (repeats, without_dup) = self.duplicates();
        eprintln!(
            "{context}: {} distinct of {n} delivered, {repeats} duplicate deliveries",
            self.deliveries.len()
        );
        assert!(
            missing.is_empty(),
            "{context}: {} of {n} acknowledged messages missing after restart, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        assert!(
            without_dup.is_empty(),
            "{context}: {} messages delivered again without DUP, e.g. {:?}",
            without_dup.len(),
            &without_dup[..without_dup.len().min(20)]
        );
        let mut sorted = self.first_order.clone();
        sorted.sort_unstable();
        assert_eq!(
            self.first_order, sorted,
            "{context}: first deliveries out of order"
        );
    }
}

/// Kills the broker (kill -9), restarts it on the same data and resumes the persistent
/// MQTT 3.1.1 session `sub_id`; also says how the broker went down.
async fn resume_after_crash(broker: &mut Broker, sub_id: &str) -> (V3Client, &'static str) {
    let how = broker.crash();
    broker.restart();
    let context = format!("persistent session lost across {how}");
    (V3Client::resume(broker, sub_id, &context).await, how)
}

/// A broker process the test can kill -9, a fresh topic and a fresh persistent-session id.
fn killable_broker(topic: &str, sub_id: &str) -> (Broker, String, String) {
    let broker = Broker::builder().process().start();
    (broker, unique(topic), unique(sub_id))
}

#[tokio::test]
async fn qos1_messages_queued_for_an_offline_v311_session_survive_kill9() {
    const N: usize = 500;
    let (mut broker, topic, sub_id) = killable_broker("crash/v311", "crash-sub");

    within(TEST_LIMIT, "queue phase", async {
        let sub = V3Client::connect(&broker, &sub_id, false).await;
        queue_while_offline(&broker, sub, &topic, N).await;
    })
    .await;

    within(TEST_LIMIT, "redelivery phase", async {
        let (mut sub, how) = resume_after_crash(&mut broker, &sub_id).await;
        let got = collect(&mut sub, N, Duration::from_secs(60)).await;
        got.assert_complete(N, &format!("v3.1.1 offline queue across {how}"));
    })
    .await;
}

#[tokio::test]
async fn a_drain_cut_by_kill9_resumes_in_order_without_loss() {
    // Longer than the drain's window (8,192): the broker dies with ids recorded ahead for
    // deliveries it never sent, and a backlog behind them on disk only.
    const N: usize = 20_000;
    const BEFORE_CRASH: usize = 5_000;
    // Our default queue bound (10,000 messages) would drop half of them; the mosquitto
    // reference's configuration allows 100,000.
    let mut builder = Broker::builder().process();
    if BrokerKind::from_env() == BrokerKind::Edge {
        builder = builder.config_text("[limits]\nmax_queued_messages = 100000\n");
    }
    let mut broker = builder.start();
    let (topic, sub_id) = (unique("crash/drain"), unique("drain-sub"));

    within(TEST_LIMIT, "queue phase", async {
        let sub = V3Client::connect(&broker, &sub_id, false).await;
        queue_while_offline(&broker, sub, &topic, N).await;
    })
    .await;

    let (mut got, how) = within(TEST_LIMIT, "drain before the crash", async {
        let mut sub =
            V3Client::resume(&broker, &sub_id, "persistent session before the crash").await;
        let mut got = Received::new();
        while got.deliveries.len() < BEFORE_CRASH {
            let p = sub
                .try_recv(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("drain stalled after {}", got.deliveries.len()));
            got.add(payload_number(&p.payload), p.dup);
        }
        let how = broker.crash();
        // What the client read (and acknowledged) before the crash but the test had not
        // taken yet: acknowledged, so the broker need not send it again.
        while let Some(p) = sub.try_recv(QUIET).await {
            got.add(payload_number(&p.payload), p.dup);
        }
        (got, how)
    })
    .await;

    within(TEST_LIMIT, "drain after the restart", async {
        broker.restart();
        let context = format!("persistent session lost across {how}");
        let mut sub = V3Client::resume(&broker, &sub_id, &context).await;
        let rest = collect(&mut sub, N, Duration::from_secs(80)).await;
        for (n, d) in rest.first_order.iter().map(|n| (n, &rest.deliveries[n])) {
            for dup in d {
                got.add(*n, *dup);
            }
        }
        got.assert_complete(N, &format!("drain cut by {how}"));
    })
    .await;
}

#[tokio::test]
async fn qos1_messages_queued_for_an_expiring_v5_session_survive_kill9() {
    const N: usize = 300;
    let mut broker = Broker::builder().process().start();
    if !broker.is_edge() {
        // Seen with mosquitto 2.0.11: a v5 session is not restored from its persistence file.
        eprintln!("skipped under the mosquitto reference: it does not restore v5 sessions");
        return;
    }
    let topic = unique("crash/v5");
    let sub_id = unique("crash-sub5");
    let mut o = v5_options(&broker, &sub_id);
    o.set_session_expiry_interval(Some(3600));

    within(TEST_LIMIT, "queue phase", async {
        let sub = V5Client::connect_with(o.clone()).await;
        queue_while_offline(&broker, sub, &topic, N).await;
    })
    .await;

    let how = broker.crash();
    broker.restart();

    within(TEST_LIMIT, "redelivery phase", async {
        o.set_clean_start(false);
        let mut sub = V5Client::connect_with(o).await;
        assert!(sub.connack.session_present, "v5 session lost across {how}");
        let got = collect(&mut sub, N, Duration::from_secs(60)).await;
        got.assert_complete(N, &format!("v5 offline queue across {how}"));
    })
    .await;
}

/// Subscribes the persistent session `sub` to `topic` at QoS 1 and disconnects it, then
/// publishes numbered payloads 0..n at QoS 1 to it from another client, dropped once every
/// PUBACK is in: each of the n messages is acknowledged, hence durable.
async fn queue_while_offline<C: ClientApi>(
    broker: &Broker,
    mut sub: Client<C>,
    topic: &str,
    n: usize,
) where
    Client<C>: AnyClient,
{
    sub.subscribe_ok(topic, QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Client::<C>::connect_clean(broker, &unique("crash-pub")).await;
    publisher
        .publish_all_qos1(topic, &numbered_payloads(n), Duration::from_secs(60))
        .await;
    publisher.drop_connection();
}

/// Receives numbered QoS 1 payloads until all of 0..n came or `limit` passed, then anything
/// more (duplicates) within a short quiet period.
async fn collect<C: ClientApi>(sub: &mut Client<C>, n: usize, limit: Duration) -> Received {
    let mut got = Received::new();
    let deadline = Instant::now() + limit;
    while got.deliveries.len() < n && Instant::now() < deadline {
        match sub.try_recv(Duration::from_secs(5)).await {
            Some(p) => {
                assert_eq!(p.qos(), QoS::AtLeastOnce, "queued at QoS 1");
                got.add(payload_number(p.payload()), p.dup());
            }
            None => break,
        }
    }
    while let Some(p) = sub.try_recv(QUIET).await {
        got.add(payload_number(p.payload()), p.dup());
    }
    got
}

/// A new subscriber's retained message on `topic` (subscribed at `qos`) after the broker
/// came back from `how`: it must come, carry RETAIN and `payload`.
async fn retained_after<C: ClientApi>(
    broker: &Broker,
    topic: &str,
    qos: QoS,
    payload: &str,
    how: &str,
) -> <C::Event as MqttEvent>::Publish
where
    Client<C>: AnyClient,
{
    let mut sub = Client::<C>::connect_clean(broker, &unique("sub")).await;
    sub.subscribe_ok(topic, qos).await;
    let p = sub
        .try_recv(WAIT)
        .await
        .unwrap_or_else(|| panic!("acknowledged retained message {payload:?} lost across {how}"));
    assert_eq!(p.payload(), payload.as_bytes());
    assert!(p.retain());
    p
}

#[tokio::test]
async fn retained_qos1_message_is_durable_once_acknowledged() {
    let mut broker = Broker::builder().process().start();
    let topic = unique("durable/retained");
    within(TEST_LIMIT, "publish", async {
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "survives")
            .await;
        // PUBACK received: crash right away, before any periodic flush could run.
    })
    .await;
    let how = broker.crash();
    broker.restart();
    within(TEST_LIMIT, "check", async {
        retained_after::<V3Api>(&broker, &topic, QoS::AtLeastOnce, "survives", how).await;
    })
    .await;
}

#[tokio::test]
async fn retained_qos2_v5_message_with_properties_is_durable_once_completed() {
    use robustmq_edge_e2e::v5bytes::PublishProperties;
    let mut broker = Broker::builder().process().start();
    let topic = unique("durable/retained5");
    within(TEST_LIMIT, "publish", async {
        let mut publisher = V5Client::connect(&broker, &unique("pub5")).await;
        let props = PublishProperties {
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        publisher
            .publish_with(
                &topic,
                rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                true,
                "v5-survives",
                Some(props),
            )
            .await;
    })
    .await;
    let how = broker.crash();
    broker.restart();
    within(TEST_LIMIT, "check", async {
        let p =
            retained_after::<V5Api>(&broker, &topic, QoS::ExactlyOnce, "v5-survives", how).await;
        assert_eq!(p.qos, rumqttc::v5::mqttbytes::QoS::ExactlyOnce);
        let props = p.properties.unwrap_or_default();
        assert_eq!(
            props.user_properties,
            vec![("k".to_string(), "v".to_string())]
        );
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    })
    .await;
}

#[tokio::test]
async fn every_acknowledged_message_survives_kill9_in_the_middle_of_a_publish_burst() {
    const N: usize = 2000;
    let (mut broker, topic, sub_id) = killable_broker("burst", "burst-sub");

    let acked: Vec<usize> = within(TEST_LIMIT, "burst", async {
        let sub = V3Client::persistent_subscriber(&broker, &sub_id, &topic).await;
        sub.disconnect().await;

        let mut publisher = V3Client::connect(&broker, &unique("burst-pub"), true).await;
        for p in numbered_payloads(N) {
            publisher
                .client
                .publish(&topic, QoS::AtLeastOnce, false, p)
                .await
                .expect("queue PUBLISH");
        }
        // rumqttc writes the publishes in request order: the i-th outgoing PUBLISH carries
        // payload i, so its packet id tells which payload a PUBACK acknowledges.
        let mut pkid_to_payload: HashMap<u16, usize> = HashMap::new();
        let mut sent = 0;
        let mut acked = Vec::new();
        let kill_after = N / 3;
        loop {
            let ev = publisher
                .events
                .try_wait_for(WAIT, |e| match e {
                    rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                        Some((true, *pkid))
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) => Some((false, a.pkid)),
                    _ => None,
                })
                .await;
            match ev {
                Ok((true, pkid)) => {
                    pkid_to_payload.insert(pkid, sent);
                    sent += 1;
                }
                Ok((false, pkid)) => {
                    acked.push(
                        *pkid_to_payload
                            .get(&pkid)
                            .expect("PUBACK for a sent packet id"),
                    );
                    if acked.len() == kill_after {
                        break;
                    }
                }
                Err(e) => panic!("publish burst: {e} after {} PUBACKs", acked.len()),
            }
        }
        // Kill while the rest of the burst is in flight; PUBACKs already read count too.
        acked
    })
    .await;

    within(TEST_LIMIT, "redelivery", async {
        let (mut sub, how) = resume_after_crash(&mut broker, &sub_id).await;
        let mut got = Received::new();
        while let Some(p) = sub.try_recv(Duration::from_secs(2)).await {
            got.add(payload_number(&p.payload), p.dup);
        }
        let missing: Vec<usize> = acked
            .iter()
            .copied()
            .filter(|n| !got.deliveries.contains_key(n))
            .collect();
        eprintln!(
            "burst: {} acknowledged before {how}, {} distinct delivered after restart",
            acked.len(),
            got.deliveries.len()
        );
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged messages lost across {how}, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(20)]
        );
        let (_, without_dup) = got.duplicates();
        assert!(
            without_dup.is_empty(),
            "redelivered without DUP: {without_dup:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn delivered_messages_are_not_redelivered_after_a_clean_restart() {
    let mut broker = Broker::start();
    let topic = unique("clean-restart");
    let sub_id = unique("cr-sub");
    within(TEST_LIMIT, "deliver", async {
        let mut sub = V3Client::persistent_subscriber(&broker, &sub_id, &topic).await;
        let mut publisher = V3Client::connect(&broker, &unique("cr-pub"), true).await;
        publisher
            .publish_all_qos1(&topic, &numbered_payloads(50), WAIT)
            .await;
        let got = collect(&mut sub, 50, WAIT).await;
        got.assert_complete(50, "live delivery");
        sub.disconnect().await;
    })
    .await;
    let status = broker.stop();
    if broker.is_edge() {
        assert!(
            status.success(),
            "SIGTERM must shut down cleanly, got {status}"
        );
    }
    broker.restart();
    within(TEST_LIMIT, "after restart", async {
        let mut sub =
            V3Client::resume(&broker, &sub_id, "session kept across a clean restart").await;
        sub.expect_no_publish(Duration::from_secs(1), "acknowledged deliveries came again")
            .await;
        // The subscription itself survived.
        let mut publisher = V3Client::connect(&broker, &unique("cr-pub2"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, "after")
            .await;
        assert_eq!(sub.recv(WAIT).await.payload, "after".as_bytes());
    })
    .await;
}

#[test]
fn with_on_damaged_stop_a_database_that_cannot_be_opened_is_reported_and_left_in_place() {
    let mut broker = Broker::builder()
        .process()
        .config_text("[storage]\non_damaged = \"stop\"\n")
        .start();
    if !broker.is_edge() {
        eprintln!("skipped under the mosquitto reference: checks robustmq-edge's own database");
        return;
    }
    broker.stop();
    let db = broker.data_dir().join("edge.redb");
    assert!(db.is_file(), "expected the database at {}", db.display());
    let garbage = b"this is not a redb database\n".repeat(200);
    std::fs::write(&db, &garbage).expect("overwrite database");
    let (status, log) = broker.restart_expecting_failure(Duration::from_secs(10));
    assert!(
        !status.success(),
        "must exit with an error status, got {status}"
    );
    assert!(
        log.contains("edge.redb"),
        "the error must name the database file; log:\n{log}"
    );
    assert_eq!(
        std::fs::read(&db).expect("database still there"),
        garbage,
        "the unreadable database must not be replaced or modified"
    );
}

#[tokio::test]
async fn a_damaged_database_is_set_aside_and_the_broker_serves_with_an_empty_one() {
    let mut broker = Broker::builder().process().start();
    if !broker.is_edge() {
        eprintln!("skipped under the mosquitto reference: checks robustmq-edge's own database");
        return;
    }
    let topic = unique("damaged/retained");
    within(TEST_LIMIT, "publish", async {
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "before")
            .await;
    })
    .await;
    broker.stop();
    // Every page after redb's header garbled: redb panics on the first one it reads.
    let db = broker.data_dir().join("edge.redb");
    let mut bytes = std::fs::read(&db).expect("database");
    bytes.iter_mut().skip(4096).for_each(|b| *b = 0xA5);
    std::fs::write(&db, &bytes).expect("garble database");
    broker.restart();
    let log = broker.log();
    assert!(
        log.contains("database damaged") && log.contains("damaged-"),
        "the set-aside must be logged with its folder; log:\n{log}"
    );
    let folder = std::fs::read_dir(broker.data_dir())
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("damaged-"))
        })
        .expect("a damaged-* folder");
    assert_eq!(
        std::fs::read(folder.join("edge.redb")).expect("set-aside file"),
        bytes,
        "the damaged file is kept as it was found"
    );
    within(TEST_LIMIT, "serves", async {
        let mut sub = V3Client::connect(&broker, &unique("sub"), true).await;
        sub.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        sub.expect_no_publish(
            Duration::from_millis(500),
            "a retained message from the damaged file",
        )
        .await;
        let mut publisher = V3Client::connect(&broker, &unique("pub2"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, "after")
            .await;
        assert_eq!(sub.recv(WAIT).await.payload, "after".as_bytes());
    })
    .await;
    // The new database is an intact one: the next start sets nothing aside.
    broker.stop();
    broker.restart();
    broker.assert_running();
    let folders = std::fs::read_dir(broker.data_dir())
        .expect("data dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
        })
        .count();
    assert_eq!(folders, 1);
}
