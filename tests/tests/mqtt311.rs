//! MQTT 3.1.1 behaviour, driven by rumqttc's v3.1.1 client against the real broker binary.

use std::time::Duration;

use robustmq_edge_e2e::rumqttc::{LastWill, QoS};
use robustmq_edge_e2e::*;

mod both_versions;
use both_versions::TEST_LIMIT;

both_versions::shared_tests!(v3);

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
        let (will_topic, mut watcher) = both_versions::will_watcher::<V3Api>(&broker, "will").await;

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
