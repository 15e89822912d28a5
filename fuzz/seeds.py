#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/): real packets of each
type for MQTT 3.1 / 3.1.1 / 5.0, packet sequences for the connection target, upstream acks
for the sync decoder, and the repository's example configs, password file and ACLs.
Run from the repository root: python3 fuzz/seeds.py"""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

# The Python test suite's MQTT encoders: one variable byte integer and string writer.
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from rawmqtt import utf8 as s, varint  # noqa: E402


def pkt(first, body):
    return bytes([first]) + varint(len(body)) + body


def props(p=b""):
    return varint(len(p)) + p


def connect(level, v5=False, will=False, user=None, pw=None, clean=True, name=None):
    name = name or ("MQIsdp" if level == 3 else "MQTT")
    flags = (0x02 if clean else 0) | (0x04 | 0x08 if will else 0)
    flags |= 0x80 if user is not None else 0
    flags |= 0x40 if pw is not None else 0
    body = s(name) + bytes([level, flags]) + (60).to_bytes(2, "big")
    if v5:
        # session expiry 300, receive maximum 10, topic alias maximum 5
        body += props(b"\x11\x00\x00\x01\x2c\x21\x00\x0a\x22\x00\x05")
    body += s("client-1")
    if will:
        if v5:
            body += props(b"\x18\x00\x00\x00\x05")  # will delay
        body += s("will/topic") + s(b"bye")
    if user is not None:
        body += s(user)
    if pw is not None:
        body += s(pw)
    return pkt(0x10, body)


def publish(v5, topic, payload, qos=0, pid=1, retain=False, dup=False, p=b""):
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = s(topic) + (pid.to_bytes(2, "big") if qos else b"")
    if v5:
        body += props(p)
    return pkt(first, body + payload)


def ack(first, pid, v5, code=None, p=None):
    body = pid.to_bytes(2, "big")
    if v5 and code is not None:
        body += bytes([code])
        if p is not None:
            body += props(p)
    return pkt(first, body)


def subscribe(v5, pid, filters, p=b""):
    body = pid.to_bytes(2, "big") + (props(p) if v5 else b"")
    for f, o in filters:
        body += s(f) + bytes([o])
    return pkt(0x82, body)


def unsubscribe(v5, pid, filters):
    body = pid.to_bytes(2, "big") + (props() if v5 else b"")
    for f in filters:
        body += s(f)
    return pkt(0xA2, body)


def packets(level):
    v5 = level == 5
    out = {
        "connect": connect(level, v5),
        "connect_will_auth": connect(level, v5, will=True, user="alice", pw="secret", clean=False),
        "publish_qos0": publish(v5, "a/b", b"hello"),
        "publish_qos1": publish(v5, "sensors/1/temp", b"21.5", qos=1, pid=7),
        "publish_qos2_retain": publish(v5, "state/x", b"on", qos=2, pid=8, retain=True),
        "puback": ack(0x40, 7, v5),
        "pubrec": ack(0x50, 8, v5),
        "pubrel": ack(0x62, 8, v5),
        "pubcomp": ack(0x70, 8, v5),
        "subscribe": subscribe(v5, 3, [("a/+", 1), ("b/#", 2), ("$share/g/c", 0)]),
        "unsubscribe": unsubscribe(v5, 4, ["a/+", "b/#"]),
        "pingreq": pkt(0xC0, b""),
        "pingresp": pkt(0xD0, b""),
        "disconnect": pkt(0xE0, b""),
        "connack": pkt(0x20, b"\x00\x00" + (props() if v5 else b"")),
        "suback": pkt(0x90, b"\x00\x03" + (props() if v5 else b"") + b"\x01\x02\x80"),
        "unsuback": pkt(0xB0, b"\x00\x04" + (props() + b"\x00\x11" if v5 else b"")),
    }
    if v5:
        out.update({
            # payload format, message expiry, topic alias 1, response topic, correlation,
            # user property, subscription id, content type
            "publish_props": publish(
                True, "a/b", b"{}", qos=1, pid=9,
                p=b"\x01\x01\x02\x00\x00\x00\x3c\x23\x00\x01\x08" + s("reply/to")
                + b"\x09" + s(b"\x01\x02") + b"\x26" + s("k") + s("v")
                + b"\x03" + s("application/json")),
            "publish_alias_only": publish(True, "", b"x", p=b"\x23\x00\x01"),
            "puback_reason": ack(0x40, 7, True, 0x10, b"\x1f" + s("no subscribers")),
            "pubrec_reason": ack(0x50, 8, True, 0x80, b""),
            "pubrel_reason": ack(0x62, 8, True, 0x92),
            "subscribe_options": subscribe(True, 5, [("x/y", 0x2D)], p=b"\x0b\x01"),
            "disconnect_reason": pkt(0xE0, b"\x04" + props(b"\x11\x00\x00\x00\x0a")),
            "auth": pkt(0xF0, b"\x18" + props(b"\x15" + s("SCRAM"))),
            "connack_props": pkt(0x20, b"\x01\x00" + props(b"\x21\x00\x14\x24\x01\x27\x00\x01\x00\x00")),
        })
    return out


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, src, name):
    write(target, name, open(os.path.join(ROOT, src), "rb").read())


def main():
    for level, sel in ((3, 0), (4, 1), (5, 2)):
        ps = packets(level)
        v5 = level == 5
        for name, p in ps.items():
            write("codec", f"v{level}_{name}", bytes([sel]) + p)
        # Connection: sequences after CONNECT, with an attached session (bit 2) or not.
        seqs = {
            "pub_sub": [ps["subscribe"], ps["publish_qos0"], ps["publish_qos1"],
                        ps["publish_qos2_retain"], ps["pubrel"], ps["pingreq"],
                        ps["unsubscribe"], ps["disconnect"]],
            "qos2_flow": [ps["publish_qos2_retain"], ps["publish_qos2_retain"], ps["pubrel"],
                          ps["pubrel"], ps["puback"], ps["pubrec"], ps["pubcomp"]],
            "second_connect": [ps["pingreq"], ps["connect"]],
        }
        if v5:
            seqs["aliases"] = [publish(True, "t/1", b"a", p=b"\x23\x00\x01"),
                               ps["publish_alias_only"], ps["publish_props"],
                               ps["subscribe_options"], ps["disconnect_reason"]]
        for name, seq in seqs.items():
            for attached in (0, 4):
                write("connection", f"v{level}_{name}_{'attached' if attached else 'detached'}",
                      bytes([sel | attached]) + b"".join(seq))

    # Upstream acknowledgements for the sync client (byte 0: 0 = MQTT 5, 1 = 3.1.1).
    v5 = packets(5)
    v4 = packets(4)
    for name in ("connack", "connack_props", "puback", "puback_reason", "pubrec_reason",
                 "pubcomp", "suback", "unsuback", "publish_props", "disconnect_reason",
                 "pingresp", "publish_qos1"):
        write("sync_decode", f"v5_{name}", b"\x00" + v5[name])
    for name in ("connack", "puback", "pubrec", "pubcomp", "suback", "unsuback", "pingresp",
                 "publish_qos1"):
        write("sync_decode", f"v4_{name}", b"\x01" + v4[name])
    # A 3.1.1 server answering a v5 CONNECT; offsets as RobustMQ reports them; acks with a
    # reason code but no property length (accepted leniently); a stream of several acks.
    write("sync_decode", "v5_short_connack", b"\x00\x20\x02\x00\x01")
    write("sync_decode", "v5_puback_offset", b"\x00" + ack(0x40, 3, True, 0, b"\x26" + s("offset") + s("42")))
    write("sync_decode", "v5_puback_no_props", b"\x00\x40\x03\x00\x05\x10")
    write("sync_decode", "v5_stream", b"\x00" + v5["connack"] + v5["puback"] + v5["pubrec_reason"] + v5["pubcomp"])

    for src, name in (("edge/src/default_config.toml", "default_config.toml"),
                      ("targets/arm64/config.toml", "arm64.toml"),
                      ("targets/raspberry-pi/config.toml", "raspberry-pi.toml"),
                      ("examples/sync/store-gateway.toml", "store-gateway.toml")):
        copy("config", src, name)

    copy("password_file", "edge/tests/fixtures/mosquitto_passwd.txt", "mosquitto_passwd.txt")
    write("password_file", "comments_and_blank", b"# users\n\nalice:$6$xEJU7mxkLIIF+kf2$zFE0Pmv69NNn0eSTrgTkD0RFApIFgEeB2Nmu5is/gS7EX8UL9Qv8fbJuQ3QvZMrKCWrldQ58Qglo1k0Zb8ribA==\r\n")

    acls = {
        "basic": "# anonymous\ntopic read public/#\n\nuser alice\ntopic readwrite alice/#\ntopic deny alice/secret\ntopic write sensors/+/cmd\n",
        "patterns": "pattern readwrite devices/%c/#\npattern read users/%u/inbox\npattern deny devices/%c/admin\n",
        "mixed": "topic sys/#\nuser bob\ntopic read $SYS/#\ntopic readwrite #\npattern write %u/%c/out\n",
    }
    for name, text in acls.items():
        write("acl", name, text.encode())


if __name__ == "__main__":
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    main()
