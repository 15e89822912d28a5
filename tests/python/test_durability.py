"""robustmq-edge durability: sessions, queued and in-flight messages, retained messages survive
`kill -9`; an acknowledged publish is durable; a damaged database is set aside (or, with
`storage.on_damaged = "stop"`, reported and left as found), never rewritten."""

import os
import signal
import subprocess
import time

import pytest

import rawmqtt as r
from conftest import robustmq_bin

pytestmark = [pytest.mark.robustmq_only, pytest.mark.timeout(60)]


def _offline_subscriber(broker, clients, version, cid, topic, qos=1):
    c = clients.fresh_persistent_raw(broker, version, cid, expiry=3600)
    assert c.subscribe(topic, qos=qos).codes == [qos]
    c.disconnect()


def test_queued_qos1_messages_for_offline_persistent_session_are_all_delivered_after_kill9(broker, clients, version, uid):
    _offline_subscriber(broker, clients, version, f"s-{uid}", f"{uid}/t")
    pub = clients.connected(broker, f"p-{uid}", version)
    n = 200
    for i in range(n):
        pub.c.publish(f"{uid}/t", str(i).encode(), 1)
    # Every PUBACK received (the wrapper waits for the last; paho keeps order).
    pub.publish(f"{uid}/t", b"last", qos=1)
    pub.drop()
    broker.kill9_and_restart()
    s, ack = clients.persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    assert ack.session_present, "persistent session lost by kill -9"
    got = []
    for _ in range(n + 1):
        p = s.expect(r.PUBLISH)
        s.ack(p)
        got.append(p.payload)
    assert got == [str(i).encode() for i in range(n)] + [b"last"]
    s.expect_nothing(0.5)


def test_subscriptions_of_persistent_session_survive_kill9(broker, clients, version, uid):
    _offline_subscriber(broker, clients, version, f"s-{uid}", f"{uid}/+/t", qos=2)
    broker.kill9_and_restart()
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/x/t", b"after restart", qos=2)
    s, ack = clients.persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    assert ack.session_present
    p = s.expect(r.PUBLISH)
    assert (p.payload, p.qos) == (b"after restart", 2)


def test_retained_messages_survive_kill9(broker, clients, version, uid):
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(20):
        pub.publish(f"{uid}/r/{i}", f"v{i}".encode(), qos=1, retain=True)
    pub.publish(f"{uid}/r/0", b"", qos=1, retain=True)  # deleted before the crash
    pub.drop()
    broker.kill9_and_restart()
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/r/#", qos=1)
    got = sorted((m.topic, m.payload) for m in sub.expect_messages(19))
    assert got == sorted((f"{uid}/r/{i}", f"v{i}".encode()) for i in range(1, 20))
    sub.expect_no_message(0.5)


@pytest.mark.parametrize("qos", [1, 2])
def test_publish_acknowledged_just_before_kill9_is_not_lost(broker, clients, version, uid, qos):
    _offline_subscriber(broker, clients, version, f"s-{uid}", f"{uid}/t", qos=qos)
    c = clients.raw(broker, version)
    c.connect(f"p-{uid}")
    c.send(r.publish_packet(f"{uid}/t", b"acked", qos=qos, pid=1, version=version))
    c.send(r.publish_packet(f"{uid}/r", b"acked retained", qos=qos, retain=True, pid=2, version=version))
    acks = {c.expect(r.PUBACK if qos == 1 else r.PUBREC).pid for _ in range(2)}
    broker.kill9()  # immediately after PUBACK / PUBREC
    assert acks == {1, 2}
    broker.start()
    s, ack = clients.persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    assert ack.session_present
    p = s.expect(r.PUBLISH)
    assert p.payload == b"acked"
    s.ack(p)
    s.subscribe(f"{uid}/r", qos=1)
    assert s.expect(r.PUBLISH).payload == b"acked retained"


def test_unacknowledged_inflight_message_is_redelivered_with_dup_after_kill9(broker, clients, version, uid):
    s = clients.fresh_persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    s.subscribe(f"{uid}/t", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/t", b"inflight", qos=1)
    first = s.expect(r.PUBLISH)  # never acknowledged
    pub.drop()
    broker.kill9_and_restart()
    s2, ack = clients.persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    assert ack.session_present
    again = s2.expect(r.PUBLISH)
    assert (again.payload, again.dup, again.pid) == (b"inflight", True, first.pid)


def test_qos2_received_but_not_released_survives_kill9_without_duplicate(broker, clients, version, uid):
    _offline_subscriber(broker, clients, version, f"s-{uid}", f"{uid}/t", qos=2)
    c = clients.fresh_persistent_raw(broker, version, f"p-{uid}", expiry=3600)
    c.send(r.publish_packet(f"{uid}/t", b"q2", qos=2, pid=5, version=version))
    assert c.expect(r.PUBREC).pid == 5
    broker.kill9_and_restart()
    c2, ack = clients.persistent_raw(broker, version, f"p-{uid}", expiry=3600)
    assert ack.session_present
    c2.send(r.ack_packet(r.PUBREL, 5, version=version))
    assert c2.expect(r.PUBCOMP).pid == 5
    s, _ = clients.persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    p = s.expect(r.PUBLISH)
    s.ack(p)
    assert p.payload == b"q2"
    s.expect_nothing(0.5)


def test_sigterm_exits_0_and_restart_restores_sessions(broker, clients, version, uid):
    _offline_subscriber(broker, clients, version, f"s-{uid}", f"{uid}/t")
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/t", b"queued", qos=1)
    online = clients.raw(broker, version)
    online.connect(f"online-{uid}")
    assert broker.stop() == 0, "SIGTERM must exit 0"
    broker.start()
    s, ack = clients.persistent_raw(broker, version, f"s-{uid}", expiry=3600)
    assert ack.session_present
    assert s.expect(r.PUBLISH).payload == b"queued"


def test_sigint_exits_0(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}")
    broker.proc.send_signal(signal.SIGINT)
    assert broker.proc.wait(10) == 0


def test_clean_session_state_is_not_kept_across_restart(broker, clients, version, uid):
    c = clients.raw(broker, version)
    c.connect(f"c-{uid}", clean=True)
    c.subscribe(f"{uid}/t", qos=1)
    broker.kill9_and_restart()
    c2, ack = clients.persistent_raw(broker, version, f"c-{uid}", expiry=3600)
    assert not ack.session_present


def test_v5_session_expiry_counts_across_a_restart(broker, clients, uid):
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}", clean=True, props={"SessionExpiryInterval": 2})
    c.subscribe(f"{uid}/t", qos=1)
    c.disconnect()
    broker.kill9()
    time.sleep(2.5)
    broker.start()
    c2 = clients.raw(broker, 5)
    assert not c2.connect(f"c-{uid}", clean=False, props={"SessionExpiryInterval": 60}).session_present


