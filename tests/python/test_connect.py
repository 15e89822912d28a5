"""CONNECT: keep alive, client identifiers, MQTT 3.1, session take-over, clean session / clean start,
session expiry."""

import time

import pytest

import rawmqtt as r
from mqttclient import prop, props

pytestmark = pytest.mark.timeout(30)


def test_keep_alive_zero_is_accepted_and_connection_stays_usable(broker, clients, version, uid):
    c = clients(broker, f"ka0-{uid}", version)
    ack = c.connect(keepalive=0)
    assert ack.rc == 0
    if version == 5:
        # A server may impose its own keep alive on a v5 client, but only through Server Keep Alive.
        ska = prop(ack.properties, "ServerKeepAlive")
        assert ska is None or ska > 0
    c.subscribe(f"{uid}/t", qos=1)
    time.sleep(2.0)  # silence longer than any tiny keep alive the broker might wrongly assume
    assert c.is_connected()
    c.publish(f"{uid}/t", b"still here", qos=1)
    assert c.expect_message().payload == b"still here"


@pytest.mark.mosquitto_deviation("2.0.11 checks keep alives on a coarse timer: a 1 s keep alive closes after ~5.5 s")
def test_keep_alive_timeout_closes_connection_after_one_and_a_half_times_and_sends_will(broker, clients, version, uid):
    watcher = clients.subscriber(broker, f"w-{uid}", version, f"{uid}/will", qos=1)
    silent = clients.raw(broker, version)
    silent.connect(f"silent-{uid}", keepalive=1, will={"topic": f"{uid}/will", "payload": b"gone", "qos": 1})
    start = time.monotonic()
    silent.wait_closed(timeout=5)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s; keep alive 1 s means close at about 1.5 s"
    msg = watcher.expect_message(timeout=3)
    assert (msg.topic, msg.payload) == (f"{uid}/will", b"gone")


def test_pingreq_keeps_connection_alive_and_gets_pingresp(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"ping-{uid}", keepalive=1)
    for _ in range(4):  # 2.8 s in all: well past 1.5 x keep alive
        time.sleep(0.7)
        c.send(r.PINGREQ_PACKET)
        c.expect(r.PINGRESP, timeout=2)


def test_v5_empty_client_id_gets_assigned_client_identifier(broker, clients, uid):
    c = clients.raw(broker, 5)
    ack = c.connect("")
    assigned = ack.props.get("AssignedClientIdentifier")
    assert assigned, f"CONNACK without Assigned Client Identifier: {ack!r}"
    # The assigned id works as a normal session: a second empty-id client gets a different one.
    other = clients.raw(broker, 5)
    ack2 = other.connect("")
    assert ack2.props.get("AssignedClientIdentifier") not in (None, assigned)


def test_v5_empty_client_id_with_clean_start_false_is_accepted_with_assigned_id(broker, clients):
    c = clients.raw(broker, 5)
    ack = c.connect("", clean=False, props={"SessionExpiryInterval": 30})
    assert ack.props.get("AssignedClientIdentifier")
    assert not ack.session_present


def test_v311_empty_client_id_with_clean_session_is_accepted(broker, clients, uid):
    c = clients.raw(broker, 4)
    ack = c.connect("", clean=True)
    assert ack.rc == 0 and not ack.session_present
    c.subscribe(f"{uid}/t", qos=1)
    c.publish(f"{uid}/t", b"hi", qos=1)
    p = c.expect(r.PUBLISH)
    assert p.payload == b"hi"


def test_v311_empty_client_id_without_clean_session_is_refused_with_rc_2(broker, clients):
    c = clients.raw(broker, 4)
    ack = c.connect("", clean=False, expect_rc=None)
    assert ack.rc == 0x02, f"expected CONNACK 0x02 identifier rejected, got {ack!r}"
    c.wait_closed()


def test_mqtt_3_1_client_publishes_and_subscribes(broker, clients, uid):
    c = clients(broker, "", 3)  # paho generates an id for MQTT 3.1 (MQIsdp, level 3)
    c.connect()
    for qos in (0, 1, 2):
        assert c.subscribe(f"{uid}/q{qos}", qos=qos) == [qos]
        c.publish(f"{uid}/q{qos}", f"m{qos}".encode(), qos=qos)
        msg = c.expect_message()
        assert (msg.topic, msg.payload, msg.qos) == (f"{uid}/q{qos}", f"m{qos}".encode(), qos)


def test_mqtt_3_1_raw_connect_with_mqisdp_is_accepted(broker, clients, uid):
    c = clients.raw(broker, 3)
    ack = c.connect(f"v31-{uid}", clean=True)
    assert ack.rc == 0


