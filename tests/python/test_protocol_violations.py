"""Malformed and forbidden packets: the broker closes the connection (v5: with the DISCONNECT reason
code the spec names, where it sends one) and keeps serving everyone else."""

import struct

import pytest

import rawmqtt as r

pytestmark = pytest.mark.timeout(30)


def _closed_with(c, allowed_v5_codes):
    """Waits for the close; a v5 DISCONNECT sent before it must carry one of the allowed codes."""
    got = c.wait_closed()
    for p in got:
        if p.type == r.DISCONNECT and c.version == 5:
            assert p.rc in allowed_v5_codes, f"DISCONNECT reason 0x{p.rc:02X}, expected one of {allowed_v5_codes}"
    return got


def _broker_still_serves(broker, clients, uid):
    c = clients.raw(broker, 4)
    c.connect(f"alive-{uid}")
    c.subscribe(f"{uid}/alive", qos=1)
    c.publish(f"{uid}/alive", b"ok", qos=1)
    assert c.expect(r.PUBLISH).payload == b"ok"


@pytest.mark.parametrize("first", ["subscribe", "publish", "pingreq"])
def test_first_packet_other_than_connect_closes_connection_without_connack(broker, clients, uid, first):
    c = clients.raw(broker, 4)
    c.send({
        "subscribe": r.subscribe_packet(1, [(f"{uid}/t", 0)], version=4),
        "publish": r.publish_packet(f"{uid}/t", b"x", version=4),
        "pingreq": r.PINGREQ_PACKET,
    }[first])
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK for p in got), got
    _broker_still_serves(broker, clients, uid)


def test_malformed_remaining_length_closes_connection(broker, clients, uid):
    c = clients.raw(broker, 4)
    c.send(bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]))  # five-byte remaining length
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got)
    _broker_still_serves(broker, clients, uid)


def test_connect_with_reserved_flag_set_closes_connection(broker, clients, version, uid):
    c = clients.raw(broker, version)
    pkt = bytearray(r.connect_packet(f"res-{uid}", version))
    pkt[9] |= 0x01  # connect flags byte: reserved bit [MQTT-3.1.2-3]
    c.send(bytes(pkt))
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), got


def test_truncated_connect_closes_connection(broker, clients, uid):
    c = clients.raw(broker, 4)
    body = r.utf8(b"MQTT") + bytes([4, 0x02]) + b"\x00\x3c" + struct.pack("!H", 50) + b"short"
    c.send(r.packet(r.CONNECT, 0, body))
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), got


def test_second_connect_on_a_connection_is_a_protocol_error(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"twice-{uid}")
    c.send(r.connect_packet(f"twice-{uid}", version))
    _closed_with(c, {0x82})


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "#", "+"])
def test_wildcard_in_publish_topic_closes_connection_and_is_not_delivered(broker, clients, version, uid, topic):
    watcher = clients.raw(broker, 4)
    watcher.connect(f"w-{uid}")
    watcher.subscribe("#", qos=0)
    c = clients.raw(broker, version)
    c.connect(f"wild-{uid}")
    c.send(r.publish_packet(topic, b"bad", qos=1, pid=1, version=version))
    got = _closed_with(c, {0x90, 0x82, 0x81})
    assert not any(p.type == r.PUBACK and p.rc < 0x80 for p in got), got
    watcher.expect_nothing(0.3)


@pytest.mark.parametrize("topic", [b"a/\xff\xfe", b"a/\xc0\xaf", b"a/\xed\xa0\x80", b"a\x00b"],
                         ids=["invalid-bytes", "overlong", "surrogate", "nul"])
def test_invalid_utf8_or_nul_in_publish_topic_closes_connection(broker, clients, version, uid, topic):
    c = clients.raw(broker, version)
    c.connect(f"utf-{uid}")
    c.send(r.publish_packet(topic, b"bad", qos=1, pid=1, version=version))
    got = _closed_with(c, {0x81, 0x90, 0x82})
    assert not any(p.type == r.PUBACK for p in got), got
    _broker_still_serves(broker, clients, uid)


def test_invalid_utf8_in_client_id_refuses_connection(broker, clients, version):
    c = clients.raw(broker, version)
    c.send(r.connect_packet(b"bad\xff", version))
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), got


def test_publish_with_qos_3_closes_connection(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"q3-{uid}")
    c.send(r.packet(r.PUBLISH, 0x06, r.utf8(f"{uid}/t") + b"\x00\x01" + (b"\x00" if version == 5 else b"") + b"x"))
    got = _closed_with(c, {0x81, 0x82})
    assert not any(p.type in (r.PUBACK, r.PUBREC) for p in got)


