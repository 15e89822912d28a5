"""A tiny hand-written MQTT 3.1 / 3.1.1 / 5.0 packet builder, parser and blocking socket client.

Used where a real client library hides what the test needs to see or do: exact packet ids and
DUP flags, never acknowledging a message, sending malformed or forbidden packets.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}

# MQTT 5 properties: name -> (identifier, type)
PROPS = {
    "PayloadFormatIndicator": (0x01, "byte"),
    "MessageExpiryInterval": (0x02, "u32"),
    "ContentType": (0x03, "str"),
    "ResponseTopic": (0x08, "str"),
    "CorrelationData": (0x09, "bin"),
    "SubscriptionIdentifier": (0x0B, "varint"),
    "SessionExpiryInterval": (0x11, "u32"),
    "AssignedClientIdentifier": (0x12, "str"),
    "ServerKeepAlive": (0x13, "u16"),
    "AuthenticationMethod": (0x15, "str"),
    "AuthenticationData": (0x16, "bin"),
    "RequestProblemInformation": (0x17, "byte"),
    "WillDelayInterval": (0x18, "u32"),
    "RequestResponseInformation": (0x19, "byte"),
    "ResponseInformation": (0x1A, "str"),
    "ServerReference": (0x1C, "str"),
    "ReasonString": (0x1F, "str"),
    "ReceiveMaximum": (0x21, "u16"),
    "TopicAliasMaximum": (0x22, "u16"),
    "TopicAlias": (0x23, "u16"),
    "MaximumQoS": (0x24, "byte"),
    "RetainAvailable": (0x25, "byte"),
    "UserProperty": (0x26, "pair"),
    "MaximumPacketSize": (0x27, "u32"),
    "WildcardSubscriptionAvailable": (0x28, "byte"),
    "SubscriptionIdentifierAvailable": (0x29, "byte"),
    "SharedSubscriptionAvailable": (0x2A, "byte"),
}
PROP_BY_ID = {ident: (name, kind) for name, (ident, kind) in PROPS.items()}


class ConnectionClosed(Exception):
    """The broker closed the TCP connection."""


class Timeout(Exception):
    """Nothing arrived in time."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    mult, value = 1, 0
    for _ in range(4):
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult *= 128
    raise ValueError("malformed variable byte integer")