def test_unsupported_protocol_level_is_refused(broker, clients, uid):
    c = clients.raw(broker, 4)
    body = r.utf8(b"MQTT") + bytes([7, 0x02]) + b"\x00\x3c" + r.utf8(f"lvl7-{uid}")
    c.send(r.packet(r.CONNECT, 0, body))
    got = c.wait_closed()
    # MQTT 3.1.1 [MQTT-3.1.2-2]: CONNACK 0x01 then close; a v5 server may answer 0x84 instead.
    assert got, "connection closed without a CONNACK"
    assert got[0].type == r.CONNACK and got[0].body[1] in (0x01, 0x84), got


def test_session_takeover_closes_the_old_connection(broker, clients, version, uid):
    old = clients.raw(broker, version)
    old.connect(f"dup-{uid}")
    new = clients.raw(broker, version)
    new.connect(f"dup-{uid}")
    old.wait_closed()
    # The new connection is fully usable.
    new.subscribe(f"{uid}/t", qos=1)
    new.publish(f"{uid}/t", b"x", qos=1)
    assert new.expect(r.PUBLISH).payload == b"x"


@pytest.mark.mosquitto_deviation("2.0.11 closes the old connection without DISCONNECT 0x8E")
def test_v5_session_takeover_sends_disconnect_0x8e_to_the_old_connection(broker, clients, uid):
    old = clients.raw(broker, 5)
    old.connect(f"dup-{uid}")
    new = clients.raw(broker, 5)
    new.connect(f"dup-{uid}")
    got = old.wait_closed()
    assert got and got[-1].type == r.DISCONNECT and got[-1].rc == 0x8E, \
        f"the old connection must get DISCONNECT 0x8E (Session taken over), got {got!r}"


def test_session_takeover_publishes_the_old_connections_will(broker, clients, version, uid):
    watcher = clients.subscriber(broker, f"w-{uid}", version, f"{uid}/will", qos=1)
    old = clients.raw(broker, version)
    old.connect(f"dup-{uid}", will={"topic": f"{uid}/will", "payload": b"old gone", "qos": 1})
    new = clients.raw(broker, version)
    new.connect(f"dup-{uid}")
    old.wait_closed()
    msg = watcher.expect_message()
    assert msg.payload == b"old gone"
    watcher.expect_no_message(0.3)


@pytest.mark.parametrize("clean,will_delay", [
    # Resumed within the 2 s will delay: the session lives on, no will (waited past the delay).
    pytest.param(False, 2, id="resuming_session_within_will_delay_sends_no_will"),
    # The old session ended (clean start), so the will is due now, not in 30 s [MQTT-3.1.2-8].
    pytest.param(True, 30, id="clean_start_ends_session_and_sends_will_despite_delay", marks=pytest.mark.mosquitto_deviation(
        "2.0.11 keeps waiting for the will delay although the session ended")),
])
def test_v5_takeover_sends_the_delayed_will_only_when_the_session_ends(broker, clients, uid, clean, will_delay):
    watcher = clients.subscriber(broker, f"w-{uid}", 5, f"{uid}/will", qos=1)
    old = clients.raw(broker, 5)
    old.connect(f"dup-{uid}", clean=False, props={"SessionExpiryInterval": 60},
                will={"topic": f"{uid}/will", "payload": b"ended", "qos": 1,
                      "props": {"WillDelayInterval": will_delay}})
    new = clients.raw(broker, 5)
    ack = new.connect(f"dup-{uid}", clean=clean, props=None if clean else {"SessionExpiryInterval": 60})
    assert ack.session_present is not clean
    old.wait_closed()
    if clean:
        assert watcher.expect_message(timeout=3).payload == b"ended"
    else:
        watcher.expect_no_message(3.0)


def _persistent(clients, broker, cid, version, expiry=300):
    c = clients(broker, cid, version, clean=False) if version != 5 else clients(broker, cid, 5)
    return c


def _connect_persistent(c, version, clean=False, expiry=300, **kw):
    if version == 5:
        p = props("CONNECT", SessionExpiryInterval=expiry) if expiry else None
        return c.connect(clean_start=clean, properties=p, **kw)
    return c.connect(**kw)


def test_first_connect_of_persistent_session_has_session_present_false(broker, clients, version, uid):
    c = _persistent(clients, broker, f"p-{uid}", version)
    assert not _connect_persistent(c, version).session_present