def test_subscribe_with_wrong_fixed_header_flags_closes_connection(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"sf-{uid}")
    pkt = bytearray(r.subscribe_packet(1, [(f"{uid}/t", 0)], version=version))
    pkt[0] = (r.SUBSCRIBE << 4)  # flags must be 0b0010 [MQTT-3.8.1-1]
    c.send(bytes(pkt))
    got = _closed_with(c, {0x81, 0x82})
    assert not any(p.type == r.SUBACK for p in got), got


def test_subscribe_without_any_filter_closes_connection(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"se-{uid}")
    c.send(r.subscribe_packet(1, [], version=version))
    got = _closed_with(c, {0x81, 0x82})
    assert not any(p.type == r.SUBACK for p in got), got


@pytest.mark.parametrize("filt", ["a/#/b", "a/b#", "a+/b", "#/"])
def test_malformed_topic_filter_is_refused(broker, clients, version, uid, filt):
    c = clients.raw(broker, version)
    c.connect(f"bf-{uid}")
    c.send(r.subscribe_packet(1, [(filt, 0)], version=version))
    try:
        p = c.recv(3)
    except r.ConnectionClosed:
        return  # closing the connection is allowed
    if p.type == r.DISCONNECT:
        assert version == 5 and p.rc in (0x81, 0x82, 0x8F), p
        return
    assert p.type == r.SUBACK and p.codes and p.codes[0] >= 0x80, f"malformed filter {filt!r} accepted: {p!r}"


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_packet_larger_than_max_packet_size_closes_connection(broker_factory, clients, uid, version):
    b = broker_factory(limits={"max_packet_size": 1024})
    sub = clients.raw(b, 4)
    sub.connect(f"s-{uid}")
    sub.subscribe(f"{uid}/t", qos=0)
    c = clients.raw(b, version)
    ack = c.connect(f"big-{uid}")
    if version == 5:
        assert ack.props.get("MaximumPacketSize") == 1024, f"CONNACK must announce the limit: {ack!r}"
    c.publish(f"{uid}/t", b"y" * 900, qos=0)  # under the limit: fine
    assert sub.expect(r.PUBLISH).payload == b"y" * 900
    c.send(r.publish_packet(f"{uid}/t", b"x" * 2000, qos=0, version=version))
    got = c.wait_closed()
    if version == 5:
        disc = [p for p in got if p.type == r.DISCONNECT]
        assert disc and disc[0].rc == 0x95, f"v5: expected DISCONNECT 0x95 Packet too large, got {got!r}"
    sub.expect_nothing(0.3)


@pytest.mark.robustmq_only
def test_huge_declared_remaining_length_is_refused_before_the_body_arrives(broker_factory, clients, uid):
    """The size check is on the fixed header: the broker must not wait for (or allocate) 200 MB."""
    b = broker_factory(limits={"max_packet_size": 1024})
    c = clients.raw(b, 5)
    c.connect(f"huge-{uid}")
    c.send(bytes([0x30]) + r.varint(200_000_000) + b"\x00\x01t")
    got = c.wait_closed(timeout=3)
    disc = [p for p in got if p.type == r.DISCONNECT]
    assert disc and disc[0].rc == 0x95, got


