//! Behaviours MQTT 3.1.1 and 5.0 share, written once generic over the client version
//! (`Client<C>: AnyClient`, see `tests/lib.rs`), each on a broker of its own: `mqtt311.rs` runs
//! each with `V3Api` (rumqttc's 3.1.1 client), `mqtt5.rs` with `V5Api`, under the test names
//! of those files, listed in [`shared_tests!`].

use std::time::Duration;

use robustmq_edge_e2e::rumqttc::QoS;
use robustmq_edge_e2e::*;

/// How long one test of `mqtt311.rs` or `mqtt5.rs` may take.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(60);

/// The tests of the behaviours below, one row each: the test's name (and the behaviour's
/// arguments) in `mqtt311.rs`, then in `mqtt5.rs`, then the behaviour. `shared_tests!(v3)` in
/// `mqtt311.rs` and `shared_tests!(v5)` in `mqtt5.rs` declare their version's `#[test]`s.
macro_rules! shared_tests {
    ($version:ident) => {
        $crate::both_versions::tests_for! { $version;
            qos0_qos1_qos2_publishes_round_trip_at_the_granted_qos(),
            v5_qos0_qos1_qos2_publishes_round_trip()
                => publishes_round_trip_at_each_qos;
            delivery_qos_is_downgraded_to_the_subscription_qos(),
            v5_delivery_qos_is_downgraded_to_the_subscription_qos()
                => delivery_qos_is_downgraded_to_the_subscription_qos;
            retained_message_is_delivered_to_a_later_subscriber_and_empty_payload_clears_it(),
            v5_retained_message_is_delivered_to_a_later_subscriber_and_empty_payload_clears_it()
                => retained_message_is_delivered_to_a_later_subscriber_and_empty_payload_clears_it;
            wildcards_match_levels_and_keep_dollar_topics_out(),
            v5_wildcards_match_levels_and_keep_dollar_topics_out()
                => wildcards_match_levels_and_keep_dollar_topics_out;
            unsubscribe_stops_delivery(), v5_unsubscribe_stops_delivery()
                => unsubscribe_stops_delivery;
            // 3.1.1: two members and a plain subscriber, 40 messages; 5.0: three members, 60.
            shared_subscription_splits_messages_among_members(2, 40),
            v5_shared_subscription_splits_messages_among_members(3, 60)
                => shared_subscription_splits_messages;
            overlapping_subscriptions_deliver_one_copy(),
            v5_overlapping_subscriptions_deliver_one_copy()
                => overlapping_subscriptions_deliver_one_copy;
            broker_closes_the_connection_promptly_after_client_disconnect(),
            v5_broker_closes_the_connection_promptly_after_client_disconnect()
                => broker_closes_the_connection_promptly_after_disconnect;
        }
    };
}
pub(crate) use shared_tests;

/// The `#[test]`s of one version (`v3`: `V3Api`, `v5`: `V5Api`) from the rows of
/// [`shared_tests!`], each running its behaviour on a broker of its own (`broker_test`, within
/// `TEST_LIMIT`).
macro_rules! tests_for {
    (v3; $($v3:ident($($a3:expr),*), $v5:ident($($a5:expr),*) => $behaviour:ident;)*) => {
        $(
            #[test]
            fn $v3() {
                broker_test($crate::both_versions::TEST_LIMIT, |broker| {
                    $crate::both_versions::$behaviour::<V3Api>(broker, $($a3),*)
                })
            }
        )*
    };
    (v5; $($v3:ident($($a3:expr),*), $v5:ident($($a5:expr),*) => $behaviour:ident;)*) => {
        $(
            #[test]
            fn $v5() {
                broker_test($crate::both_versions::TEST_LIMIT, |broker| {
                    $crate::both_versions::$behaviour::<V5Api>(broker, $($a5),*)
                })
            }
        )*
    };
}
pub(crate) use tests_for;

/// A publish at QoS 0, 1 and 2 reaches a QoS 2 subscriber once, at the publish QoS, without
/// RETAIN or DUP.
pub async fn publishes_round_trip_at_each_qos<C: ClientApi>(broker: Broker)
where
    Client<C>: AnyClient,
{
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
}

