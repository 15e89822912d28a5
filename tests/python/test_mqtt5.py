"""MQTT 5 features: reason codes and strings, user properties, message expiry, topic aliases both ways,
receive maximum, maximum packet size, server keep alive, subscription options, payload format and
content type, request/response, DISCONNECT with reasons."""

import time

import pytest

import rawmqtt as r
from mqttclient import prop, props

pytestmark = pytest.mark.timeout(30)


def _pair(broker, clients, uid, sub_filter=None, qos=1, **sub_kw):
    sub = clients.subscriber(broker, f"s-{uid}", 5, sub_filter or f"{uid}/t", qos=qos, **sub_kw)
    pub = clients.connected(broker, f"p-{uid}", 5)
    return sub, pub


# ------------------------------------------------------------------------------ reason codes

def test_v5_connack_success_has_reason_code_0(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect(f"c-{uid}")
    assert ack.rc == 0


def test_v5_puback_for_topic_without_subscribers_is_success_or_no_matching_subscribers(broker, clients, uid):
    c = clients.connected(broker, f"c-{uid}", 5)
    assert c.publish(f"{uid}/nobody", b"x", qos=1) in (0x00, 0x10)
    assert c.publish(f"{uid}/nobody", b"x", qos=2) in (0x00, 0x10)


@pytest.mark.mosquitto_deviation("2.0.11 accepts No Local on a shared subscription")
def test_v5_no_local_on_a_shared_subscription_is_a_protocol_error(broker, clients, uid):
    """No Local on a shared subscription is a protocol error [MQTT-3.8.3-4]."""
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}")
    c.send(r.subscribe_packet(1, [(f"$share/g/{uid}/t", r.sub_options(1, no_local=True))]))
    got = c.wait_closed()
    for p in got:
        assert p.type == r.DISCONNECT and p.rc == 0x82, got


def test_v5_no_reason_string_when_problem_information_is_not_requested(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}", props={"RequestProblemInformation": 0})
    ack = c.subscribe([(f"{uid}/ok", 1), (f"{uid}/ok2", 2)])
    assert "ReasonString" not in ack.props and "UserProperty" not in ack.props, ack
    pub = c.publish(f"{uid}/nobody", b"x", qos=1)
    assert "ReasonString" not in pub.props, pub  # [MQTT-3.1.2-29]