@pytest.mark.mosquitto_deviation("2.0.11 answers PUBREC 0x97 instead of DISCONNECT 0x93 [MQTT-3.3.4-9]")
def test_v5_client_exceeding_the_brokers_receive_maximum_is_disconnected_with_0x93(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect(f"rm-{uid}")
    rmax = ack.props.get("ReceiveMaximum", 65535)
    if rmax > 2000:
        pytest.skip(f"broker announces Receive Maximum {rmax}; too many to exhaust quickly")
    # QoS 2 publishes without PUBREL stay unacknowledged and use up the quota.
    burst = b"".join(r.publish_packet(f"{uid}/t", b"x", qos=2, pid=i, version=5) for i in range(1, rmax + 2))
    c.send(burst)
    got = c.wait_closed()
    disc = [p for p in got if p.type == r.DISCONNECT]
    assert disc and disc[-1].rc == 0x93, f"expected DISCONNECT 0x93 Receive Maximum exceeded, got {got[-3:]!r}"
    assert sum(1 for p in got if p.type == r.PUBREC) == rmax


@pytest.mark.mosquitto_deviation("2.0.11 does not treat a topic alias of 0 as a protocol error")
def test_v5_topic_alias_zero_is_a_protocol_error(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"ta0-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"x", qos=0, props={"TopicAlias": 0}))
    _closed_with(c, {0x94})


def test_v5_topic_alias_above_the_brokers_maximum_is_disconnected_with_0x94(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect(f"tam-{uid}")
    tmax = ack.props.get("TopicAliasMaximum", 0)
    c.send(r.publish_packet(f"{uid}/t", b"x", qos=0, props={"TopicAlias": tmax + 1}))
    _closed_with(c, {0x94})


def test_v5_unknown_topic_alias_with_empty_topic_is_a_protocol_error(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect(f"tau-{uid}")
    assert ack.props.get("TopicAliasMaximum", 0) >= 1
    c.send(r.publish_packet("", b"x", qos=0, props={"TopicAlias": 1}))
    _closed_with(c, {0x82})


def test_v311_client_sending_v5_properties_style_packet_is_not_misread(broker, clients, uid):
    """A 3.1.1 PUBLISH has no properties: the byte after the topic is payload."""
    sub = clients.raw(broker, 4)
    sub.connect(f"s-{uid}")
    sub.subscribe(f"{uid}/t", qos=0)
    c = clients.raw(broker, 4)
    c.connect(f"p-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"\x00\x01abc", qos=0, version=4))
    assert sub.expect(r.PUBLISH).payload == b"\x00\x01abc"


@pytest.mark.parametrize("bad", ["receive-maximum-0", "maximum-packet-size-0", "duplicate-session-expiry",
                                 "topic-alias-maximum-twice"])
def test_v5_connect_with_invalid_properties_is_refused(broker, clients, uid, bad):
    props = {
        "receive-maximum-0": [("ReceiveMaximum", 0)],
        "maximum-packet-size-0": [("MaximumPacketSize", 0)],
        "duplicate-session-expiry": [("SessionExpiryInterval", 5), ("SessionExpiryInterval", 6)],
        "topic-alias-maximum-twice": [("TopicAliasMaximum", 5), ("TopicAliasMaximum", 5)],
    }[bad]
    c = clients.raw(broker, 5)
    c.send(r.connect_packet(f"bp-{uid}", 5, props=props))
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), got
    for p in got:
        if p.type == r.CONNACK:
            assert p.rc in (0x81, 0x82), p


def test_v5_publish_with_duplicate_property_is_a_protocol_error(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"dp-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"x", qos=1, pid=1,
                            props=[("MessageExpiryInterval", 5), ("MessageExpiryInterval", 6)]))
    got = _closed_with(c, {0x81, 0x82})
    assert not any(p.type == r.PUBACK and p.rc < 0x80 for p in got), got


def _connect_body(version, flags, client_id="x", extra=b""):
    name = b"MQTT"
    body = r.utf8(name) + bytes([version, flags]) + b"\x00\x3c"
    if version == 5:
        body += r.encode_properties(None)
    return body + r.utf8(client_id) + extra


@pytest.mark.parametrize("bad", ["will-qos-without-will-flag", "will-retain-without-will-flag", "will-qos-3"])
def test_connect_with_inconsistent_will_flags_is_refused(broker, clients, version, uid, bad):
    flags = {"will-qos-without-will-flag": 0x02 | 0x08, "will-retain-without-will-flag": 0x02 | 0x20,
             "will-qos-3": 0x02 | 0x04 | 0x18}[bad]
    extra = b""
    if flags & 0x04:
        extra = (r.encode_properties(None) if version == 5 else b"") + r.utf8(f"{uid}/w") + r.utf8(b"x")
    c = clients.raw(broker, version)
    c.send(r.packet(r.CONNECT, 0, _connect_body(version, flags, f"wf-{uid}", extra)))
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), got


def test_v311_password_without_username_is_refused(broker, clients, uid):
    c = clients.raw(broker, 4)
    c.send(r.packet(r.CONNECT, 0, _connect_body(4, 0x02 | 0x40, f"pw-{uid}", r.utf8(b"secret"))))
    got = c.wait_closed()
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), got  # [MQTT-3.1.2-22]


@pytest.mark.parametrize("bad", ["empty-topic", "pubrel-wrong-flags", "unsubscribe-wrong-flags",
                                 "subscribe-qos-3", "subscribe-reserved-option-bits"])
def test_malformed_packets_after_connect_close_the_connection(broker, clients, version, uid, bad):
    c = clients.raw(broker, version)
    c.connect(f"mf-{uid}")
    if bad == "empty-topic":
        pkt = r.publish_packet("", b"x", qos=0, version=version)
    elif bad == "pubrel-wrong-flags":
        pkt = r.packet(r.PUBREL, 0, b"\x00\x01")
    elif bad == "unsubscribe-wrong-flags":
        pkt = bytearray(r.unsubscribe_packet(1, [f"{uid}/t"], version=version))
        pkt[0] = r.UNSUBSCRIBE << 4
        pkt = bytes(pkt)
    elif bad == "subscribe-qos-3":
        pkt = r.subscribe_packet(1, [(f"{uid}/t", 3)], version=version)
    else:
        pkt = r.subscribe_packet(1, [(f"{uid}/t", 0xC1)], version=version)
    c.send(pkt)
    got = _closed_with(c, {0x81, 0x82, 0x90})
    assert not any(p.type in (r.SUBACK, r.UNSUBACK, r.PUBCOMP) for p in got), got
