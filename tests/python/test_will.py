"""Will messages: sent when the connection is lost, not on a normal DISCONNECT, v5 DISCONNECT 0x04,
will delay interval, will properties."""

import time

import pytest

import rawmqtt as r
from mqttclient import prop, props

pytestmark = pytest.mark.timeout(30)


def _watch(broker, clients, uid, version=4, topic=None):
    return clients.subscriber(broker, f"w-{uid}", version, topic or f"{uid}/will", qos=2)


def _with_will(broker, clients, uid, version, payload, **will_kw):
    """A client, not connected yet, whose will is `payload` on {uid}/will at QoS 1."""
    c = clients(broker, f"c-{uid}", version)
    c.will_set(f"{uid}/will", payload, qos=1, **will_kw)
    return c


def test_will_is_sent_when_the_connection_drops(broker, clients, version, uid):
    w = _watch(broker, clients, uid, version)
    c = _with_will(broker, clients, uid, version, b"lost")
    c.connect()
    c.drop()
    msg = w.expect_message()
    assert (msg.topic, msg.payload, msg.qos) == (f"{uid}/will", b"lost", 1)
    w.expect_no_message(0.3)


def test_will_is_not_sent_on_a_normal_disconnect(broker, clients, version, uid):
    w = _watch(broker, clients, uid, version)
    c = _with_will(broker, clients, uid, version, b"should not")
    c.connect()
    c.disconnect()
    w.expect_no_message(1.0)


def test_will_with_retain_flag_becomes_the_retained_message(broker, clients, version, uid):
    c = clients(broker, f"c-{uid}", version)
    c.will_set(f"{uid}/status", b"offline", qos=1, retain=True)
    c.connect()
    c.publish(f"{uid}/status", b"online", qos=1, retain=True)
    c.drop()
    w = _watch(broker, clients, uid, version, topic=f"{uid}/status")
    m = w.expect_message()
    assert (m.payload, m.retain) == (b"offline", True)


def test_will_is_sent_when_the_broker_closes_the_connection_for_a_protocol_error(broker, clients, version, uid):
    w = _watch(broker, clients, uid, version)
    c = clients.raw(broker, version)
    c.connect(f"c-{uid}", will={"topic": f"{uid}/will", "payload": b"broken", "qos": 1})
    c.send(r.publish_packet("a/+", b"bad", version=version))
    c.wait_closed()
    assert w.expect_message().payload == b"broken"


@pytest.mark.parametrize("reason,sent", [
    pytest.param(0x04, True, id="sent_on_0x04_disconnect_with_will"),
    pytest.param(0x00, False, id="not_sent_on_0x00_normal_disconnect"),
])
def test_v5_disconnect_reason_decides_whether_the_will_is_sent(broker, clients, uid, reason, sent):
    w = _watch(broker, clients, uid, 5)
    c = _with_will(broker, clients, uid, 5, b"as asked")
    c.connect()
    c.disconnect(reason=reason)
    if sent:
        assert w.expect_message().payload == b"as asked"
    else:
        w.expect_no_message(1.0)


def test_v5_will_delay_interval_delays_the_will(broker, clients, uid):
    w = _watch(broker, clients, uid, 5)
    c = _with_will(broker, clients, uid, 5, b"late", properties=props("WILLMESSAGE", WillDelayInterval=2))
    c.connect(properties=props("CONNECT", SessionExpiryInterval=60))
    dropped = time.monotonic()
    c.drop()
    w.expect_no_message(1.2)
    msg = w.expect_message(timeout=4)
    elapsed = time.monotonic() - dropped
    assert msg.payload == b"late"
    assert 1.5 <= elapsed <= 4.5, f"will arrived {elapsed:.2f}s after the drop; delay was 2 s"


def test_v5_reconnect_within_will_delay_cancels_the_will(broker, clients, uid):
    w = _watch(broker, clients, uid, 5)
    c = _with_will(broker, clients, uid, 5, b"cancelled", properties=props("WILLMESSAGE", WillDelayInterval=2))
    c.connect(properties=props("CONNECT", SessionExpiryInterval=60))
    c.drop()
    c2 = clients(broker, f"c-{uid}", 5)
    assert c2.connect(clean_start=False, properties=props("CONNECT", SessionExpiryInterval=60)).session_present
    w.expect_no_message(3.0)


def test_v5_will_is_sent_when_session_expires_before_the_will_delay(broker, clients, uid):
    w = _watch(broker, clients, uid, 5)
    c = _with_will(broker, clients, uid, 5, b"session over", properties=props("WILLMESSAGE", WillDelayInterval=60))
    c.connect(properties=props("CONNECT", SessionExpiryInterval=1))
    c.drop()
    msg = w.expect_message(timeout=4)  # at session end (1 s), not after 60 s [MQTT-3.1.2-8]
    assert msg.payload == b"session over"


def test_v5_will_properties_are_forwarded(broker, clients, uid):
    w = _watch(broker, clients, uid, 5)
    c = clients(broker, f"c-{uid}", 5)
    wp = props("WILLMESSAGE", ContentType="text/plain", PayloadFormatIndicator=1, ResponseTopic=f"{uid}/resp",
               CorrelationData=b"\x01\x02", UserProperty=[("k", "v1"), ("k", "v2")])
    c.will_set(f"{uid}/will", b"props", qos=1, properties=wp)
    c.connect()
    c.drop()
    m = w.expect_message()
    p = m.properties
    assert prop(p, "ContentType") == "text/plain"
    assert prop(p, "PayloadFormatIndicator") == 1
    assert prop(p, "ResponseTopic") == f"{uid}/resp"
    assert prop(p, "CorrelationData") == b"\x01\x02"
    assert prop(p, "UserProperty") == [("k", "v1"), ("k", "v2")]
    assert prop(p, "WillDelayInterval") is None
