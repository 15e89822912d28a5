//! MQTT 3.1.1 behaviour, driven by rumqttc's v3.1.1 client against the real broker binary.

use std::collections::HashSet;
use std::time::Duration;

use robustmq_edge_e2e::rumqttc::{LastWill, QoS};
use robustmq_edge_e2e::*;

const TEST_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn qos0_qos1_qos2_publishes_round_trip_at_the_granted_qos() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let topic = unique("rt");
        let mut sub = V3Client::connect(&broker, &unique("sub"), true).await;
        sub.subscribe_ok(&topic, QoS::ExactlyOnce).await;
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("payload at {qos:?}");
            publisher.publish(&topic, qos, false, payload.clone()).await;
            let p = sub.recv(WAIT).await;
            assert_eq!(p.topic, topic);
            assert_eq!(p.payload, payload.as_bytes());
            assert_eq!(
                p.qos, qos,
                "delivered at the publish QoS (subscription is QoS 2)"
            );
            assert!(!p.retain, "live message must not carry RETAIN");
            assert!(!p.dup, "first delivery must not carry DUP");
        }
        sub.expect_no_publish(QUIET, "exactly one delivery each")
            .await;
        publisher.disconnect().await;
        sub.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn delivery_qos_is_downgraded_to_the_subscription_qos() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let topic = unique("down");
        let mut sub0 = V3Client::connect(&broker, &unique("s0"), true).await;
        sub0.subscribe_ok(&topic, QoS::AtMostOnce).await;
        let mut sub1 = V3Client::connect(&broker, &unique("s1"), true).await;
        sub1.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::ExactlyOnce, false, "x")
            .await;
        assert_eq!(sub0.recv(WAIT).await.qos, QoS::AtMostOnce);
        assert_eq!(sub1.recv(WAIT).await.qos, QoS::AtLeastOnce);
    })
    .await;
}

#[tokio::test]
async fn retained_message_is_delivered_to_a_later_subscriber_and_empty_payload_clears_it() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let topic = unique("retained");
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "first")
            .await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "kept")
            .await;

        let mut late = V3Client::connect(&broker, &unique("late"), true).await;
        late.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        let p = late.recv(WAIT).await;
        assert_eq!(
            p.payload,
            "kept".as_bytes(),
            "only the last retained message is kept"
        );
        assert!(
            p.retain,
            "a retained message sent on subscribe carries RETAIN"
        );
        assert_eq!(p.qos, QoS::AtLeastOnce);
        late.expect_no_publish(QUIET, "one retained message per topic")
            .await;

        // A live publish with RETAIN to an existing subscriber is delivered with RETAIN 0.
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "live")
            .await;
        let p = late.recv(WAIT).await;
        assert_eq!(p.payload, "live".as_bytes());
        assert!(
            !p.retain,
            "RETAIN is cleared on delivery to established subscriptions"
        );

        // Empty payload deletes the retained message.
        publisher.publish(&topic, QoS::AtLeastOnce, true, "").await;
        let _ = late.try_recv(QUIET).await; // the (empty) live delivery, if any
        let mut later = V3Client::connect(&broker, &unique("later"), true).await;
        later.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        later
            .expect_no_publish(QUIET, "retained message was deleted")
            .await;
    })
    .await;
}

