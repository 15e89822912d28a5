"""Retained messages: set, replace, delete with an empty payload, delivered on subscribe with the
retain flag, live messages without it."""

import pytest

pytestmark = pytest.mark.timeout(30)


def test_retained_message_is_delivered_on_subscribe_with_retain_flag(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"last known", qos=1, retain=True)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    msg = sub.expect_message()
    assert (msg.topic, msg.payload, msg.retain, msg.qos) == (f"{uid}/r", b"last known", True, 1)
    sub.expect_no_message(0.3)


def test_retained_message_is_replaced_by_a_newer_one(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"old", qos=1, retain=True)
    pub.publish(f"{uid}/r", b"new", qos=1, retain=True)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    assert sub.expect_message().payload == b"new"
    sub.expect_no_message(0.3)


def test_retained_message_with_empty_payload_is_deleted(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"soon gone", qos=1, retain=True)
    pub.publish(f"{uid}/r", b"", qos=1, retain=True)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    sub.expect_no_message(0.5)


def test_empty_retained_publish_is_still_forwarded_to_current_subscribers(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"", qos=1, retain=True)
    msg = sub.expect_message()
    assert msg.payload == b"" and msg.topic == f"{uid}/r"


def test_message_published_while_subscribed_is_delivered_without_retain_flag(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"live", qos=1, retain=True)
    msg = sub.expect_message()
    assert msg.payload == b"live" and msg.retain is False


def test_non_retained_publish_does_not_replace_the_retained_message(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"kept", qos=1, retain=True)
    pub.publish(f"{uid}/r", b"transient", qos=1, retain=False)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    assert sub.expect_message().payload == b"kept"


def test_retained_messages_matching_a_wildcard_subscription_are_all_delivered(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    topics = [f"{uid}/a", f"{uid}/b/c", f"{uid}/d"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1, retain=True)
    pub.publish(f"{uid}x/other", b"no", qos=1, retain=True)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/#", qos=1)
    got = sorted(m.topic for m in sub.expect_messages(3))
    assert got == sorted(topics)
    sub.expect_no_message(0.3)


def test_retained_message_is_delivered_at_the_lower_of_its_qos_and_the_subscription_qos(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r2", b"q2", qos=2, retain=True)
    pub.publish(f"{uid}/r0", b"q0", qos=0, retain=True)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r2", qos=1)
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"q2", 1)
    sub.subscribe(f"{uid}/r0", qos=2)
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"q0", 0)


def test_retained_message_is_resent_when_the_subscription_is_repeated(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", b"again", qos=1, retain=True)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    assert sub.expect_message().payload == b"again"
    sub.subscribe(f"{uid}/r", qos=1)  # v3.1.1 [MQTT-3.8.4-3]; v5 retain handling 0 (default)
    m = sub.expect_message()
    assert m.payload == b"again" and m.retain