def _stopped_with_a_stored_session(b, clients, uid):
    """Stores a v3.1.1 persistent session with one subscription, stops the broker cleanly and
    returns its database file and the file's bytes."""
    c = clients.raw(b, 4)
    c.connect(f"c-{uid}", clean=False)
    c.subscribe(f"{uid}/t", qos=1)
    c.close()
    assert b.stop() == 0
    db = b.data_dir / "edge.redb"
    return db, db.read_bytes()


def test_with_on_damaged_stop_a_garbage_database_makes_startup_fail_clearly_and_is_left_untouched(broker_factory, tmp_path):
    b = broker_factory(start=False, config={"storage": {"on_damaged": "stop"}})
    b.data_dir.mkdir(parents=True)
    db = b.data_dir / "edge.redb"
    garbage = os.urandom(64 * 1024)
    db.write_bytes(garbage)
    proc = subprocess.run(b.command(), capture_output=True, timeout=20, text=True)
    assert proc.returncode != 0, f"broker started on a database it cannot read:\n{proc.stderr}"
    assert "edge.redb" in proc.stderr, f"error must name the database file:\n{proc.stderr}"
    assert db.read_bytes() == garbage, "the unreadable database was modified"
    assert sorted(p.name for p in b.data_dir.iterdir()) == ["edge.redb"], "no replacement file either"


def test_with_on_damaged_stop_a_truncated_database_makes_startup_fail_and_is_left_untouched(broker_factory, clients, uid):
    b = broker_factory(config={"storage": {"on_damaged": "stop"}})
    db, data = _stopped_with_a_stored_session(b, clients, uid)
    db.write_bytes(data[:len(data) // 3])
    before = db.read_bytes()
    proc = subprocess.run(b.command(), capture_output=True, timeout=20, text=True)
    assert proc.returncode != 0, "broker exited 0 on a truncated database"
    assert db.read_bytes() == before, f"the truncated database was modified; broker said:\n{proc.stderr}"


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "garbled"])
def test_damaged_database_is_set_aside_and_the_broker_starts_with_an_empty_one(broker_factory, clients, uid, damage):
    b = broker_factory()
    db, data = _stopped_with_a_stored_session(b, clients, uid)
    bad = {
        "zeroed": bytes(len(data)),
        "truncated": data[:len(data) // 3],
        # redb's header kept, every page after it garbled (redb panics reading them)
        "garbled": data[:4096] + b"\xa5" * (len(data) - 4096),
    }[damage]
    db.write_bytes(bad)
    b.start()
    c2 = clients.raw(b, 4)
    assert not c2.connect(f"c-{uid}", clean=False).session_present, "a session from the damaged file"
    c2.close()
    folders = [p for p in b.data_dir.iterdir() if p.name.startswith("damaged-")]
    assert len(folders) == 1, sorted(p.name for p in b.data_dir.iterdir())
    assert (folders[0] / "edge.redb").read_bytes() == bad, "the damaged file must be kept as found"
    assert "database damaged" in b.stderr_text() and folders[0].name in b.stderr_text()


def test_unwritable_data_dir_is_reported(broker_factory, tmp_path):
    b = broker_factory(start=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("file")
    b.data_dir = blocker / "data"
    proc = subprocess.run(b.command(), capture_output=True, timeout=20, text=True)
    assert proc.returncode != 0 and str(blocker) in proc.stderr, proc.stderr


def test_durability_none_is_accepted_and_serves(broker_factory, clients, uid):
    b = broker_factory(config={"durability": "none"})
    c = clients.subscriber(b, f"c-{uid}", 5, f"{uid}/t", qos=1)
    c.publish(f"{uid}/t", b"fast", qos=1)
    assert c.expect_message().payload == b"fast"


def test_pending_delayed_will_is_still_sent_after_kill9(broker, clients, uid):
    w = clients(broker, f"w-{uid}", 5)
    w.connect(clean_start=False, properties=__import__("mqttclient").props("CONNECT", SessionExpiryInterval=300))
    w.subscribe(f"{uid}/will", qos=1)
    w.disconnect()
    c = clients.raw(broker, 5)
    c.connect(f"c-{uid}", props={"SessionExpiryInterval": 300},
              will={"topic": f"{uid}/will", "payload": b"delayed", "qos": 1, "props": {"WillDelayInterval": 2}})
    c.close()  # connection lost: the will is due in 2 s
    broker.kill9_and_restart()
    w2, ack = clients.persistent_raw(broker, 5, f"w-{uid}", expiry=3600)
    assert ack.session_present
    p = w2.expect(r.PUBLISH, timeout=6)
    assert p.payload == b"delayed"
