"""QoS 0/1/2 in both directions, ordering, and redelivery with DUP after a persistent session reconnects."""

import pytest

import rawmqtt as r

pytestmark = pytest.mark.timeout(30)


def _first_delivery_to_persistent(broker, clients, version, uid, qos, payload):
    """A fresh persistent raw subscriber s-{uid} on {uid}/t at `qos` (granted), and a publisher
    that sends it `payload` at `qos`: (subscriber, publisher, the PUBLISH the subscriber got)."""
    sub = clients.fresh_persistent_raw(broker, version, f"s-{uid}")
    assert sub.subscribe(f"{uid}/t", qos=qos).codes == [qos]
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/t", payload, qos=qos)
    return sub, pub, sub.expect(r.PUBLISH)


@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_message_is_delivered_at_the_lower_of_publish_and_subscription_qos(broker, clients, version, uid, pub_qos, sub_qos):
    sub = clients.connected(broker, f"s-{uid}", version)
    assert sub.subscribe(f"{uid}/t", qos=sub_qos) == [sub_qos]
    pub = clients.connected(broker, f"p-{uid}", version)
    rc = pub.publish(f"{uid}/t", b"payload", qos=pub_qos)
    assert rc in (0, 0x10) if version == 5 else rc == 0
    msg = sub.expect_message()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (f"{uid}/t", b"payload", min(pub_qos, sub_qos), False)
    sub.expect_no_message(0.3)


@pytest.mark.parametrize("qos", [1, 2])
def test_qos_messages_arrive_in_publish_order(broker, clients, version, uid, qos):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/t", qos=qos)
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(50):
        pub.c.publish(f"{uid}/t", str(i).encode(), qos)  # pipelined, not one at a time
    got = [int(m.payload) for m in sub.expect_messages(50, timeout=15)]
    assert got == list(range(50))


