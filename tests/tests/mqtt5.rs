//! MQTT 5.0 behaviour, driven by rumqttc's v5 client against the real broker binary.

use std::time::Duration;

use robustmq_edge_e2e::rumqttc::v5::mqttbytes::QoS;
use robustmq_edge_e2e::v5bytes::{
    DisconnectReasonCode, Filter, LastWill, LastWillProperties, PublishProperties,
    RetainForwardRule, SubscribeProperties, SubscribeReasonCode, UnsubAckReason,
};
use robustmq_edge_e2e::*;

mod both_versions;
use both_versions::TEST_LIMIT;

both_versions::shared_tests!(v5);

#[test]
fn v5_user_properties_and_request_response_properties_pass_through() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("v5props");
        let mut sub = V5Client::subscribed(&broker, "sub", &topic, QoS::AtLeastOnce).await;
        let mut publisher = V5Client::connect(&broker, &unique("pub")).await;
        let user_properties = vec![
            ("sensor".to_string(), "t-17".to_string()),
            ("unit".to_string(), "celsius".to_string()),
            // Repeated names are allowed and their order must be kept.
            ("sensor".to_string(), "t-18".to_string()),
        ];
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            content_type: Some("application/json".into()),
            response_topic: Some(format!("{topic}/reply")),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: user_properties.clone(),
            ..Default::default()
        };
        publisher
            .publish_with(&topic, QoS::AtLeastOnce, false, "{\"t\":21.5}", Some(props))
            .await;
        let p = sub.recv(WAIT).await;
        let got = p.properties.expect("properties forwarded");
        assert_eq!(got.user_properties, user_properties);
        assert_eq!(got.payload_format_indicator, Some(1));
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        assert_eq!(got.response_topic, Some(format!("{topic}/reply")));
        assert_eq!(got.correlation_data.as_deref(), Some(&b"\x00\x01corr"[..]));
    })
}

#[test]
fn v5_retained_message_and_subscription_retain_options() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("v5ret");
        let mut publisher = V5Client::connect(&broker, &unique("pub")).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "stored")
            .await;

        // Plain subscription: retained message sent with RETAIN set.
        let mut late = V5Client::subscribed(&broker, "late", &topic, QoS::AtLeastOnce).await;
        let p = late.recv(WAIT).await;
        assert_eq!(p.payload, "stored".as_bytes());
        assert!(p.retain);

        // Retain handling 2 (never): no retained message on subscribe.
        let mut never = V5Client::connect(&broker, &unique("never")).await;
        let mut f = Filter::new(&topic, QoS::AtLeastOnce);
        f.retain_forward_rule = RetainForwardRule::Never;
        never.subscribe_with(f, None).await;
        never.expect_no_publish(QUIET, "retain handling = 2").await;

        // Retain as published: live messages keep their RETAIN flag.
        let mut rap = V5Client::connect(&broker, &unique("rap")).await;
        let mut f = Filter::new(&topic, QoS::AtLeastOnce);
        f.preserve_retain = true;
        f.retain_forward_rule = RetainForwardRule::Never;
        rap.subscribe_with(f, None).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, "live-retained")
            .await;
        let p = rap.recv(WAIT).await;
        assert_eq!(p.payload, "live-retained".as_bytes());
        assert!(
            p.retain,
            "retain as published keeps RETAIN on live delivery"
        );
        let p = late.recv(WAIT).await;
        assert_eq!(p.payload, "live-retained".as_bytes());
        assert!(
            !p.retain,
            "without retain-as-published RETAIN is cleared on live delivery"
        );
    })
}

