//! MQTT 3.1.1 behaviour, driven by rumqttc's v3.1.1 client against the real broker binary.

use std::collections::HashSet;
use std::time::Duration;

use robustmq_edge_e2e::rumqttc::{LastWill, QoS};
use robustmq_edge_e2e::*;

mod both_versions;

const TEST_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn qos0_qos1_qos2_publishes_round_trip_at_the_granted_qos() {
    both_versions::publishes_round_trip_at_each_qos::<V3Api>()
}

#[test]
fn delivery_qos_is_downgraded_to_the_subscription_qos() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("down");
        let mut sub0 = V3Client::subscribed(&broker, "s0", &topic, QoS::AtMostOnce).await;
        let mut sub1 = V3Client::subscribed(&broker, "s1", &topic, QoS::AtLeastOnce).await;
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::ExactlyOnce, false, "x")
            .await;
        assert_eq!(sub0.recv(WAIT).await.qos, QoS::AtMostOnce);
        assert_eq!(sub1.recv(WAIT).await.qos, QoS::AtLeastOnce);
    })
}

#[test]
fn retained_message_is_delivered_to_a_later_subscriber_and_empty_payload_clears_it() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("retained");
        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "first")
            .await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "kept")
            .await;

        let mut late = V3Client::subscribed(&broker, "late", &topic, QoS::AtLeastOnce).await;
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
        let mut later = V3Client::subscribed(&broker, "later", &topic, QoS::AtLeastOnce).await;
        later
            .expect_no_publish(QUIET, "retained message was deleted")
            .await;
    })
}

#[test]
fn wildcards_match_levels_and_keep_dollar_topics_out() {
    broker_test(TEST_LIMIT, |broker| async move {
        let root = unique("wild");
        let mut plus =
            V3Client::subscribed(&broker, "plus", &format!("{root}/+/temp"), QoS::AtLeastOnce)
                .await;
        let mut hash =
            V3Client::subscribed(&broker, "hash", &format!("{root}/#"), QoS::AtLeastOnce).await;
        let mut all = V3Client::subscribed(&broker, "all", "#", QoS::AtLeastOnce).await;
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
}

#[test]
fn unsubscribe_stops_delivery() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("unsub");
        let mut sub = V3Client::subscribed(&broker, "sub", &topic, QoS::AtLeastOnce).await;
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
}

#[test]
fn shared_subscription_splits_messages_among_members() {
    // Two members and a plain subscriber, 40 messages.
    both_versions::shared_subscription_splits_messages::<V3Api>(2, 40)
}

#[test]
fn persistent_session_receives_qos1_messages_queued_while_offline() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("offline");
        let id = unique("persistent");
        let sub = V3Client::persistent_subscriber(&broker, &id, &topic).await;
        sub.disconnect().await;

        let mut publisher = V3Client::connect(&broker, &unique("pub"), true).await;
        publisher
            .publish_all_qos1(&topic, &numbered_payloads(20), WAIT)
            .await;
        publisher
            .publish(&topic, QoS::AtMostOnce, false, "qos0-while-offline")
            .await;

        let mut sub = V3Client::resume(&broker, &id, "session must be present on reconnect").await;
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
}

#[test]
fn will_is_published_when_a_client_drops_without_disconnect() {
    broker_test(TEST_LIMIT, |broker| async move {
        let will_topic = unique("will");
        let mut watcher =
            V3Client::subscribed(&broker, "watcher", &will_topic, QoS::AtLeastOnce).await;

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
}

#[test]
fn second_connection_with_the_same_client_id_takes_over_the_session() {
    broker_test(TEST_LIMIT, |broker| async move {
        let id = unique("takeover");
        let topic = unique("takeover-topic");
        let mut first = V3Client::persistent_subscriber(&broker, &id, &topic).await;
        let mut second = V3Client::resume(&broker, &id, "the taken-over session is kept").await;
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
}

#[test]
fn overlapping_subscriptions_deliver_one_copy() {
    // A robustmq-edge requirement (issue 2): one copy at the highest granted QoS. MQTT 3.1.1
    // also allows one copy per subscription, so mosquitto may differ here.
    broker_test(TEST_LIMIT, |broker| async move {
        let root = unique("overlap");
        let mut sub =
            V3Client::subscribed(&broker, "sub", &format!("{root}/#"), QoS::AtMostOnce).await;
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
}

#[test]
fn broker_closes_the_connection_promptly_after_client_disconnect() {
    both_versions::broker_closes_the_connection_promptly_after_disconnect::<V3Api>()
}