def test_persistent_session_keeps_subscriptions_and_queues_messages_while_offline(broker, clients, version, uid):
    sub = _persistent(clients, broker, f"p-{uid}", version)
    _connect_persistent(sub, version)
    sub.subscribe(f"{uid}/t", qos=1)
    sub.disconnect()
    pub = clients.connected(broker, f"pub-{uid}", version)
    for i in range(5):
        pub.publish(f"{uid}/t", f"m{i}".encode(), qos=1)
    sub2 = _persistent(clients, broker, f"p-{uid}", version)
    ack = _connect_persistent(sub2, version)
    assert ack.session_present
    got = [m.payload for m in sub2.expect_messages(5)]
    assert got == [f"m{i}".encode() for i in range(5)]
    # Still subscribed.
    pub.publish(f"{uid}/t", b"live", qos=1)
    assert sub2.expect_message().payload == b"live"


def test_clean_session_discards_the_previous_session(broker, clients, version, uid):
    sub = _persistent(clients, broker, f"p-{uid}", version)
    _connect_persistent(sub, version)
    sub.subscribe(f"{uid}/t", qos=1)
    sub.disconnect()
    again = clients(broker, f"p-{uid}", version)
    ack = again.connect(clean_start=True) if version == 5 else again.connect()
    assert not ack.session_present
    pub = clients.connected(broker, f"pub-{uid}", version)
    pub.publish(f"{uid}/t", b"nobody", qos=1)
    again.expect_no_message(0.5)


def test_v311_clean_session_connection_leaves_no_session_behind(broker, clients, uid):
    c = clients(broker, f"c-{uid}", 4, clean=True)
    c.connect()
    c.subscribe(f"{uid}/t", qos=1)
    c.disconnect()
    c2 = clients(broker, f"c-{uid}", 4, clean=False)
    assert not c2.connect().session_present


def test_v5_session_expiry_zero_ends_session_at_disconnect(broker, clients, uid):
    c = clients(broker, f"e0-{uid}", 5)
    c.connect(clean_start=False)  # no Session Expiry Interval: 0
    c.subscribe(f"{uid}/t", qos=1)
    c.disconnect()
    c2 = clients(broker, f"e0-{uid}", 5)
    assert not c2.connect(clean_start=False).session_present


def test_v5_session_is_kept_for_session_expiry_interval_then_discarded(broker, clients, uid):
    c = clients(broker, f"e2-{uid}", 5)
    _connect_persistent(c, 5, expiry=2)
    c.subscribe(f"{uid}/t", qos=1)
    c.disconnect()
    c2 = clients(broker, f"e2-{uid}", 5)
    assert _connect_persistent(c2, 5, expiry=2).session_present, "session must survive a 2 s expiry for a moment"
    c2.disconnect()
    time.sleep(3.2)
    c3 = clients(broker, f"e2-{uid}", 5)
    assert not _connect_persistent(c3, 5, expiry=2).session_present, "session must be gone 3 s after a 2 s expiry"
    pub = clients.connected(broker, f"pub-{uid}", 5)
    pub.publish(f"{uid}/t", b"x", qos=1)
    c3.expect_no_message(0.5)


def test_v5_session_expiry_can_be_changed_to_zero_on_disconnect(broker, clients, uid):
    c = clients(broker, f"ed-{uid}", 5)
    _connect_persistent(c, 5, expiry=300)
    c.subscribe(f"{uid}/t", qos=1)
    c.disconnect(reason=0, properties=props("DISCONNECT", SessionExpiryInterval=0))
    c2 = clients(broker, f"ed-{uid}", 5)
    assert not _connect_persistent(c2, 5, expiry=300).session_present


def test_v5_nonzero_session_expiry_on_disconnect_after_zero_in_connect_is_protocol_error(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"ez-{uid}")  # Session Expiry Interval 0
    c.send(r.disconnect_packet(0, {"SessionExpiryInterval": 60}))
    got = c.wait_closed()
    # [MQTT-3.14.2-2]: the server treats it as a protocol error; it may send DISCONNECT 0x82 first.
    for p in got:
        if p.type == r.DISCONNECT:
            assert p.rc == 0x82, got
    c2 = clients.raw(broker, 5)
    assert not c2.connect(f"ez-{uid}", clean=False).session_present


def test_any_packet_from_the_client_counts_as_keep_alive_activity(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"act-{uid}", keepalive=1)
    for i in range(5):  # 3.5 s of PUBLISHes only, no PINGREQ
        time.sleep(0.7)
        c.send(r.publish_packet(f"{uid}/t", b"tick", qos=0, version=version))
    c.send(r.PINGREQ_PACKET)
    c.expect(r.PINGRESP, timeout=2)
