"""robustmq-edge configuration and limits: invalid keys, print-config round trip, command-line
overrides, max connections, connect timeout, queue bounds."""

import os
import socket
import subprocess
import time
import tomllib

import pytest

import rawmqtt as r
from conftest import Broker, free_port, robustmq_bin, to_toml, wait_listening

pytestmark = [pytest.mark.robustmq_only, pytest.mark.timeout(60)]


def _run(args, cwd=None, timeout=20):
    return subprocess.run([str(robustmq_bin())] + args, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _assert_startup_fails_naming(tmp_path, doc, key):
    """Starts the broker with `doc` as its config file and data dir tmp_path/d: it must exit with
    an error that names `key`."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(doc)
    proc = _run(["--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")])
    assert proc.returncode != 0
    assert key in proc.stderr, proc.stderr


@pytest.mark.parametrize("doc,key", [
    pytest.param("[limits]\nmax_conections = 3\n", "max_conections", id="unknown_key"),
    pytest.param("bogus_top_level = 1\n", "bogus_top_level", id="unknown_top_level_key"),
    pytest.param("[storage]\ncache_sise_bytes = 1\n", "cache_sise_bytes", id="unknown_storage_key"),
    pytest.param("[[listeners]]\nbind = \"127.0.0.1:1\"\nport = 3\n", "port", id="unknown_listener_key"),
    pytest.param("[limitz]\nmax_connections = 3\n", "limitz", id="unknown_table"),
    pytest.param("[limits]\nreceive_maximum = 0\n", "receive_maximum", id="zero_receive_maximum"),
    pytest.param("durability = \"sometimes\"\n", "durability", id="unknown_durability"),
    pytest.param("[limits]\nmax_packet_size = \"big\"\n", "max_packet_size", id="string_for_number"),
    pytest.param("[[listeners]]\nbind = \"not an address\"\n", "bind", id="bad_bind_address"),
    pytest.param("[limits]\nmax_connections = -1\n", "max_connections", id="negative_number"),
    pytest.param("[log]\nlevel = \"[[[\"\n", "level", id="bad_log_filter"),
])
def test_bad_config_fails_startup_naming_the_key_and_creates_nothing(tmp_path, doc, key):
    _assert_startup_fails_naming(tmp_path, doc, key)
    assert not (tmp_path / "d" / "edge.redb").exists(), "nothing should be created for a bad config"


def test_missing_config_file_fails_startup(tmp_path):
    proc = _run(["--config", str(tmp_path / "nope.toml"), "--listen", f"127.0.0.1:{free_port()}"])
    assert proc.returncode != 0 and "nope.toml" in proc.stderr


def test_print_config_prints_a_toml_document_the_broker_accepts_back(tmp_path, clients, uid):
    out = _run(["print-config"])
    assert out.returncode == 0, out.stderr
    doc = tomllib.loads(out.stdout)
    assert doc["listeners"][0]["bind"] == "127.0.0.1:1883"
    assert doc["limits"]["max_keep_alive_secs"] == 3600
    for key in ("max_connections", "max_packet_size", "connect_timeout_secs", "receive_maximum", "max_inflight",
                "max_queued_messages", "max_queued_bytes", "max_session_expiry_secs", "topic_alias_maximum",
                "max_retained_messages", "max_subscriptions_per_session"):
        assert key in doc["limits"], key
    assert {"cache_size_bytes", "max_batch"} <= set(doc["storage"])
    assert "level" in doc["log"] and doc["durability"] == "immediate" and "data_dir" in doc
    # Fed back with the port and data dir changed, it runs.
    port = free_port()
    doc_text = out.stdout.replace("127.0.0.1:1883", f"127.0.0.1:{port}")
    doc_text = doc_text.replace(f'data_dir = "{doc["data_dir"]}"', f'data_dir = "{tmp_path / "data"}"')
    cfg = tmp_path / "printed.toml"
    cfg.write_text(doc_text)
    proc = subprocess.Popen([str(robustmq_bin()), "--config", str(cfg)], stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        _wait_port(port, proc)
        c = clients.raw(_at(port), 5)
        c.connect(f"c-{uid}")
        assert (tmp_path / "data" / "edge.redb").exists()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


class _at:
    host = "127.0.0.1"

    def __init__(self, port):
        self.port = port

    def raw(self, version=5, timeout=5.0):
        return r.RawClient(self.host, self.port, version, timeout)


def _wait_port(port, proc, timeout=20):
    wait_listening(port, proc, lambda: proc.stderr.read().decode(errors="replace"), timeout)


def test_command_line_listen_and_data_dir_override_the_config_file(tmp_path, clients, uid):
    cfg_port, cli_port = free_port(), free_port()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(to_toml({"data_dir": str(tmp_path / "cfgdata"), "listeners": [{"bind": f"127.0.0.1:{cfg_port}"}]}))
    proc = subprocess.Popen([str(robustmq_bin()), "--config", str(cfg), "--listen", f"127.0.0.1:{cli_port}",
                             "--data-dir", str(tmp_path / "clidata")], stderr=subprocess.PIPE)
    try:
        _wait_port(cli_port, proc)
        c = clients.raw(_at(cli_port), 4)
        c.connect(f"c-{uid}")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", cfg_port), timeout=0.5).close()
        assert (tmp_path / "clidata" / "edge.redb").exists()
        assert not (tmp_path / "cfgdata").exists()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_several_listeners_from_the_config_file_share_one_broker(tmp_path, clients, uid):
    p1, p2 = free_port(), free_port()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(to_toml({"data_dir": str(tmp_path / "data"),
                            "listeners": [{"bind": f"127.0.0.1:{p1}"}, {"bind": f"127.0.0.1:{p2}"}]}))
    proc = subprocess.Popen([str(robustmq_bin()), "--config", str(cfg)], stderr=subprocess.PIPE)
    try:
        _wait_port(p1, proc)
        _wait_port(p2, proc)
        sub = clients.raw(_at(p1), 5)
        sub.connect(f"s-{uid}")
        sub.subscribe(f"{uid}/t", qos=1)
        pub = clients.raw(_at(p2), 4)
        pub.connect(f"p-{uid}")
        pub.publish(f"{uid}/t", b"across", qos=1)
        assert sub.expect(r.PUBLISH).payload == b"across"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_no_arguments_serves_on_localhost_1883_with_data_in_a_local_folder(tmp_path, clients, uid):
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=0.3).close()
        pytest.skip("port 1883 is in use on this machine")
    except OSError:
        pass
    proc = subprocess.Popen([str(robustmq_bin())], stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        _wait_port(1883, proc)
        c = clients.raw(_at(1883), 5)
        c.connect(f"c-{uid}")
        assert list(tmp_path.glob("*/edge.redb")), f"no database under {tmp_path}: {list(tmp_path.iterdir())}"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_max_connections_refuses_the_extra_connection(broker_factory, clients, uid):
    b = broker_factory(limits={"max_connections": 2})
    a = clients.raw(b, 5)
    a.connect(f"a-{uid}")
    c2 = clients.raw(b, 4)
    c2.connect(f"b-{uid}")
    extra = clients.raw(b, 5)
    try:
        extra.send(r.connect_packet(f"x-{uid}", 5))
        got = extra.wait_closed()
    except (ConnectionResetError, BrokenPipeError):
        got = []
    assert not any(p.type == r.CONNACK and p.rc == 0 for p in got), f"third connection accepted: {got}"
    for p in got:
        if p.type == r.CONNACK:
            assert p.rc in (0x97, 0x89, 0x9F), p  # v5: quota exceeded / server busy / connection rate
    a.disconnect()
    # A slot is free again.
    deadline = time.monotonic() + 5
    while True:
        again = clients.raw(b, 5)
        try:
            again.connect(f"y-{uid}")
            break
        except (AssertionError, r.ConnectionClosed, ConnectionResetError):
            again.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_connection_that_sends_no_connect_is_closed_after_connect_timeout(broker_factory, clients):
    b = broker_factory(limits={"connect_timeout_secs": 1})
    c = clients.raw(b, 4)
    start = time.monotonic()
    c.wait_closed(timeout=5)
    assert 0.8 <= time.monotonic() - start <= 3.0


def test_partial_connect_is_closed_after_connect_timeout(broker_factory, clients):
    b = broker_factory(limits={"connect_timeout_secs": 1})
    c = clients.raw(b, 4)
    c.send(r.connect_packet("slow", 4)[:5])
    start = time.monotonic()
    c.wait_closed(timeout=5)
    assert time.monotonic() - start <= 3.0


def test_max_queued_messages_bounds_the_offline_queue(broker_factory, clients, uid):
    b = broker_factory(limits={"max_queued_messages": 5})
    s = clients.raw(b, 5)
    s.connect(f"s-{uid}", clean=True, props={"SessionExpiryInterval": 300})
    s.subscribe(f"{uid}/t", qos=1)
    s.disconnect()
    pub = clients.connected(b, f"p-{uid}", 5)
    for i in range(12):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1)
    s2 = clients.raw(b, 5)
    assert s2.connect(f"s-{uid}", clean=False, props={"SessionExpiryInterval": 300}).session_present
    got = [p.payload for p in s2.receive_acking()]
    assert got == [str(i).encode() for i in range(5)], f"expected the first 5 kept, newer dropped: {got}"


def test_max_queued_bytes_bounds_the_offline_queue(broker_factory, clients, uid):
    b = broker_factory(limits={"max_queued_bytes": 10_000})
    s = clients.raw(b, 4)
    s.connect(f"s-{uid}", clean=False)
    s.subscribe(f"{uid}/t", qos=1)
    s.disconnect()
    pub = clients.connected(b, f"p-{uid}", 4)
    for i in range(10):
        pub.publish(f"{uid}/t", bytes([65 + i]) * 3000, qos=1)
    s2 = clients.raw(b, 4)
    assert s2.connect(f"s-{uid}", clean=False).session_present
    got = [p.payload[:1] for p in s2.receive_acking()]
    assert 1 <= len(got) <= 4 and got == [bytes([65 + i]) for i in range(len(got))], got


def test_max_inflight_limits_unacknowledged_messages_towards_a_client(broker_factory, clients, uid):
    b = broker_factory(limits={"max_inflight": 3})
    s = clients.raw(b, 4)
    s.connect(f"s-{uid}")
    s.subscribe(f"{uid}/t", qos=1)
    pub = clients.connected(b, f"p-{uid}", 4)
    for i in range(6):
        pub.publish(f"{uid}/t", str(i).encode(), qos=1)
    first = [s.expect(r.PUBLISH) for _ in range(3)]
    s.expect_nothing(0.6)
    s.ack(first[0])
    assert s.expect(r.PUBLISH).payload == b"3"


def test_receive_maximum_from_config_is_announced(broker_factory, clients, uid):
    b = broker_factory(limits={"receive_maximum": 7, "topic_alias_maximum": 3})
    c = clients.raw(b, 5)
    ack = c.connect(f"c-{uid}")
    assert ack.props.get("ReceiveMaximum") == 7 and ack.props.get("TopicAliasMaximum") == 3, ack


def test_session_expiry_is_capped_by_max_session_expiry_secs(broker_factory, clients, uid):
    b = broker_factory(limits={"max_session_expiry_secs": 1})
    c = clients.raw(b, 5)
    ack = c.connect(f"c-{uid}", props={"SessionExpiryInterval": 1000})
    assert ack.props.get("SessionExpiryInterval") == 1, ack
    c.subscribe(f"{uid}/t", qos=1)
    c.disconnect()
    time.sleep(2)
    c2 = clients.raw(b, 5)
    assert not c2.connect(f"c-{uid}", clean=False, props={"SessionExpiryInterval": 1000}).session_present


def test_max_subscriptions_per_session_refuses_the_extra_subscription(broker_factory, clients, version, uid):
    b = broker_factory(limits={"max_subscriptions_per_session": 2})
    c = clients.raw(b, version)
    c.connect(f"c-{uid}")
    ack = c.subscribe([(f"{uid}/1", 1), (f"{uid}/2", 1), (f"{uid}/3", 1)])
    assert ack.codes[:2] == [1, 1] and ack.codes[2] >= 0x80, ack
    if version == 5:
        assert ack.codes[2] == 0x97, ack  # quota exceeded
    assert c.subscribe(f"{uid}/1", qos=0).codes == [0], "re-subscribing an existing filter is not a new one"


def test_max_retained_messages_bounds_the_retained_store(broker_factory, clients, uid):
    b = broker_factory(limits={"max_retained_messages": 3})
    pub = clients.raw(b, 5)
    pub.connect(f"p-{uid}")
    codes = [pub.publish(f"{uid}/r/{i}", b"v", qos=1, retain=True).rc for i in range(5)]
    sub = clients.raw(b, 5)
    sub.connect(f"s-{uid}")
    sub.subscribe(f"{uid}/r/+", qos=1)
    got = []
    while True:
        try:
            got.append(sub.recv(0.7).topic)
        except r.Timeout:
            break
    assert len(got) <= 3, f"{len(got)} retained messages kept with max_retained_messages = 3"
    assert codes[3] >= 0x80 or len(got) == 3, codes


def test_refused_connection_is_logged_with_its_reason(broker_factory, clients, uid):
    b = broker_factory(limits={"max_connections": 1})
    a = clients.raw(b, 4)
    a.connect(f"a-{uid}")
    extra = clients.raw(b, 4)
    try:
        extra.send(r.connect_packet(f"x-{uid}", 4))
        extra.wait_closed()
    except (ConnectionResetError, BrokenPipeError):
        pass
    deadline = time.monotonic() + 3
    while "max_connections" not in b.stderr_text() and "connection limit" not in b.stderr_text().lower():
        assert time.monotonic() < deadline, f"no log line naming the refusal:\n{b.stderr_text()[-3000:]}"
        time.sleep(0.1)


def test_memory_does_not_grow_with_clients_that_come_and_go(broker, uid):
    def rss_kb():
        for line in open(f"/proc/{broker.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    def churn(n, tag):
        for i in range(n):
            c = broker.raw(5 if i % 2 else 4)
            c.connect(f"{tag}-{i}-{uid}", clean=True)
            c.subscribe(f"{uid}/{tag}/{i}", qos=1)
            c.disconnect()

    churn(300, "warm")
    time.sleep(0.5)
    before = rss_kb()
    churn(1500, "load")
    time.sleep(0.5)
    after = rss_kb()
    assert after - before < 4096, f"RSS grew {after - before} kB over 1500 short-lived clients"


@pytest.mark.parametrize("cause", ["not-connect", "bad-level", "empty-id-persistent", "connect-timeout", "malformed"])
def test_every_refused_connection_is_logged_with_peer_and_reason(broker_factory, cause):
    b = broker_factory(limits={"connect_timeout_secs": 1})
    c = b.raw(4)
    peer = "127.0.0.1:%d" % c.sock.getsockname()[1]
    if cause == "not-connect":
        c.send(r.PINGREQ_PACKET)
    elif cause == "bad-level":
        c.send(r.packet(r.CONNECT, 0, r.utf8(b"MQTT") + bytes([9, 2]) + b"\x00\x3c" + r.utf8("x")))
    elif cause == "empty-id-persistent":
        c.send(r.connect_packet("", 4, clean=False))
    elif cause == "malformed":
        c.send(bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]))
    c.wait_closed(timeout=5)
    c.close()
    deadline = time.monotonic() + 3
    while True:
        lines = [l for l in b.stderr_text().splitlines() if peer in l]
        if any("refus" in l.lower() for l in lines):
            break
        assert time.monotonic() < deadline, f"no log line saying {peer} was refused:\n{b.stderr_text()[-3000:]}"
        time.sleep(0.1)