#[tokio::test]
async fn wildcards_match_levels_and_keep_dollar_topics_out() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let root = unique("wild");
        let mut plus = V3Client::connect(&broker, &unique("plus"), true).await;
        plus.subscribe_ok(&format!("{root}/+/temp"), QoS::AtLeastOnce)
            .await;
        let mut hash = V3Client::connect(&broker, &unique("hash"), true).await;
        hash.subscribe_ok(&format!("{root}/#"), QoS::AtLeastOnce)
            .await;
        let mut all = V3Client::connect(&broker, &unique("all"), true).await;
        all.subscribe_ok("#", QoS::AtLeastOnce).await;
        all.subscribe_ok("+/x", QoS::AtLeastOnce).await;

        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        let topics = [
            format!("{root}/kitchen/temp"),     // plus, hash
            format!("{root}/kitchen/humidity"), // hash
            format!("{root}/a/b/temp"),         // hash only (+ is one level)
            root.clone(),                       // hash: `#` also matches the parent level
            format!("{root}//temp"),            // plus (empty level), hash
        ];
        for t in &topics {
            publisher
                .publish(t, QoS::AtLeastOnce, false, t.clone())
                .await;
        }
        // `$` topics are not matched by filters starting with a wildcard.
        publisher
            .publish("$dollar/x", QoS::AtLeastOnce, false, "dollar")
            .await;

        let mut got_plus = Vec::new();
        while let Some(p) = plus.try_recv(QUIET).await {
            got_plus.push(p.topic);
        }
        let mut got_hash = Vec::new();
        while let Some(p) = hash.try_recv(QUIET).await {
            got_hash.push(p.topic);
        }
        let mut got_all = Vec::new();
        while let Some(p) = all.try_recv(QUIET).await {
            got_all.push(p.topic);
        }
        assert_eq!(
            got_plus,
            vec![topics[0].clone(), topics[4].clone()],
            "{root}/+/temp"
        );
        assert_eq!(got_hash, topics.to_vec(), "{root}/#");
        assert!(
            !got_all.iter().any(|t| t.starts_with('$')),
            "`#` and `+/x` must not match $-topics: {got_all:?}"
        );
        assert_eq!(
            got_all.len(),
            topics.len(),
            "`#` gets every non-$ topic once: {got_all:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let topic = unique("unsub");
        let mut sub = V3Client::connect(&broker, &unique("sub"), true).await;
        sub.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, "before")
            .await;
        assert_eq!(sub.recv(WAIT).await.payload, "before".as_bytes());
        sub.unsubscribe(&topic).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, "after")
            .await;
        sub.expect_no_publish(QUIET, "after UNSUBSCRIBE").await;
    })
    .await;
}

#[tokio::test]
async fn shared_subscription_splits_messages_among_members() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let topic = unique("shared");
        let filter = format!("$share/workers/{topic}");
        let mut a = V3Client::connect(&broker, &unique("a"), true).await;
        a.subscribe_ok(&filter, QoS::AtLeastOnce).await;
        let mut b = V3Client::connect(&broker, &unique("b"), true).await;
        b.subscribe_ok(&filter, QoS::AtLeastOnce).await;
        let mut plain = V3Client::connect(&broker, &unique("plain"), true).await;
        plain.subscribe_ok(&topic, QoS::AtLeastOnce).await;

        let n = 40;
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish_all_qos1(&topic, &numbered_payloads(n), WAIT)
            .await;

        let mut seen = Vec::new();
        let (mut count_a, mut count_b) = (0, 0);
        while let Some(p) = a.try_recv(QUIET).await {
            seen.push(payload_number(&p.payload));
            count_a += 1;
        }
        while let Some(p) = b.try_recv(QUIET).await {
            seen.push(payload_number(&p.payload));
            count_b += 1;
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..n).collect::<Vec<_>>(),
            "each message to exactly one group member"
        );
        assert!(
            count_a > 0 && count_b > 0,
            "both members get messages: a={count_a} b={count_b}"
        );
        let mut plain_count = 0;
        while plain.try_recv(QUIET).await.is_some() {
            plain_count += 1;
        }
        assert_eq!(
            plain_count, n,
            "a non-shared subscriber still gets every message"
        );
    })
    .await;
}

#[tokio::test]
async fn persistent_session_receives_qos1_messages_queued_while_offline() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let topic = unique("offline");
        let id = unique("persistent");
        let mut sub = V3Client::connect(&broker, &id, false).await;
        sub.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        sub.disconnect().await;

        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish_all_qos1(&topic, &numbered_payloads(20), WAIT)
            .await;
        publisher
            .publish(&topic, QoS::AtMostOnce, false, "qos0-while-offline")
            .await;

        let mut sub = V3Client::connect(&broker, &id, false).await;
        assert!(
            sub.connack.session_present,
            "session must be present on reconnect"
        );
        let mut got = Vec::new();
        while let Some(p) = sub.try_recv(Duration::from_secs(1)).await {
            if p.qos == QoS::AtLeastOnce {
                got.push(payload_number(&p.payload));
            }
        }
        assert_eq!(
            got,
            (0..20).collect::<Vec<_>>(),
            "queued in order, none missing"
        );

        // A clean session discards it.
        sub.disconnect().await;
        let clean = V3Client::connect(&broker, &id, true).await;
        assert!(
            !clean.connack.session_present,
            "clean session starts without state"
        );
    })
    .await;
}