#[test]
fn v5_no_local_subscription_does_not_echo_own_messages() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("v5nolocal");
        let mut c = V5Client::connect(&broker, &unique("self")).await;
        let mut f = Filter::new(&topic, QoS::AtLeastOnce);
        f.nolocal = true;
        c.subscribe_with(f, None).await;
        c.publish(&topic, QoS::AtLeastOnce, false, "mine").await;
        c.expect_no_publish(QUIET, "no local").await;
        let mut other = V5Client::connect(&broker, &unique("other")).await;
        other
            .publish(&topic, QoS::AtLeastOnce, false, "theirs")
            .await;
        assert_eq!(c.recv(WAIT).await.payload, "theirs".as_bytes());
    })
}

#[test]
fn v5_wildcards_and_subscription_identifiers() {
    broker_test(TEST_LIMIT, |broker| async move {
        let root = unique("v5wild");
        let mut sub = V5Client::connect(&broker, &unique("sub")).await;
        let ack = sub
            .subscribe_with(
                Filter::new(format!("{root}/+/temp"), QoS::AtLeastOnce),
                Some(SubscribeProperties {
                    id: Some(7),
                    user_properties: vec![],
                }),
            )
            .await;
        assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        sub.subscribe_with(
            Filter::new(format!("{root}/#"), QoS::AtMostOnce),
            Some(SubscribeProperties {
                id: Some(42),
                user_properties: vec![],
            }),
        )
        .await;
        let mut publisher = V5Client::connect(&broker, &unique("pub")).await;
        publisher
            .publish(
                &format!("{root}/hall/temp"),
                QoS::AtLeastOnce,
                false,
                "both",
            )
            .await;
        publisher
            .publish(&format!("{root}/hall/hum"), QoS::AtLeastOnce, false, "hash")
            .await;

        let mut copies = Vec::new();
        while let Some(p) = sub.try_recv(QUIET).await {
            copies.push(p);
        }
        let both: Vec<_> = copies
            .iter()
            .filter(|p| p.payload == "both".as_bytes())
            .collect();
        let hash: Vec<_> = copies
            .iter()
            .filter(|p| p.payload == "hash".as_bytes())
            .collect();
        assert_eq!(hash.len(), 1, "{root}/# matches hall/hum once");
        let ids = |p: &v5bytes::Publish| {
            let mut v = p
                .properties
                .clone()
                .unwrap_or_default()
                .subscription_identifiers;
            v.sort_unstable();
            v
        };
        assert_eq!(ids(hash[0]), vec![42]);
        if broker.is_edge() {
            // robustmq-edge delivers overlapping matches once, at the highest QoS, listing every
            // matching subscription identifier (issue 2).
            assert_eq!(
                both.len(),
                1,
                "one copy for overlapping subscriptions: {both:?}"
            );
            assert_eq!(both[0].qos, QoS::AtLeastOnce);
            assert_eq!(ids(both[0]), vec![7, 42]);
        } else {
            let mut all: Vec<usize> = both.iter().flat_map(|p| ids(p)).collect();
            all.sort_unstable();
            assert_eq!(all, vec![7, 42], "each identifier listed: {both:?}");
        }
    })
}

#[test]
fn v5_session_expiry_keeps_queued_messages_and_message_expiry_drops_stale_ones() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("v5exp");
        let id = unique("v5persist");
        let mut o = v5_options(&broker, &id);
        o.set_session_expiry_interval(Some(300));
        let mut sub = V5Client::connect_with(o.clone()).await;
        assert!(!sub.connack.session_present);
        sub.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        sub.disconnect().await;

        let mut publisher = V5Client::connect(&broker, &unique("pub")).await;
        // One message expiring after 1 s, one after 600 s.
        for (payload, secs) in [("stale", 1), ("fresh", 600)] {
            let expiry = PublishProperties {
                message_expiry_interval: Some(secs),
                ..Default::default()
            };
            publisher
                .publish_with(&topic, QoS::AtLeastOnce, false, payload, Some(expiry))
                .await;
        }
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, "no-expiry")
            .await;
        tokio::time::sleep(Duration::from_millis(2200)).await;

        o.set_clean_start(false);
        let mut sub = V5Client::connect_with(o).await;
        assert!(
            sub.connack.session_present,
            "session kept for its expiry interval"
        );
        let mut got = Vec::new();
        while let Some(p) = sub.try_recv(Duration::from_secs(1)).await {
            got.push(p);
        }
        let payloads: Vec<_> = got.iter().map(|p| p.payload.clone()).collect();
        assert_eq!(
            payloads,
            vec![
                Bytes::from_static(b"fresh"),
                Bytes::from_static(b"no-expiry")
            ],
            "the expired message is dropped, the others delivered in order"
        );
        let remaining = got[0]
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .expect("message expiry interval forwarded");
        assert!(
            (590..600).contains(&remaining),
            "expiry interval reduced by the time spent queued: {remaining}"
        );
    })
}

