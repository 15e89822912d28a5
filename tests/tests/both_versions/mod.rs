//! Behaviours MQTT 3.1.1 and 5.0 share, written once generic over the client version
//! (`Client<C>: AnyClient`, see `tests/lib.rs`), each on a broker of its own: `mqtt311.rs` runs
//! each with `V3Api` (rumqttc's 3.1.1 client), `mqtt5.rs` with `V5Api`, under the test names
//! of those files.

use std::time::Duration;

use robustmq_edge_e2e::rumqttc::QoS;
use robustmq_edge_e2e::*;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A publish at QoS 0, 1 and 2 reaches a QoS 2 subscriber once, at the publish QoS, without
/// RETAIN or DUP.
pub fn publishes_round_trip_at_each_qos<C: ClientApi>()
where
    Client<C>: AnyClient,
{
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("rt");
        let mut sub = Client::<C>::connect_clean(&broker, &unique("sub")).await;
        sub.subscribe_ok(&topic, QoS::ExactlyOnce).await;
        let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("payload at {qos:?}");
            publisher
                .publish(&topic, qos, false, payload.clone().into_bytes())
                .await;
            let p = sub.recv(WAIT).await;
            assert_eq!(p.topic(), topic);
            assert_eq!(p.payload(), payload.as_bytes());
            assert_eq!(
                p.qos(),
                qos,
                "delivered at the publish QoS (subscription is QoS 2)"
            );
            assert!(!p.retain(), "live message must not carry RETAIN");
            assert!(!p.dup(), "first delivery must not carry DUP");
        }
        sub.expect_no_publish(QUIET, "exactly one delivery each")
            .await;
        publisher.disconnect().await;
        sub.disconnect().await;
    })
}

/// `members` clients in one shared subscription get each of `n` QoS 1 messages exactly once
/// between them, split over at least two of them, while a plain subscription to the same topic
/// still gets all `n`.
pub fn shared_subscription_splits_messages<C: ClientApi>(members: usize, n: usize)
where
    Client<C>: AnyClient,
{
    broker_test(TEST_LIMIT, |broker| async move {
        let topic = unique("shared");
        let filter = format!("$share/workers/{topic}");
        let mut group = Vec::new();
        for _ in 0..members {
            let mut m = Client::<C>::connect_clean(&broker, &unique("member")).await;
            m.subscribe_ok(&filter, QoS::AtLeastOnce).await;
            group.push(m);
        }
        let mut plain = Client::<C>::connect_clean(&broker, &unique("plain")).await;
        plain.subscribe_ok(&topic, QoS::AtLeastOnce).await;

        let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
        publisher
            .publish_all_qos1(&topic, &numbered_payloads(n), WAIT)
            .await;

        let mut seen = Vec::new();
        let mut per_member = Vec::new();
        for m in &mut group {
            let mut count = 0;
            while let Some(p) = m.try_recv(QUIET).await {
                seen.push(payload_number(p.payload()));
                count += 1;
            }
            per_member.push(count);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..n).collect::<Vec<_>>(),
            "each message to exactly one group member"
        );
        assert!(
            per_member.iter().filter(|&&c| c > 0).count() >= 2,
            "split among the members: {per_member:?}"
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
}

/// After a client's DISCONNECT the broker closes the connection within 250 ms (MQTT 3.1.1
/// 3.14.4 and 5.0 3.14.4: the server SHOULD close it if the client has not). rumqttc's event
/// loop waits for that close, so a slow close holds up every rumqttc `disconnect()` and keeps
/// the connection's resources alive meanwhile.
pub fn broker_closes_the_connection_promptly_after_disconnect<C: ClientApi>()
where
    Client<C>: AnyClient,
{
    broker_test(TEST_LIMIT, |broker| async move {
        for _ in 0..3 {
            let c = Client::<C>::connect_clean(&broker, &unique("bye")).await;
            let delay = c.disconnect_and_time_server_close().await;
            assert!(
                delay < Duration::from_millis(250),
                "broker closed the connection {delay:?} after DISCONNECT"
            );
        }
    })
}