/// `members` clients in one shared subscription get each of `n` QoS 1 messages exactly once
/// between them, split over at least two of them, while a plain subscription to the same topic
/// still gets all `n`.
pub async fn shared_subscription_splits_messages<C: ClientApi>(
    broker: Broker,
    members: usize,
    n: usize,
) where
    Client<C>: AnyClient,
{
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
}

/// After a client's DISCONNECT the broker closes the connection within 250 ms (MQTT 3.1.1
/// 3.14.4 and 5.0 3.14.4: the server SHOULD close it if the client has not). rumqttc's event
/// loop waits for that close, so a slow close holds up every rumqttc `disconnect()` and keeps
/// the connection's resources alive meanwhile.
pub async fn broker_closes_the_connection_promptly_after_disconnect<C: ClientApi>(broker: Broker)
where
    Client<C>: AnyClient,
{
    for _ in 0..3 {
        let c = Client::<C>::connect_clean(&broker, &unique("bye")).await;
        let delay = c.disconnect_and_time_server_close().await;
        assert!(
            delay < Duration::from_millis(250),
            "broker closed the connection {delay:?} after DISCONNECT"
        );
    }
}

/// A new client `unique(name)` with a clean session, subscribed to `filter` at `qos` (granted).
async fn subscribed<C: ClientApi>(broker: &Broker, name: &str, filter: &str, qos: QoS) -> Client<C>
where
    Client<C>: AnyClient,
{
    let mut c = Client::<C>::connect_clean(broker, &unique(name)).await;
    c.subscribe_ok(filter, qos).await;
    c
}

/// A fresh will topic `unique(prefix)` and a client watching it at QoS 1.
pub async fn will_watcher<C: ClientApi>(broker: &Broker, prefix: &str) -> (String, Client<C>)
where
    Client<C>: AnyClient,
{
    let will_topic = unique(prefix);
    let watcher = subscribed::<C>(broker, "watcher", &will_topic, QoS::AtLeastOnce).await;
    (will_topic, watcher)
}

/// A QoS 2 publish reaches a QoS 0 and a QoS 1 subscriber at their subscription QoS.
pub async fn delivery_qos_is_downgraded_to_the_subscription_qos<C: ClientApi>(broker: Broker)
where
    Client<C>: AnyClient,
{
    let topic = unique("down");
    let mut sub0 = subscribed::<C>(&broker, "s0", &topic, QoS::AtMostOnce).await;
    let mut sub1 = subscribed::<C>(&broker, "s1", &topic, QoS::AtLeastOnce).await;
    let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
    publisher
        .publish(&topic, QoS::ExactlyOnce, false, b"x".to_vec())
        .await;
    assert_eq!(sub0.recv(WAIT).await.qos(), QoS::AtMostOnce);
    assert_eq!(sub1.recv(WAIT).await.qos(), QoS::AtLeastOnce);
}

/// Only the last retained message of a topic reaches a later subscriber, with RETAIN; a live
/// delivery to an existing subscription has RETAIN cleared; an empty retained payload deletes it.
pub async fn retained_message_is_delivered_to_a_later_subscriber_and_empty_payload_clears_it<
    C: ClientApi,
>(
    broker: Broker,
) where
    Client<C>: AnyClient,
{
    let topic = unique("retained");
    let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
    for payload in ["first", "kept"] {
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, payload.into())
            .await;
    }

    let mut late = subscribed::<C>(&broker, "late", &topic, QoS::AtLeastOnce).await;
    let p = late.recv(WAIT).await;
    assert_eq!(
        p.payload(),
        "kept".as_bytes(),
        "only the last retained message is kept"
    );
    assert!(
        p.retain(),
        "a retained message sent on subscribe carries RETAIN"
    );
    assert_eq!(p.qos(), QoS::AtLeastOnce);
    late.expect_no_publish(QUIET, "one retained message per topic")
        .await;

    // A live publish with RETAIN to an existing subscriber is delivered with RETAIN 0.
    publisher
        .publish(&topic, QoS::AtLeastOnce, true, b"live".to_vec())
        .await;
    let p = late.recv(WAIT).await;
    assert_eq!(p.payload(), "live".as_bytes());
    assert!(
        !p.retain(),
        "RETAIN is cleared on delivery to established subscriptions"
    );

    // Empty payload deletes the retained message.
    publisher
        .publish(&topic, QoS::AtLeastOnce, true, Vec::new())
        .await;
    let _ = late.try_recv(QUIET).await; // the (empty) live delivery, if any
    let mut later = subscribed::<C>(&broker, "later", &topic, QoS::AtLeastOnce).await;
    later
        .expect_no_publish(QUIET, "retained message was deleted")
        .await;
}