#[tokio::test]
async fn will_is_published_when_a_client_drops_without_disconnect() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let will_topic = unique("will");
        let mut watcher = V3Client::connect(&broker, &unique("watcher"), true).await;
        watcher.subscribe_ok(&will_topic, QoS::AtLeastOnce).await;

        // Closed cleanly with DISCONNECT: no will.
        let mut o = v3_options(&broker, &unique("polite"), true);
        o.set_last_will(LastWill::new(
            &will_topic,
            "polite",
            QoS::AtLeastOnce,
            false,
        ));
        V3Client::connect_with(o).await.disconnect().await;
        watcher
            .expect_no_publish(QUIET, "will after DISCONNECT")
            .await;

        // Dropped: will sent.
        let mut o = v3_options(&broker, &unique("rude"), true);
        o.set_last_will(LastWill::new(&will_topic, "gone", QoS::AtLeastOnce, false));
        V3Client::connect_with(o).await.drop_connection();
        let p = watcher.recv(WAIT).await;
        assert_eq!(p.payload, "gone".as_bytes());
    })
    .await;
}

#[tokio::test]
async fn second_connection_with_the_same_client_id_takes_over_the_session() {
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let id = unique("takeover");
        let topic = unique("takeover-topic");
        let mut first = V3Client::connect(&broker, &id, false).await;
        first.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        let mut second = V3Client::connect(&broker, &id, false).await;
        assert!(
            second.connack.session_present,
            "the taken-over session is kept"
        );
        first
            .events
            .wait_closed(WAIT)
            .await
            .expect("the first connection is closed by the broker");
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, "to-second")
            .await;
        assert_eq!(second.recv(WAIT).await.payload, "to-second".as_bytes());
    })
    .await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy() {
    // A robustmq-edge requirement (issue 2): one copy at the highest granted QoS. MQTT 3.1.1
    // also allows one copy per subscription, so mosquitto may differ here.
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        let root = unique("overlap");
        let mut sub = V3Client::connect(&broker, &unique("sub"), true).await;
        sub.subscribe_ok(&format!("{root}/#"), QoS::AtMostOnce)
            .await;
        sub.subscribe_ok(&format!("{root}/+"), QoS::AtLeastOnce)
            .await;
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&format!("{root}/x"), QoS::AtLeastOnce, false, "once")
            .await;
        let p = sub.recv(WAIT).await;
        assert_eq!(
            p.qos,
            QoS::AtLeastOnce,
            "highest QoS of the matching subscriptions"
        );
        let mut extra = HashSet::new();
        while let Some(p) = sub.try_recv(QUIET).await {
            extra.insert(p.topic);
        }
        if broker.is_edge() {
            assert!(extra.is_empty(), "delivered more than once: {extra:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn broker_closes_the_connection_promptly_after_client_disconnect() {
    // MQTT 3.1.1 3.14.4: on DISCONNECT the server SHOULD close the connection if the client has
    // not. rumqttc's event loop waits for that close, so a slow close holds up every rumqttc
    // `disconnect()` (and keeps the connection's resources alive meanwhile).
    let broker = Broker::start();
    within(TEST_LIMIT, "test", async {
        for _ in 0..3 {
            let c = V3Client::connect(&broker, &unique("bye"), true).await;
            let delay = c.disconnect_and_time_server_close().await;
            assert!(
                delay < Duration::from_millis(250),
                "broker closed the connection {delay:?} after DISCONNECT"
            );
        }
    })
    .await;
}