#[test]
fn v5_unsubscribe_reports_missing_subscriptions() {
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("v5unsub");
        let mut c = V5Client::subscribed(&broker, "c", &topic, QoS::AtLeastOnce).await;
        let ack = c.unsubscribe(&topic).await;
        assert_eq!(ack.reasons, vec![UnsubAckReason::Success]);
        let ack = c.unsubscribe(&topic).await;
        assert_eq!(ack.reasons, vec![UnsubAckReason::NoSubscriptionExisted]);
    })
}

#[test]
fn v5_session_takeover_disconnects_the_old_connection_with_reason() {
    broker_test(TEST_LIMIT, |broker| async move {
        let id = unique("v5takeover");
        let mut first = V5Client::connect(&broker, &id).await;
        let _second = V5Client::connect(&broker, &id).await;
        // rumqttc reports a server DISCONNECT as the error that ends its event loop.
        let closed = first
            .events
            .wait_closed(WAIT)
            .await
            .expect("the first connection is closed by the broker");
        if broker.is_edge() {
            // MQTT 5 3.1.4-3: DISCONNECT with 0x8E before closing (mosquitto 2.0.11 only
            // closes the socket, so the reference run checks the closing alone).
            let code = format!("{:?}", DisconnectReasonCode::SessionTakenOver);
            assert!(
                closed.contains(&code),
                "expected DISCONNECT {code}, got: {closed}"
            );
        }
    })
}

#[test]
fn v5_will_delay_is_cancelled_by_a_reconnect_and_sent_otherwise() {
    broker_test(TEST_LIMIT, |broker| async move {
        let (will_topic, mut watcher) =
            both_versions::will_watcher::<V5Api>(&broker, "v5will").await;

        let will = |payload: &str| {
            LastWill::new(
                &will_topic,
                payload.to_string(),
                QoS::AtLeastOnce,
                false,
                Some(LastWillProperties {
                    delay_interval: Some(2),
                    payload_format_indicator: None,
                    message_expiry_interval: None,
                    content_type: None,
                    response_topic: None,
                    correlation_data: None,
                    user_properties: vec![],
                }),
            )
        };
        // Dropped, then back within the delay on the same (unexpired) session: no will.
        let id = unique("comeback");
        let mut o = v5_options(&broker, &id);
        o.set_session_expiry_interval(Some(60))
            .set_last_will(will("comeback"));
        V5Client::connect_with(o.clone()).await.drop_connection();
        tokio::time::sleep(Duration::from_millis(300)).await;
        o.set_clean_start(false);
        let _back = V5Client::connect_with(o).await;
        watcher
            .expect_no_publish(Duration::from_millis(2800), "will cancelled by reconnect")
            .await;

        // Dropped and gone: the will follows after the delay, not before.
        let mut o = v5_options(&broker, &unique("gone"));
        o.set_session_expiry_interval(Some(60))
            .set_last_will(will("gone"));
        V5Client::connect_with(o).await.drop_connection();
        watcher
            .expect_no_publish(Duration::from_millis(1200), "will before its delay")
            .await;
        let p = watcher.recv(Duration::from_secs(5)).await;
        assert_eq!(p.payload, "gone".as_bytes());
    })
}
