"""Fixtures that start the real broker binary (or, for validating the tests themselves, Mosquitto).

MQTT_TEST_BROKER=robustmq (default): `$ROBUSTMQ_EDGE_BIN` or `<repo>/target/debug/robustmq-edge`,
    started as `robustmq-edge --listen 127.0.0.1:PORT --data-dir DIR [--config FILE]`.
MQTT_TEST_BROKER=mosquitto: `/usr/sbin/mosquitto -c CONF` (persistence off). Tests marked
    `robustmq_only` are skipped, and so are tests marked `mosquitto_deviation(reason)`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mqttclient import Client
from rawmqtt import RawClient

REPO = Path(__file__).resolve().parents[2]
BROKER_KIND = os.environ.get("MQTT_TEST_BROKER", "robustmq").lower()
if BROKER_KIND not in ("robustmq", "mosquitto"):
    raise SystemExit(f"MQTT_TEST_BROKER must be robustmq or mosquitto, not {BROKER_KIND!r}")
MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")


def robustmq_bin() -> Path:
    env = os.environ.get("ROBUSTMQ_EDGE_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return Path(target) / "debug" / "robustmq-edge"


def pytest_configure(config):
    config.addinivalue_line("markers", "robustmq_only: tests of this broker's own behaviour (durability, config, limits)")
    config.addinivalue_line("markers", "mosquitto_deviation(reason): Mosquitto 2.0 is known not to do what the spec says here")


def pytest_report_header(config):
    where = robustmq_bin() if BROKER_KIND == "robustmq" else MOSQUITTO
    return f"MQTT broker under test: {BROKER_KIND} ({where})"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BROKER_KIND == "mosquitto":
            if item.get_closest_marker("robustmq_only"):
                item.add_marker(pytest.mark.skip(reason="robustmq-edge specific"))
            dev = item.get_closest_marker("mosquitto_deviation")
            if dev:
                item.add_marker(pytest.mark.skip(reason=f"Mosquitto deviation: {dev.args[0]}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, b in enumerate(getattr(item, "_brokers", [])):
            report.sections.append((f"broker {i} ({b.kind}) stderr: {b.stderr_path}", b.stderr_text()[-20000:]))


def wait_listening(port: int, proc: subprocess.Popen, why_exited, timeout: float = 20) -> None:
    """Waits until something accepts on 127.0.0.1:`port`; fails with `why_exited()` (say, the
    process's log) if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited: {why_exited()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


class SourcedClient:
    """A paho-mqtt MQTT 3.1.1 client connecting from `source` (a loopback address such as
    127.0.0.2), over TCP or, with `ws_path`, over ws:// (for the reverse-proxy tests)."""

    def __init__(self, client_id: str, source: str, ws_path: str | None = None):
        import threading

        import paho.mqtt.client as mqtt

        self.source = source
        self.rc: int | None = None
        self.done = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311,
                             transport="websockets" if ws_path else "tcp")
        if ws_path:
            self.c.ws_set_options(path=ws_path)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *_: self.done.set()

    def _on_connect(self, _c, _u, _flags, rc, _props):
        self.rc = rc.value
        self.done.set()

    def connect(self, port: int) -> int | None:
        """The CONNACK return code (None: closed without one)."""
        self.c.connect("127.0.0.1", port, 60, bind_address=self.source)
        self.c.loop_start()
        assert self.done.wait(10), f"no answer to the CONNECT from {self.source}"
        return self.rc

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def start_logged_broker(tmp_path: Path, config: str) -> tuple[subprocess.Popen, Path]:
    """Starts the broker binary on `config` (TOML text, written to tmp_path/edge.toml) with
    `RUST_LOG=info` and its stderr in tmp_path/broker.log; returns the process and the log."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(config)
    log = tmp_path / "broker.log"
    with open(log, "wb") as err:
        broker = subprocess.Popen([str(robustmq_bin()), "--config", str(cfg)], stderr=err,
                                  env={**os.environ, "RUST_LOG": "info"})
    return broker, log


def assert_per_ip_limit_counts_sources(port: int, log: Path, ws_path: str | None = None) -> None:
    """With `max_connections_per_ip = 1` behind a proxy on `port`: clients from 127.0.0.2 and
    127.0.0.3 each get in, a second one from 127.0.0.2 is refused, and the broker's `log` names
    127.0.0.2 in the refusal (so the limit counted the clients the proxy named, not the proxy)."""
    clients = []
    try:
        for client_id, source, want in [("a", "127.0.0.2", 0), ("b", "127.0.0.3", 0), ("c", "127.0.0.2", 136)]:
            c = SourcedClient(client_id, source, ws_path=ws_path)
            clients.append(c)
            # CONNACK 3, server unavailable (MQTT 3.1.1's answer to a limit), which paho reports
            # as reason code 136; a and b come from two addresses, so each is the first of its own.
            assert c.connect(port) == want, f"{client_id} from {source}"
        text = log.read_text(errors="replace")
        refusals = [l for l in text.splitlines() if "max_connections_per_ip" in l]
        assert refusals and all("peer=127.0.0.2:" in l for l in refusals), text[-3000:]
    finally:
        for c in clients:
            c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_toml(cfg: dict) -> str:
    """A minimal TOML writer for the broker config: top-level scalars, then tables."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines, tables = [], []
    for k, v in cfg.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for entry in v:
                tables.append(("[" + k + "]", entry))
        else:
            lines.append(f"{k} = {val(v)}")
    for name, entries in tables:
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {val(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


# robustmq [limits] keys that have a Mosquitto equivalent: (option, per-listener?)
MOSQUITTO_LIMITS = {
    "max_keep_alive_secs": ("max_keepalive", False),
    "max_packet_size": ("max_packet_size", False),
    "max_connections": ("max_connections", True),
    "topic_alias_maximum": ("max_topic_alias", True),
    "max_queued_messages": ("max_queued_messages", False),
    "max_inflight": ("max_inflight_messages", False),
}


class Broker:
    host = "127.0.0.1"

    def __init__(self, workdir: Path, kind: str = BROKER_KIND, limits: dict | None = None,
                 config: dict | None = None, port: int | None = None):
        self.kind = kind
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.data_dir = workdir / "data"
        self.limits = dict(limits or {})
        self.config = dict(config or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stderr_path = workdir / "broker.stderr"
        self.config_path: Path | None = None
        self._write_config()

    # -- configuration
    def _write_config(self) -> None:
        if self.kind == "mosquitto":
            general, listener = [], []
            for k, v in self.limits.items():
                if k not in MOSQUITTO_LIMITS:
                    raise pytest.skip.Exception(f"no Mosquitto equivalent for limits.{k}")
                opt, per_listener = MOSQUITTO_LIMITS[k]
                (listener if per_listener else general).append(f"{opt} {v}")
            lines = [
                "per_listener_settings false",
                "allow_anonymous true",
                "persistence false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
            ]
            if os.geteuid() == 0:
                lines.append("user root")
            lines += general
            lines += [f"listener {self.port} {self.host}"] + listener
            self.config_path = self.workdir / "mosquitto.conf"
            self.config_path.write_text("\n".join(lines) + "\n")
        else:
            cfg = dict(self.config)
            if self.limits:
                cfg.setdefault("limits", {}).update(self.limits)
            if cfg:
                self.config_path = self.workdir / "edge.toml"
                self.config_path.write_text(to_toml(cfg))

    def command(self) -> list[str]:
        if self.kind == "mosquitto":
            return [MOSQUITTO, "-c", str(self.config_path)]
        cmd = [str(robustmq_bin()), "--listen", f"{self.host}:{self.port}", "--data-dir", str(self.data_dir)]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        return cmd

    # -- lifecycle
    def start(self, timeout: float = 20.0) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.kind == "robustmq" and not robustmq_bin().exists():
            pytest.fail(f"broker binary {robustmq_bin()} not found: run `cargo build -p robustmq-edge` "
                        f"or set ROBUSTMQ_EDGE_BIN", pytrace=False)
        self.starts += 1
        err = open(self.stderr_path, "ab")
        err.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        err.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     cwd=self.workdir, env=env)
        err.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"broker exited with {self.proc.returncode} during startup:\n{self.stderr_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"broker did not accept connections on {self.port} within {timeout}s:\n{self.stderr_text()}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM; returns the exit status (None if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"broker did not exit within {timeout}s of SIGTERM")

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill9_and_restart(self) -> "Broker":
        """`kill -9`, then start again on the same data dir and port."""
        self.kill9()
        return self.start()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- clients
    def raw(self, version: int = 5, timeout: float = 5.0) -> RawClient:
        return RawClient(self.host, self.port, version, timeout)


@pytest.fixture
def broker_factory(request, tmp_path):
    """broker_factory(limits={...}, config={...}, start=True) -> Broker. Every broker made is stopped with
    SIGTERM at the end of the test, and must exit 0."""
    made: list[Broker] = []
    request.node._brokers = made

    def make(limits: dict | None = None, config: dict | None = None, start: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", limits=limits, config=config)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    problems = []
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            rc = b.stop()
            if rc != 0:
                problems.append(f"broker on port {b.port} exited with {rc} after SIGTERM")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(b.stderr_text()[-5000:] for b in made), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def clients(request):
    """clients(broker, client_id="", version=5, **kw) -> connected-later paho Client; all closed at teardown.
    Also clients.connected(...) (connected), clients.subscriber(broker, client_id, version, topic,
    qos) (connected and subscribed), clients.raw(broker, version) -> RawClient, and
    clients.persistent_raw / clients.fresh_persistent_raw (RawClient on a persistent session)."""
    made: list = []

    class Factory:
        def __call__(self, b: Broker, client_id: str = "", version: int = 5, **kw) -> Client:
            c = Client(b.host, b.port, client_id=client_id, version=version, **kw)
            made.append(c)
            return c

        def connected(self, b: Broker, client_id: str = "", version: int = 5, **kw) -> Client:
            """A client connected with the default CONNECT (clean start, keep-alive 60)."""
            c = self(b, client_id, version, **kw)
            c.connect()
            return c

        def subscriber(self, b: Broker, client_id: str, version: int, topic: str, qos: int = 0,
                       **sub_kw) -> Client:
            """A connected client whose SUBSCRIBE to `topic` was acknowledged (`sub_kw` go to
            `Client.subscribe`)."""
            c = self.connected(b, client_id, version)
            c.subscribe(topic, qos=qos, **sub_kw)
            return c

        def raw(self, b: Broker, version: int = 5, timeout: float = 5.0) -> RawClient:
            c = b.raw(version, timeout)
            made.append(c)
            return c

        def persistent_raw(self, b: Broker, version: int, client_id: str, clean: bool = False,
                           expiry: int = 300):
            """A RawClient connected with clean start/session off (unless `clean`) and, for v5, a
            session expiry of `expiry` s; returns it and the CONNACK."""
            c = self.raw(b, version)
            props = {"SessionExpiryInterval": expiry} if version == 5 else None
            return c, c.connect(client_id, clean=clean, props=props)

        def fresh_persistent_raw(self, b: Broker, version: int, client_id: str, expiry: int = 300) -> RawClient:
            """A RawClient on a new, empty persistent session: connected clean (dropping any old
            session), closed, and connected again with the session kept."""
            c, _ = self.persistent_raw(b, version, client_id, clean=True, expiry=expiry)
            c.close()
            return self.persistent_raw(b, version, client_id, expiry=expiry)[0]

    yield Factory()
    for c in made:
        c.close()


@pytest.fixture(params=[4, 5], ids=["v311", "v5"])
def version(request) -> int:
    """MQTT protocol level: 4 = 3.1.1, 5 = 5.0."""
    return request.param


@pytest.fixture
def uid(request) -> str:
    """A short id unique to the test, for client ids and topics."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return f"{name[-30:]}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