def utf8(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def encode_properties(props: list[tuple[str, Any]] | dict | None) -> bytes:
    if props is None:
        props = []
    if isinstance(props, dict):
        props = list(props.items())
    body = bytearray()
    for name, value in props:
        ident, kind = PROPS[name]
        values = value if (name in ("UserProperty", "SubscriptionIdentifier") and isinstance(value, list)) else [value]
        for v in values:
            body += varint(ident)
            if kind == "byte":
                body.append(v)
            elif kind == "u16":
                body += struct.pack("!H", v)
            elif kind == "u32":
                body += struct.pack("!I", v)
            elif kind == "varint":
                body += varint(v)
            elif kind in ("str", "bin"):
                body += utf8(v)
            elif kind == "pair":
                body += utf8(v[0]) + utf8(v[1])
    return varint(len(body)) + bytes(body)


def decode_properties(buf: bytes, pos: int) -> tuple[dict, int]:
    """Returns {name: value}; UserProperty and SubscriptionIdentifier are lists (in order)."""
    length, pos = decode_varint(buf, pos)
    end = pos + length
    props: dict[str, Any] = {}
    while pos < end:
        ident, pos = decode_varint(buf, pos)
        name, kind = PROP_BY_ID[ident]
        if kind == "byte":
            v = buf[pos]; pos += 1
        elif kind == "u16":
            v = struct.unpack_from("!H", buf, pos)[0]; pos += 2
        elif kind == "u32":
            v = struct.unpack_from("!I", buf, pos)[0]; pos += 4
        elif kind == "varint":
            v, pos = decode_varint(buf, pos)
        elif kind in ("str", "bin"):
            n = struct.unpack_from("!H", buf, pos)[0]
            raw = bytes(buf[pos + 2:pos + 2 + n]); pos += 2 + n
            v = raw.decode("utf-8") if kind == "str" else raw
        else:  # pair
            n = struct.unpack_from("!H", buf, pos)[0]
            k = bytes(buf[pos + 2:pos + 2 + n]).decode(); pos += 2 + n
            n = struct.unpack_from("!H", buf, pos)[0]
            val = bytes(buf[pos + 2:pos + 2 + n]).decode(); pos += 2 + n
            v = (k, val)
        if name in ("UserProperty", "SubscriptionIdentifier"):
            props.setdefault(name, []).append(v)
        else:
            props[name] = v
    return props, end


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


# ------------------------------------------------------------------------------------ builders

def connect_packet(client_id: str | bytes = "", version: int = 5, clean: bool = True, keepalive: int = 60,
                   props=None, will: dict | None = None, username: str | None = None,
                   password: bytes | None = None) -> bytes:
    """version: 3 (MQTT 3.1, MQIsdp), 4 (3.1.1) or 5.
    will: {"topic", "payload", "qos", "retain", "props"}"""
    name = b"MQIsdp" if version == 3 else b"MQTT"
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = utf8(name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += encode_properties(props)
    body += utf8(client_id)
    if will:
        if version == 5:
            body += encode_properties(will.get("props"))
        body += utf8(will["topic"]) + utf8(will.get("payload", b""))
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += utf8(password)
    return packet(CONNECT, 0, body)


def publish_packet(topic: str | bytes, payload: bytes = b"", qos: int = 0, retain: bool = False, dup: bool = False,
                   pid: int | None = None, props=None, version: int = 5) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == 5:
        body += encode_properties(props)
    if isinstance(payload, str):
        payload = payload.encode()
    return packet(PUBLISH, flags, body + payload)


def ack_packet(ptype: int, pid: int, rc: int = 0, props=None, version: int = 5) -> bytes:
    flags = 0x02 if ptype == PUBREL else 0
    body = struct.pack("!H", pid)
    if version == 5 and (rc or props):
        body += bytes([rc]) + encode_properties(props)
    return packet(ptype, flags, body)


def subscribe_packet(pid: int, filters: list[tuple[str, int]], props=None, version: int = 5) -> bytes:
    """filters: [(topic_filter, options_byte)]; for v3 the options byte is just the QoS."""
    body = struct.pack("!H", pid)
    if version == 5:
        body += encode_properties(props)
    for f, opts in filters:
        body += utf8(f) + bytes([opts])
    return packet(SUBSCRIBE, 0x02, body)


def sub_options(qos: int = 0, no_local: bool = False, retain_as_published: bool = False,
                retain_handling: int = 0) -> int:
    return qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (retain_handling << 4)


def unsubscribe_packet(pid: int, filters: list[str], props=None, version: int = 5) -> bytes:
    body = struct.pack("!H", pid)
    if version == 5:
        body += encode_properties(props)
    for f in filters:
        body += utf8(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def disconnect_packet(rc: int = 0, props=None, version: int = 5) -> bytes:
    if version == 5 and (rc or props):
        return packet(DISCONNECT, 0, bytes([rc]) + encode_properties(props))
    return packet(DISCONNECT, 0, b"")


PINGREQ_PACKET = packet(PINGREQ, 0, b"")


# ------------------------------------------------------------------------------------- parsing

@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    version: int = 5
    # parsed fields (depending on type)
    rc: int = 0
    session_present: bool = False
    props: dict = field(default_factory=dict)
    topic: str = ""
    pid: int | None = None
    qos: int = 0
    dup: bool = False
    retain: bool = False
    payload: bytes = b""
    codes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, str(self.type))

    def __repr__(self) -> str:  # compact, for assertion messages
        extra = {k: getattr(self, k) for k in ("rc", "topic", "pid", "qos", "dup", "retain", "payload", "codes", "props")
                 if getattr(self, k) not in (0, "", None, False, b"", [], {})}
        return f"<{self.name} {extra}>"


def parse(first: int, body: bytes, version: int) -> Packet:
    ptype, flags = first >> 4, first & 0x0F
    p = Packet(ptype, flags, body, version)
    v5 = version == 5
    if ptype == CONNACK:
        p.session_present = bool(body[0] & 1)
        p.rc = body[1]
        if v5 and len(body) > 2:
            p.props, _ = decode_properties(body, 2)
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 3
        p.dup = bool(flags & 8)
        p.retain = bool(flags & 1)
        n = struct.unpack_from("!H", body, 0)[0]
        p.topic = body[2:2 + n].decode("utf-8")
        pos = 2 + n
        if p.qos:
            p.pid = struct.unpack_from("!H", body, pos)[0]
            pos += 2
        if v5:
            p.props, pos = decode_properties(body, pos)
        p.payload = bytes(body[pos:])
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.pid = struct.unpack_from("!H", body, 0)[0]
        if v5 and len(body) > 2:
            p.rc = body[2]
            if len(body) > 3:
                p.props, _ = decode_properties(body, 3)
    elif ptype in (SUBACK, UNSUBACK):
        p.pid = struct.unpack_from("!H", body, 0)[0]
        pos = 2
        if v5:
            p.props, pos = decode_properties(body, pos)
        p.codes = list(body[pos:])
    elif ptype == DISCONNECT:
        if v5 and body:
            p.rc = body[0]
            if len(body) > 1:
                p.props, _ = decode_properties(body, 1)
    return p


class RawClient:
    """A blocking MQTT client over a plain socket that does exactly what the test says."""

    def __init__(self, host: str, port: int, version: int = 5, timeout: float = 5.0):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self._next_pid = 1
        self.pending: list[Packet] = []  # received while waiting for an acknowledgement

    # -- io
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_pid(self) -> int:
        pid = self._next_pid
        self._next_pid = pid % 65535 + 1
        return pid

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout() from None
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed()
        self.buf += chunk

    def recv(self, timeout: float = 5.0) -> Packet:
        """Next packet; raises Timeout or ConnectionClosed."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                try:
                    length, pos = decode_varint(self.buf, 1)
                except IndexError:
                    length = None
                if length is not None and len(self.buf) >= pos + length:
                    first = self.buf[0]
                    body = bytes(self.buf[pos:pos + length])
                    del self.buf[:pos + length]
                    return parse(first, body, self.version)
            self._fill(deadline)

    def expect(self, ptype: int, timeout: float = 5.0) -> Packet:
        """The next packet, which must be of type `ptype` (PINGRESPs are skipped)."""
        while True:
            p = self.recv(timeout)
            if p.type == PINGRESP and ptype != PINGRESP:
                continue
            assert p.type == ptype, f"expected {PACKET_NAMES[ptype]}, got {p!r}"
            return p

    def _expect_ack(self, ptype: int, pid: int, timeout: float = 5.0) -> Packet:
        """Waits for the acknowledgement `ptype` of `pid`; other packets are kept for later recv()."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                p = self._recv_wire(max(0.0, deadline - time.monotonic()))
                if p.type == ptype and p.pid == pid:
                    return p
                if p.type != PINGRESP:
                    kept.append(p)
        finally:
            self.pending.extend(kept)

    def _recv_wire(self, timeout: float) -> Packet:
        saved, self.pending = self.pending, []
        try:
            return self.recv(timeout)
        finally:
            self.pending = saved + self.pending

    def expect_nothing(self, duration: float) -> None:
        try:
            p = self.recv(duration)
        except Timeout:
            return
        raise AssertionError(f"expected no packet within {duration}s, got {p!r}")

    def wait_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Waits for the broker to close the connection; returns the packets received before."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                return got
            except Timeout:
                raise AssertionError(f"connection still open after {timeout}s; got {got!r}") from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- conveniences
    def connect(self, client_id: str | bytes = "", clean: bool = True, keepalive: int = 60, props=None,
                will=None, expect_rc: int | None = 0, **kw) -> Packet:
        self.send(connect_packet(client_id, self.version, clean, keepalive, props, will, **kw))
        ack = self.expect(CONNACK)
        if expect_rc is not None:
            assert ack.rc == expect_rc, f"CONNACK {ack!r}"
        return ack

    def subscribe(self, filters: list[tuple[str, int]] | str, qos: int = 0, props=None) -> Packet:
        if isinstance(filters, str):
            filters = [(filters, qos)]
        pid = self.next_pid()
        self.send(subscribe_packet(pid, filters, props, self.version))
        return self._expect_ack(SUBACK, pid)

    def unsubscribe(self, filters: list[str], props=None) -> Packet:
        pid = self.next_pid()
        self.send(unsubscribe_packet(pid, filters, props, self.version))
        return self._expect_ack(UNSUBACK, pid)

    def publish(self, topic, payload=b"", qos=0, retain=False, props=None, dup=False, pid=None) -> Packet | None:
        """Publishes and completes the QoS flow; returns the PUBACK / PUBCOMP (None for QoS 0)."""
        if qos and pid is None:
            pid = self.next_pid()
        self.send(publish_packet(topic, payload, qos, retain, dup, pid, props, self.version))
        if qos == 1:
            return self._expect_ack(PUBACK, pid)
        if qos == 2:
            rec = self._expect_ack(PUBREC, pid)
            if rec.rc >= 0x80:
                return rec
            self.send(ack_packet(PUBREL, pid, version=self.version))
            return self._expect_ack(PUBCOMP, pid)
        return None

    def ack(self, p: Packet) -> None:
        """Acknowledges a received PUBLISH (QoS 1: PUBACK; QoS 2: PUBREC, PUBREL, PUBCOMP)."""
        if p.qos == 1:
            self.send(ack_packet(PUBACK, p.pid, version=self.version))
        elif p.qos == 2:
            self.send(ack_packet(PUBREC, p.pid, version=self.version))
            self._expect_ack(PUBREL, p.pid)
            self.send(ack_packet(PUBCOMP, p.pid, version=self.version))

    def receive_acking(self, quiet: float = 0.7) -> list[Packet]:
        """Receives and acknowledges packets until none comes for `quiet` seconds; returns them."""
        got = []
        while True:
            try:
                p = self.recv(quiet)
            except Timeout:
                return got
            self.ack(p)
            got.append(p)

    def disconnect(self, rc: int = 0, props=None) -> None:
        self.send(disconnect_packet(rc, props, self.version))
        self.close()
