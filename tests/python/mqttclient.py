"""A thin synchronous wrapper around paho-mqtt 2.x for tests: every call waits for its acknowledgement,
received messages land in a queue, and nothing reconnects behind the test's back."""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

PROTOCOLS = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}


def props(packet_type: str, **values) -> Properties:
    """props("PUBLISH", MessageExpiryInterval=5, UserProperty=[("a", "1")])"""
    p = Properties(getattr(PacketTypes, packet_type))
    for k, v in values.items():
        setattr(p, k, v)
    return p


def prop(properties: Any, name: str, default=None):
    """A property's value from a paho Properties object (or None), without AttributeError."""
    if properties is None:
        return default
    return getattr(properties, name, default)


def rc_value(rc) -> int:
    if rc is None:
        return None
    if isinstance(rc, ReasonCode):
        return rc.value
    return int(rc)


@dataclass
class ConnAck:
    rc: int
    session_present: bool
    properties: Any


@dataclass
class Disconnected:
    rc: int
    properties: Any


class Client:
    def __init__(self, host: str, port: int, client_id: str = "", version: int = 5, clean: bool = True,
                 manual_ack: bool = False):
        self.host, self.port, self.version = host, port, version
        self.client_id = client_id
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=PROTOCOLS[version],
            clean_session=None if version == 5 else clean,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
        )
        self.messages: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self.connack: ConnAck | None = None
        self._cond = threading.Condition()
        self._results: dict = {}
        self._connected = threading.Event()
        self._gone = threading.Event()
        self._loop = False
        c = self.c
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_subscribe = lambda _c, _u, mid, codes, p: self._put(("sub", mid), ([rc_value(x) for x in codes], p))
        c.on_unsubscribe = lambda _c, _u, mid, codes, p: self._put(("unsub", mid), ([rc_value(x) for x in codes], p))
        c.on_publish = lambda _c, _u, mid, rc, p: self._put(("pub", mid), (rc_value(rc), p))

    # -- callbacks
    def _put(self, key, value):
        with self._cond:
            self._results[key] = value
            self._cond.notify_all()

    def _take(self, key, timeout: float):
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self._results:
                left = deadline - time.monotonic()
                if left <= 0 or self._gone.is_set():
                    raise AssertionError(f"{self.client_id!r}: no acknowledgement {key} within {timeout}s "
                                         f"(connection gone: {self._gone.is_set()})")
                self._cond.wait(min(left, 0.1))
            return self._results.pop(key)

    def _on_connect(self, _c, _u, flags, rc, properties):
        self.connack = ConnAck(rc_value(rc), bool(flags.session_present), properties)
        self._connected.set()

    def _on_disconnect(self, _c, _u, _flags, rc, properties):
        self.disconnects.put(Disconnected(rc_value(rc), properties))
        self._gone.set()
        self._connected.set()  # wake a connect() waiting for a CONNACK that will not come

    # -- operations
    def will_set(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False, properties=None):
        self.c.will_set(topic, payload, qos, retain, properties)

    def connect(self, keepalive: int = 60, clean_start: bool = True, properties=None, timeout: float = 5.0,
                expect_rc: int | None = 0) -> ConnAck:
        self.connack = None
        self._connected.clear()
        self._gone.clear()
        kw = {"properties": properties}
        if self.version == 5:
            kw["clean_start"] = clean_start
        self.c.connect(self.host, self.port, keepalive, **kw)
        self.c.loop_start()
        self._loop = True
        assert self._connected.wait(timeout), f"{self.client_id!r}: no CONNACK within {timeout}s"
        assert self.connack is not None, f"{self.client_id!r}: connection closed before CONNACK: {self.last_disconnect()}"
        if expect_rc is not None:
            assert self.connack.rc == expect_rc, f"{self.client_id!r}: CONNACK {self.connack}"
        return self.connack

    def subscribe(self, topic: str | list, qos: int = 0, no_local: bool = False, retain_as_published: bool = False,
                  retain_handling: int = 0, properties=None, timeout: float = 5.0) -> list[int]:
        """Subscribes and returns the SUBACK reason codes."""
        if isinstance(topic, list):
            arg = topic
        elif self.version == 5:
            arg = [(topic, SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                                            retainHandling=retain_handling))]
        else:
            arg = [(topic, qos)]
        rc, mid = self.c.subscribe(arg, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe: {rc}"
        codes, p = self._take(("sub", mid), timeout)
        self.suback_properties = p
        return codes

    def unsubscribe(self, topic: str | list[str], properties=None, timeout: float = 5.0) -> list[int]:
        rc, mid = self.c.unsubscribe(topic, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe: {rc}"
        codes, p = self._take(("unsub", mid), timeout)
        self.unsuback_properties = p
        return codes

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                properties=None, timeout: float = 5.0) -> int:
        """Publishes and waits for the flow to complete; returns the PUBACK/PUBREC reason code (0 for QoS 0)."""
        info = self.c.publish(topic, payload, qos, retain, properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish: {info.rc}"
        rc, p = self._take(("pub", info.mid), timeout)
        self.puback_properties = p
        return rc

    def expect_message(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: no message within {timeout}s") from None

    def expect_messages(self, n: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            try:
                got.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{self.client_id!r}: got {len(got)} of {n} messages within {timeout}s: "
                                     f"{[(m.topic, m.payload) for m in got]}") from None
        return got

    def expect_no_message(self, duration: float = 0.5) -> None:
        try:
            msg = self.messages.get(timeout=duration)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id!r}: unexpected message {msg.topic!r} {msg.payload!r}")

    def expect_disconnect(self, timeout: float = 5.0) -> Disconnected:
        """Waits until the broker closes the connection (or sends DISCONNECT)."""
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: still connected after {timeout}s") from None

    def last_disconnect(self):
        try:
            return self.disconnects.queue[-1]
        except IndexError:
            return None

    def is_connected(self) -> bool:
        return self.c.is_connected()

    def disconnect(self, reason: int | None = None, properties=None, timeout: float = 5.0) -> None:
        """A normal DISCONNECT (with a v5 reason code if given), then waits for the socket to close."""
        rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if reason is not None else None
        self.c.disconnect(reasoncode=rc, properties=properties)
        self._gone.wait(timeout)
        self._stop_loop()

    def drop(self) -> None:
        """Closes the network connection without a DISCONNECT packet (as a crash or network loss would)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._gone.wait(5)
        self._stop_loop()

    def _stop_loop(self):
        if self._loop:
            self._loop = False
            self.c.loop_stop()

    def close(self) -> None:
        try:
            if self.c.is_connected():
                self.c.disconnect()
                self._gone.wait(2)
        finally:
            self._stop_loop()
