"""Retained messages: set, replace, delete with an empty payload, delivered on subscribe with the
retain flag, live messages without it."""

import pytest

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("publishes,kept", [
    pytest.param([(b"last known", True)], b"last known", id="delivered_with_retain_flag"),
    pytest.param([(b"old", True), (b"new", True)], b"new", id="replaced_by_a_newer_one"),
    pytest.param([(b"soon gone", True), (b"", True)], None, id="deleted_by_an_empty_payload"),
    pytest.param([(b"kept", True), (b"transient", False)], b"kept", id="not_replaced_by_a_non_retained_publish"),
])
def test_new_subscriber_gets_the_last_retained_message_with_retain_flag(broker, clients, version, uid, publishes, kept):
    """`publishes` are (payload, retain) in order on one topic; a later subscriber gets `kept`
    (None: nothing) at QoS 1 with the retain flag set, and nothing else."""
    pub = clients.connected(broker, f"p-{uid}", version)
    for payload, retain in publishes:
        pub.publish(f"{uid}/r", payload, qos=1, retain=retain)
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    if kept is not None:
        msg = sub.expect_message()
        assert (msg.topic, msg.payload, msg.retain, msg.qos) == (f"{uid}/r", kept, True, 1)
    sub.expect_no_message(0.5 if kept is None else 0.3)


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty_payload_is_still_forwarded"),
    pytest.param(b"live", id="live_message"),
])
def test_retained_publish_reaches_current_subscribers_without_retain_flag(broker, clients, version, uid, payload):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/r", payload, qos=1, retain=True)
    msg = sub.expect_message()
    assert (msg.topic, msg.payload, msg.retain) == (f"{uid}/r", payload, False)


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