/// The topics `sub` receives until it has been quiet for `QUIET`, in arrival order.
async fn topics_received<C: ClientApi>(sub: &mut Client<C>) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(p) = sub.try_recv(QUIET).await {
        topics.push(p.topic());
    }
    topics
}

/// `+` matches one level (an empty one too), `#` the level and all below it, and filters
/// starting with a wildcard do not match `$` topics.
pub async fn wildcards_match_levels_and_keep_dollar_topics_out<C: ClientApi>(broker: Broker)
where
    Client<C>: AnyClient,
{
    let root = unique("wild");
    let plus_filter = format!("{root}/+/temp");
    let mut plus = subscribed::<C>(&broker, "plus", &plus_filter, QoS::AtLeastOnce).await;
    let hash_filter = format!("{root}/#");
    let mut hash = subscribed::<C>(&broker, "hash", &hash_filter, QoS::AtLeastOnce).await;
    let mut all = subscribed::<C>(&broker, "all", "#", QoS::AtLeastOnce).await;
    all.subscribe_ok("+/x", QoS::AtLeastOnce).await;

    let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
    let topics = [
        format!("{root}/kitchen/temp"),     // plus, hash
        format!("{root}/kitchen/humidity"), // hash
        format!("{root}/a/b/temp"),         // hash only (+ is one level)
        root.clone(),                       // hash: `#` also matches the parent level
        format!("{root}//temp"),            // plus (empty level), hash
    ];
    for t in &topics {
        publisher
            .publish(t, QoS::AtLeastOnce, false, t.clone().into_bytes())
            .await;
    }
    // `$` topics are not matched by filters starting with a wildcard.
    publisher
        .publish("$dollar/x", QoS::AtLeastOnce, false, b"dollar".to_vec())
        .await;

    let got_plus = topics_received(&mut plus).await;
    let got_hash = topics_received(&mut hash).await;
    let got_all = topics_received(&mut all).await;
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
}

/// After UNSUBSCRIBE the topic is no longer delivered.
pub async fn unsubscribe_stops_delivery<C: ClientApi>(broker: Broker)
where
    Client<C>: AnyClient,
{
    let topic = unique("unsub");
    let mut sub = subscribed::<C>(&broker, "sub", &topic, QoS::AtLeastOnce).await;
    let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, b"before".to_vec())
        .await;
    assert_eq!(sub.recv(WAIT).await.payload(), "before".as_bytes());
    sub.unsubscribe(&topic).await;
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, b"after".to_vec())
        .await;
    sub.expect_no_publish(QUIET, "after UNSUBSCRIBE").await;
}

/// A client whose subscriptions overlap gets one copy of a message, at the highest QoS of the
/// matching subscriptions. A robustmq-edge requirement (issue 2): MQTT also allows one copy
/// per subscription, so mosquitto may differ in the number of copies.
pub async fn overlapping_subscriptions_deliver_one_copy<C: ClientApi>(broker: Broker)
where
    Client<C>: AnyClient,
{
    let root = unique("overlap");
    let mut sub = subscribed::<C>(&broker, "sub", &format!("{root}/#"), QoS::AtMostOnce).await;
    sub.subscribe_ok(&format!("{root}/+"), QoS::AtLeastOnce)
        .await;
    let mut publisher = Client::<C>::connect_clean(&broker, &unique("pub")).await;
    publisher
        .publish(
            &format!("{root}/x"),
            QoS::AtLeastOnce,
            false,
            b"once".to_vec(),
        )
        .await;
    let p = sub.recv(WAIT).await;
    assert_eq!(
        p.qos(),
        QoS::AtLeastOnce,
        "highest QoS of the matching subscriptions"
    );
    let extra = topics_received(&mut sub).await;
    if broker.is_edge() {
        assert!(extra.is_empty(), "delivered more than once: {extra:?}");
    }
}