@pytest.mark.robustmq_only
def test_v5_server_disconnect_carries_a_reason_string(broker_factory, clients, uid):
    b = broker_factory(limits={"max_packet_size": 512})
    c = clients.raw(b, 5)
    c.connect(f"c-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"x" * 1000))
    got = c.wait_closed()
    disc = [p for p in got if p.type == r.DISCONNECT]
    assert disc and disc[0].rc == 0x95 and disc[0].props.get("ReasonString"), got


# --------------------------------------------------------------------- properties forwarded

def test_v5_user_properties_are_passed_through_in_order_with_duplicates(broker, clients, uid):
    sub, pub = _pair(broker, clients, uid)
    ups = [("b", "2"), ("a", "1"), ("b", "3"), ("ünï", "cödé"), ("empty", "")]
    pub.publish(f"{uid}/t", b"x", qos=1, properties=props("PUBLISH", UserProperty=ups))
    assert prop(sub.expect_message().properties, "UserProperty") == ups


def test_v5_payload_format_indicator_and_content_type_are_forwarded(broker, clients, uid):
    sub, pub = _pair(broker, clients, uid)
    pub.publish(f"{uid}/t", "héllo".encode(), qos=1,
                properties=props("PUBLISH", PayloadFormatIndicator=1, ContentType="text/plain; charset=utf-8"))
    pub.publish(f"{uid}/t", b"\x00\xff", qos=1, properties=props("PUBLISH", PayloadFormatIndicator=0))
    m1, m2 = sub.expect_messages(2)
    assert prop(m1.properties, "PayloadFormatIndicator") == 1
    assert prop(m1.properties, "ContentType") == "text/plain; charset=utf-8"
    assert m2.payload == b"\x00\xff" and prop(m2.properties, "PayloadFormatIndicator", 0) == 0


def test_v5_response_topic_and_correlation_data_make_request_response_work(broker, clients, uid):
    responder = clients.subscriber(broker, f"resp-{uid}", 5, f"{uid}/req", qos=1)
    requester = clients.subscriber(broker, f"req-{uid}", 5, f"{uid}/reply", qos=1)
    requester.publish(f"{uid}/req", b"2+2", qos=1,
                      properties=props("PUBLISH", ResponseTopic=f"{uid}/reply", CorrelationData=b"\x00req-7"))
    req = responder.expect_message()
    rt = prop(req.properties, "ResponseTopic")
    cd = prop(req.properties, "CorrelationData")
    assert (rt, cd) == (f"{uid}/reply", b"\x00req-7")
    responder.publish(rt, b"4", qos=1, properties=props("PUBLISH", CorrelationData=cd))
    resp = requester.expect_message()
    assert (resp.payload, prop(resp.properties, "CorrelationData")) == (b"4", b"\x00req-7")


def test_v5_response_information_is_not_sent_unless_requested(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect(f"c-{uid}")
    assert "ResponseInformation" not in ack.props  # [MQTT-3.1.2-28]
    c2 = clients.raw(broker, 5)
    ack = c2.connect(f"c2-{uid}", props={"RequestResponseInformation": 0})
    assert "ResponseInformation" not in ack.props


@pytest.mark.robustmq_only
def test_v5_request_response_information_gets_response_information_in_connack(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect(f"c-{uid}", props={"RequestResponseInformation": 1})
    info = ack.props.get("ResponseInformation")
    assert info, f"CONNACK without Response Information: {ack!r}"
    # The response information is a topic prefix this client can use.
    c.subscribe(f"{info.rstrip('/')}/x", qos=1)
    c.publish(f"{info.rstrip('/')}/x", b"back", qos=1)
    assert c.expect(r.PUBLISH).payload == b"back"


# -------------------------------------------------------------------------- message expiry

def test_v5_message_expiry_interval_is_forwarded_no_larger_than_sent(broker, clients, uid):
    sub, pub = _pair(broker, clients, uid)
    pub.publish(f"{uid}/t", b"x", qos=1, properties=props("PUBLISH", MessageExpiryInterval=100))
    mei = prop(sub.expect_message().properties, "MessageExpiryInterval")
    assert mei is not None and 98 <= mei <= 100


def _offline_subscriber(broker, clients, uid, topic):
    s = clients(broker, f"s-{uid}", 5)
    s.connect(clean_start=True, properties=props("CONNECT", SessionExpiryInterval=300))
    s.subscribe(topic, qos=1)
    s.disconnect()


def _reconnect(broker, clients, uid):
    s = clients(broker, f"s-{uid}", 5)
    assert s.connect(clean_start=False, properties=props("CONNECT", SessionExpiryInterval=300)).session_present
    return s


def test_v5_expired_messages_are_not_delivered_to_an_offline_session(broker, clients, uid):
    _offline_subscriber(broker, clients, uid, f"{uid}/t")
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/t", b"expires", qos=1, properties=props("PUBLISH", MessageExpiryInterval=1))
    pub.publish(f"{uid}/t", b"stays", qos=1)
    time.sleep(2.2)
    s = _reconnect(broker, clients, uid)
    assert s.expect_message().payload == b"stays"
    s.expect_no_message(0.5)


def test_v5_message_expiry_interval_is_decreased_by_the_time_spent_waiting(broker, clients, uid):
    _offline_subscriber(broker, clients, uid, f"{uid}/t")
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/t", b"aging", qos=1, properties=props("PUBLISH", MessageExpiryInterval=30))
    time.sleep(2.2)
    s = _reconnect(broker, clients, uid)
    m = s.expect_message()
    mei = prop(m.properties, "MessageExpiryInterval")
    assert m.payload == b"aging" and mei is not None and 20 <= mei <= 28, f"remaining interval {mei}"


def test_v5_expired_retained_message_is_not_delivered(broker, clients, uid):
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/r", b"short", qos=1, retain=True, properties=props("PUBLISH", MessageExpiryInterval=1))
    pub.publish(f"{uid}/r2", b"long", qos=1, retain=True, properties=props("PUBLISH", MessageExpiryInterval=60))
    time.sleep(2.2)
    sub = clients.subscriber(broker, f"s-{uid}", 5, f"{uid}/+", qos=1)
    m = sub.expect_message()
    assert m.payload == b"long"
    assert 50 <= prop(m.properties, "MessageExpiryInterval") <= 58
    sub.expect_no_message(0.5)


# ---------------------------------------------------------------------------- topic aliases

def test_v5_client_topic_alias_is_resolved_by_the_broker(broker, clients, uid):
    sub = clients.subscriber(broker, f"s-{uid}", 5, f"{uid}/#", qos=1)
    c = clients.raw(broker, 5)
    ack = c.connect(f"c-{uid}")
    assert ack.props.get("TopicAliasMaximum", 0) >= 2
    c.publish(f"{uid}/one", b"1", qos=1, props={"TopicAlias": 1})
    c.publish("", b"2", qos=1, props={"TopicAlias": 1})
    c.publish(f"{uid}/two", b"3", qos=1, props={"TopicAlias": 1})  # re-map alias 1
    c.publish("", b"4", qos=1, props={"TopicAlias": 1})
    got = [(m.topic, m.payload) for m in sub.expect_messages(4)]
    assert got == [(f"{uid}/one", b"1"), (f"{uid}/one", b"2"), (f"{uid}/two", b"3"), (f"{uid}/two", b"4")]
    for m in got:
        pass
    # Aliases are per connection: the subscriber never sees one it did not allow.


def test_v5_topic_aliases_are_per_connection(broker, clients, uid):
    a = clients.raw(broker, 5)
    a.connect(f"a-{uid}")
    a.publish(f"{uid}/a", b"x", qos=1, props={"TopicAlias": 1})
    b = clients.raw(broker, 5)
    b.connect(f"b-{uid}")
    b.send(r.publish_packet("", b"x", qos=1, pid=1, props={"TopicAlias": 1}))
    got = b.wait_closed()
    assert all(p.type == r.DISCONNECT and p.rc == 0x82 for p in got), got


def _alias_subscriber(broker, clients, uid, maximum):
    s = clients.raw(broker, 5)
    p = {"TopicAliasMaximum": maximum} if maximum is not None else None
    s.connect(f"s-{uid}", props=p)
    s.subscribe(f"{uid}/#", qos=1)
    return s


def _resolve(s, n):
    aliases, out = {}, []
    for _ in range(n):
        p = s.expect(r.PUBLISH)
        s.ack(p)
        alias = p.props.get("TopicAlias")
        if alias is not None:
            if p.topic:
                aliases[alias] = p.topic
            else:
                assert alias in aliases, f"alias {alias} used before it was set: {p!r}"
        topic = p.topic or aliases[alias]
        out.append((topic, p.payload, alias, p.topic == ""))
    return out


def test_v5_broker_never_uses_topic_aliases_when_client_allows_none(broker, clients, uid):
    s = _alias_subscriber(broker, clients, uid, None)
    pub = clients.connected(broker, f"p-{uid}", 5)
    for i in range(5):
        pub.publish(f"{uid}/same", str(i).encode(), qos=1)
    for topic, payload, alias, _ in _resolve(s, 5):
        assert alias is None and topic == f"{uid}/same"


def test_v5_broker_topic_aliases_stay_within_the_clients_maximum_and_resolve_correctly(broker, clients, uid):
    s = _alias_subscriber(broker, clients, uid, 2)
    pub = clients.connected(broker, f"p-{uid}", 5)
    topics = [f"{uid}/{n}" for n in ("a", "b", "c", "a", "b", "c", "a", "a")]
    for i, t in enumerate(topics):
        pub.publish(t, str(i).encode(), qos=1)
    got = _resolve(s, len(topics))
    assert [(t, p) for t, p, _, _ in got] == [(t, str(i).encode()) for i, t in enumerate(topics)]
    assert all(a is None or 1 <= a <= 2 for _, _, a, _ in got), got


@pytest.mark.mosquitto_deviation("2.0.11 never sends topic aliases to clients")
def test_v5_broker_sends_topic_aliases_when_the_client_allows_them(broker, clients, uid):
    s = _alias_subscriber(broker, clients, uid, 4)
    pub = clients.connected(broker, f"p-{uid}", 5)
    for i in range(4):
        pub.publish(f"{uid}/long/topic/name", str(i).encode(), qos=1)
    got = _resolve(s, 4)
    assert any(empty for _, _, _, empty in got), f"no PUBLISH used an alias instead of the topic: {got}"


# ------------------------------------------------------------------------ flow control

def _receive_maximum_pair(broker, clients, uid, maximum, qos):
    """A raw subscriber to {uid}/t (at `qos`) that announced Receive Maximum `maximum`, and a
    connected publisher."""
    s = clients.raw(broker, 5)
    s.connect(f"s-{uid}", props={"ReceiveMaximum": maximum})
    s.subscribe(f"{uid}/t", qos=qos)
    return s, clients.connected(broker, f"p-{uid}", 5)


@pytest.mark.mosquitto_deviation("2.0.11 sends a 3rd unacknowledged message to a client with Receive Maximum 2 after the first PUBACK")
def test_v5_broker_respects_the_clients_receive_maximum(broker, clients, uid):
    s, pub = _receive_maximum_pair(broker, clients, uid, 2, qos=1)
    for i in range(6):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1)
    first = [s.expect(r.PUBLISH) for _ in range(2)]
    s.expect_nothing(0.6)  # a third would exceed Receive Maximum 2
    s.ack(first[0])
    third = s.expect(r.PUBLISH)
    s.expect_nothing(0.4)
    for p in (first[1], third):
        s.ack(p)
    rest = [s.expect(r.PUBLISH) for _ in range(2)]
    s.expect_nothing(0.4)
    for p in rest:
        s.ack(p)
    last = s.expect(r.PUBLISH)
    s.ack(last)
    payloads = [p.payload for p in first + [third] + rest + [last]]
    assert payloads == [str(i).encode() for i in range(6)]


def test_v5_receive_maximum_counts_qos2_until_pubcomp(broker, clients, uid):
    s, pub = _receive_maximum_pair(broker, clients, uid, 1, qos=2)
    pub.publish(f"{uid}/t", b"0", qos=2)
    pub.publish(f"{uid}/t", b"1", qos=2)
    p0 = s.expect(r.PUBLISH)
    s.send(r.ack_packet(r.PUBREC, p0.pid))
    assert s.expect(r.PUBREL).pid == p0.pid
    s.expect_nothing(0.5)  # still in flight until PUBCOMP
    s.send(r.ack_packet(r.PUBCOMP, p0.pid))
    assert s.expect(r.PUBLISH).payload == b"1"


def test_v5_qos0_messages_are_not_limited_by_receive_maximum(broker, clients, uid):
    s, pub = _receive_maximum_pair(broker, clients, uid, 1, qos=0)
    for i in range(5):
        pub.publish(f"{uid}/t", str(i).encode(), qos=0)
    assert [s.expect(r.PUBLISH).payload for _ in range(5)] == [str(i).encode() for i in range(5)]


# ---------------------------------------------------------------------- maximum packet size

def test_v5_message_larger_than_the_clients_maximum_packet_size_is_dropped_for_that_client(broker, clients, uid):
    small = clients.raw(broker, 5)
    small.connect(f"small-{uid}", props={"MaximumPacketSize": 200})
    small.subscribe(f"{uid}/t", qos=1)
    big = clients.subscriber(broker, f"big-{uid}", 5, f"{uid}/t", qos=1)
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/t", b"a" * 20, qos=1)
    pub.publish(f"{uid}/t", b"B" * 500, qos=1)
    pub.publish(f"{uid}/t", b"c" * 20, qos=1)
    got = []
    for _ in range(2):
        p = small.expect(r.PUBLISH)
        small.ack(p)
        got.append(p.payload)
    assert got == [b"a" * 20, b"c" * 20]
    small.expect_nothing(0.4)
    assert [m.payload for m in big.expect_messages(3)] == [b"a" * 20, b"B" * 500, b"c" * 20]


def test_v5_connack_announces_maximum_packet_size_when_limited(broker_factory, clients, uid):
    b = broker_factory(limits={"max_packet_size": 4096})
    c = clients.raw(b, 5)
    assert c.connect(f"c-{uid}").props.get("MaximumPacketSize") == 4096


# --------------------------------------------------------------------------- keep alive

def test_v5_server_keep_alive_is_sent_when_client_asks_for_more_than_the_maximum(broker_factory, clients, uid):
    b = broker_factory(limits={"max_keep_alive_secs": 10})
    c = clients.raw(b, 5)
    assert c.connect(f"hi-{uid}", keepalive=60).props.get("ServerKeepAlive") == 10
    c2 = clients.raw(b, 5)
    ska = c2.connect(f"lo-{uid}", keepalive=5).props.get("ServerKeepAlive")
    assert ska in (None, 5), f"a keep alive under the maximum must be kept, got Server Keep Alive {ska}"


@pytest.mark.mosquitto_deviation("2.0.11 rejects max_keepalive below 10, too slow to test")
def test_v5_server_keep_alive_is_enforced(broker_factory, clients, uid):
    b = broker_factory(limits={"max_keep_alive_secs": 2})
    c = clients.raw(b, 5)
    assert c.connect(f"c-{uid}", keepalive=60).props.get("ServerKeepAlive") == 2
    start = time.monotonic()
    c.wait_closed(timeout=10)
    elapsed = time.monotonic() - start
    assert 2.0 <= elapsed <= 4.5, f"closed after {elapsed:.1f}s with a 2 s server keep alive (expected ~3 s)"


@pytest.mark.robustmq_only
def test_v5_default_server_keep_alive_limit_is_3600(broker, clients, uid):
    c = clients.raw(broker, 5)
    assert c.connect(f"c-{uid}", keepalive=7200).props.get("ServerKeepAlive") == 3600
    c2 = clients.raw(broker, 5)
    assert c2.connect(f"c2-{uid}", keepalive=600).props.get("ServerKeepAlive") in (None, 600)


# -------------------------------------------------------------------- subscription options

def test_v5_no_local_does_not_echo_the_clients_own_messages(broker, clients, uid):
    c = clients.subscriber(broker, f"c-{uid}", 5, f"{uid}/t", qos=1, no_local=True)
    other = clients.connected(broker, f"o-{uid}", 5)
    c.publish(f"{uid}/t", b"mine", qos=1)
    other.publish(f"{uid}/t", b"theirs", qos=1)
    assert c.expect_message().payload == b"theirs"
    c.expect_no_message(0.3)


def test_v5_without_no_local_the_client_receives_its_own_messages(broker, clients, uid):
    c = clients.subscriber(broker, f"c-{uid}", 5, f"{uid}/t", qos=1)
    c.publish(f"{uid}/t", b"mine", qos=1)
    assert c.expect_message().payload == b"mine"


def test_v5_retain_as_published_keeps_the_retain_flag_on_live_messages(broker, clients, uid):
    rap = clients.subscriber(broker, f"rap-{uid}", 5, f"{uid}/t", qos=1, retain_as_published=True)
    plain = clients.subscriber(broker, f"plain-{uid}", 5, f"{uid}/t", qos=1)
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/t", b"r", qos=1, retain=True)
    pub.publish(f"{uid}/t", b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap.expect_messages(2)] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.expect_messages(2)] == [(b"r", False), (b"n", False)]


def _retained(broker, clients, uid):
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/r", b"retained", qos=1, retain=True)


def test_v5_retain_handling_0_sends_retained_messages_on_every_subscribe(broker, clients, uid):
    _retained(broker, clients, uid)
    c = clients.subscriber(broker, f"c-{uid}", 5, f"{uid}/r", qos=1, retain_handling=0)
    assert c.expect_message().retain
    c.subscribe(f"{uid}/r", qos=1, retain_handling=0)
    assert c.expect_message().retain


def test_v5_retain_handling_1_sends_retained_messages_only_for_a_new_subscription(broker, clients, uid):
    _retained(broker, clients, uid)
    c = clients.subscriber(broker, f"c-{uid}", 5, f"{uid}/r", qos=1, retain_handling=1)
    assert c.expect_message().payload == b"retained"
    c.subscribe(f"{uid}/r", qos=1, retain_handling=1)  # already exists
    c.expect_no_message(0.5)


def test_v5_retain_handling_2_never_sends_retained_messages(broker, clients, uid):
    _retained(broker, clients, uid)
    c = clients.subscriber(broker, f"c-{uid}", 5, f"{uid}/r", qos=1, retain_handling=2)
    c.expect_no_message(0.5)
    # ...but live messages still arrive.
    pub = clients.connected(broker, f"p2-{uid}", 5)
    pub.publish(f"{uid}/r", b"live", qos=1)
    assert c.expect_message().payload == b"live"


def test_v5_retained_message_sent_on_subscribe_always_has_retain_flag(broker, clients, uid):
    _retained(broker, clients, uid)
    c = clients.subscriber(broker, f"c-{uid}", 5, f"{uid}/r", qos=1, retain_as_published=False)
    assert c.expect_message().retain  # [MQTT-3.3.1-9]


# ------------------------------------------------------------------------------ DISCONNECT

def test_v5_client_disconnect_with_reason_string_and_user_properties_is_accepted(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}", will={"topic": f"{uid}/will", "payload": b"x"})
    w = clients.subscriber(broker, f"w-{uid}", 5, f"{uid}/will", qos=1)
    c.send(r.disconnect_packet(0x00, {"ReasonString": "bye", "UserProperty": [("why", "test")]}))
    assert c.wait_closed() == []
    w.expect_no_message(0.5)


@pytest.mark.robustmq_only
def test_v5_broker_sends_disconnect_0x8b_to_clients_when_shutting_down(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}")
    broker.proc.terminate()
    got = c.wait_closed(timeout=10)
    assert got and got[-1].type == r.DISCONNECT and got[-1].rc == 0x8B, got
    assert broker.proc.wait(10) == 0


def test_v5_disconnect_from_broker_is_seen_by_paho_with_its_reason(broker, clients, uid):
    old = clients.connected(broker, f"dup-{uid}", 5)
    new = clients.connected(broker, f"dup-{uid}", 5)
    d = old.expect_disconnect()
    if broker.kind == "robustmq":
        assert d.rc == 0x8E, d