def test_raw_qos1_publish_gets_puback_with_same_packet_id(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"r-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"x", qos=1, pid=4242, version=version))
    ack = c.expect(r.PUBACK)
    assert ack.pid == 4242


def test_raw_qos2_publish_flow_pubrec_pubrel_pubcomp(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/t", qos=2)
    c = clients.raw(broker, version)
    c.connect(f"r-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"exactly once", qos=2, pid=77, version=version))
    assert c.expect(r.PUBREC).pid == 77
    # The same PUBLISH again (DUP) before PUBREL must not create a second message.
    c.send(r.publish_packet(f"{uid}/t", b"exactly once", qos=2, pid=77, dup=True, version=version))
    assert c.expect(r.PUBREC).pid == 77
    c.send(r.ack_packet(r.PUBREL, 77, version=version))
    assert c.expect(r.PUBCOMP).pid == 77
    assert sub.expect_message().payload == b"exactly once"
    sub.expect_no_message(0.5)


def test_qos2_inbound_flow_completes_after_publisher_reconnects(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/t", qos=2)
    c = clients.fresh_persistent_raw(broker, version, f"r-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"once", qos=2, pid=9, version=version))
    assert c.expect(r.PUBREC).pid == 9
    c.close()  # PUBREL never sent on this connection
    c2, ack = clients.persistent_raw(broker, version, f"r-{uid}")
    assert ack.session_present
    c2.send(r.ack_packet(r.PUBREL, 9, version=version))
    comp = c2.expect(r.PUBCOMP)
    assert comp.pid == 9 and comp.rc == 0, comp
    assert sub.expect_message().payload == b"once"
    sub.expect_no_message(0.5)


@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_publish_is_redelivered_with_dup_and_same_packet_id_after_reconnect(broker, clients, version, uid, qos):
    sub, _pub, first = _first_delivery_to_persistent(broker, clients, version, uid, qos, b"redeliver me")
    assert first.qos == qos and not first.dup and first.payload == b"redeliver me"
    sub.close()  # no PUBACK / PUBREC

    sub2, ack = clients.persistent_raw(broker, version, f"s-{uid}")
    assert ack.session_present
    again = sub2.expect(r.PUBLISH)
    assert (again.pid, again.dup, again.qos, again.payload, again.topic) == \
        (first.pid, True, qos, b"redeliver me", f"{uid}/t"), again
    sub2.ack(again)
    sub2.expect_nothing(0.3)
    sub2.close()

    # Acknowledged now: a further reconnect redelivers nothing.
    sub3, ack = clients.persistent_raw(broker, version, f"s-{uid}")
    assert ack.session_present
    sub3.expect_nothing(0.5)


def test_qos2_pubrel_is_resent_after_reconnect_when_pubcomp_was_missing(broker, clients, version, uid):
    sub, _pub, p = _first_delivery_to_persistent(broker, clients, version, uid, 2, b"q2")
    sub.send(r.ack_packet(r.PUBREC, p.pid, version=version))
    assert sub.expect(r.PUBREL).pid == p.pid
    sub.close()  # no PUBCOMP

    sub2, ack = clients.persistent_raw(broker, version, f"s-{uid}")
    assert ack.session_present
    rel = sub2.expect(r.PUBREL)  # not the PUBLISH again [MQTT-4.4.0-1]
    assert rel.pid == p.pid
    sub2.send(r.ack_packet(r.PUBCOMP, p.pid, version=version))
    sub2.expect_nothing(0.5)


def test_messages_queued_for_offline_session_are_first_sent_without_dup(broker, clients, version, uid):
    sub = clients.fresh_persistent_raw(broker, version, f"s-{uid}")
    sub.subscribe(f"{uid}/t", qos=1)
    sub.disconnect()
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(3):
        pub.publish(f"{uid}/t", f"q1-{i}".encode(), qos=1)
    sub2, ack = clients.persistent_raw(broker, version, f"s-{uid}")
    assert ack.session_present
    got = []
    for _ in range(3):
        p = sub2.expect(r.PUBLISH)
        got.append(p.payload)
        assert p.qos == 1 and not p.dup  # never sent before: no DUP
        sub2.ack(p)
    assert got == [b"q1-0", b"q1-1", b"q1-2"]


def test_broker_packet_ids_of_unacknowledged_messages_are_distinct(broker, clients, version, uid):
    sub = clients.raw(broker, version)
    sub.connect(f"s-{uid}")
    sub.subscribe(f"{uid}/t", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(10):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1)
    ids = [sub.expect(r.PUBLISH).pid for _ in range(10)]
    assert len(set(ids)) == 10 and all(1 <= i <= 65535 for i in ids), ids


def test_redelivered_then_queued_messages_arrive_in_order_after_reconnect(broker, clients, version, uid):
    sub = clients.fresh_persistent_raw(broker, version, f"s-{uid}")
    sub.subscribe(f"{uid}/t", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(4):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1)
    got = [sub.expect(r.PUBLISH) for _ in range(4)]
    sub.ack(got[0])  # 1, 2, 3 stay unacknowledged
    sub.expect_nothing(0.2)
    sub.close()
    for i in range(4, 7):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1)
    sub2, ack = clients.persistent_raw(broker, version, f"s-{uid}")
    assert ack.session_present
    again = []
    for _ in range(6):
        p = sub2.expect(r.PUBLISH)
        sub2.ack(p)
        again.append((p.payload, p.dup))
    assert again == [(b"1", True), (b"2", True), (b"3", True), (b"4", False), (b"5", False), (b"6", False)]
    sub2.expect_nothing(0.3)


def test_packet_id_is_reusable_after_the_qos2_flow_completes(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/t", qos=2)
    c = clients.raw(broker, version)
    c.connect(f"r-{uid}")
    c.publish(f"{uid}/t", b"first", qos=2, pid=1)
    c.publish(f"{uid}/t", b"second", qos=2, pid=1)  # same id, new message
    assert [m.payload for m in sub.expect_messages(2)] == [b"first", b"second"]


def test_session_takeover_keeps_the_persistent_session_and_its_unacknowledged_messages(broker, clients, version, uid):
    old, pub, first = _first_delivery_to_persistent(broker, clients, version, uid, 1, b"unacked")
    new, ack = clients.persistent_raw(broker, version, f"s-{uid}")  # old is still connected
    assert ack.session_present
    again = new.expect(r.PUBLISH)
    assert (again.payload, again.pid, again.dup) == (b"unacked", first.pid, True)
    new.ack(again)
    pub.publish(f"{uid}/t", b"next", qos=1)
    assert new.expect(r.PUBLISH).payload == b"next"


@pytest.mark.parametrize("size", [100_000, 900_000])
def test_large_payload_round_trip(broker, clients, version, uid, size):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/big", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    payload = bytes(range(256)) * (size // 256)
    pub.publish(f"{uid}/big", payload, qos=1, timeout=15)
    assert sub.expect_message(timeout=15).payload == payload


def test_message_fans_out_to_every_subscriber(broker, clients, version, uid):
    subs = []
    for i in range(20):
        s = clients.subscriber(broker, f"s{i}-{uid}", version, f"{uid}/fan", qos=1)
        subs.append(s)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/fan", b"all", qos=1)
    for s in subs:
        assert s.expect_message().payload == b"all"


def test_utf8_topic_names_and_payloads_round_trip(broker, clients, version, uid):
    topic = f"{uid}/温度/ß/🙂"
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/温度/+/🙂", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(topic, "22,5 °C".encode(), qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload.decode()) == (topic, "22,5 °C")


def test_broker_closes_the_connection_after_client_disconnect(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"d-{uid}")
    c.send(r.disconnect_packet(version=version))  # and keep the socket open
    assert c.wait_closed(timeout=3) == []  # [MQTT-3.14.4-1]
