"""Users and access control with paho-mqtt and the mosquitto command-line clients: password files
written by Debian's mosquitto_passwd and by `robustmq-edge passwd`, CONNACK refusals, the ACL on
publish, subscribe and delivery, for MQTT 3.1.1 and 5.0."""

import shutil
import subprocess
import time

import pytest

from conftest import robustmq_bin

pytestmark = [pytest.mark.robustmq_only, pytest.mark.timeout(60)]

USERS = {"app": "app-secret", "s1": "s1-secret"}
ACL = """\
user app
topic read sensors/#
topic readwrite apps/#

pattern write sensors/%u/#
"""


def edge_passwd(path):
    for i, (user, pw) in enumerate(USERS.items()):
        args = [str(robustmq_bin()), "passwd"] + (["-c"] if i == 0 else []) + ["--password-stdin", str(path), user]
        subprocess.run(args, input=pw + "\n", text=True, check=True, timeout=20)


def mosquitto_passwd(path):
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    for i, (user, pw) in enumerate(USERS.items()):
        args = [tool] + (["-c"] if i == 0 else []) + ["-b", str(path), user, pw]
        subprocess.run(args, check=True, timeout=20)


@pytest.fixture(params=["robustmq-edge-passwd", "mosquitto_passwd"])
def auth_broker(request, broker_factory, tmp_path):
    pw = tmp_path / f"passwd-{request.param}"
    (edge_passwd if request.param == "robustmq-edge-passwd" else mosquitto_passwd)(pw)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    return broker_factory(config={
        "listeners": [{"bind": "127.0.0.1:1883", "allow_anonymous": False}],
        "auth": {"password_file": str(pw), "acl_file": str(acl)},
    })


def login(clients, broker, cid, version, user=None, pw=None, expect_rc=(0,)):
    c = clients(broker, cid, version)
    if user is not None:
        c.c.username_pw_set(user, pw)
    ack = c.connect(expect_rc=None)
    if expect_rc is not None:
        assert ack.rc in expect_rc, f"CONNACK {ack}"
    return c, ack


def test_passwords_and_refusal_codes(auth_broker, clients, version, uid):
    c, _ = login(clients, auth_broker, f"ok-{uid}", version, "s1", "s1-secret", expect_rc={0})
    c.disconnect()
    # v3.1.1 return codes 4 / 5 (paho reports them as 134 / 135), v5 0x86 / 0x87.
    login(clients, auth_broker, f"bad-{uid}", version, "s1", "nope", expect_rc={4, 0x86})
    login(clients, auth_broker, f"anon-{uid}", version, expect_rc={5, 0x87})
    assert "nope" not in auth_broker.stderr_text(), "a password was logged"


def test_acl_on_publish_subscribe_and_delivery(auth_broker, clients, version, uid):
    app, _ = login(clients, auth_broker, f"app-{uid}", version, "app", "app-secret")
    assert app.subscribe("#", qos=1) == [1]
    assert app.subscribe("secret/#", qos=1) == ([0x87] if version == 5 else [0x80])
    s1, _ = login(clients, auth_broker, f"s1-{uid}", version, "s1", "s1-secret")
    assert s1.publish("sensors/s1/t", b"ok", qos=1) == 0
    # v5: PUBACK 0x87; v3: acknowledged and dropped.
    assert s1.publish("apps/cmd", b"spoof", qos=1) == (0x87 if version == 5 else 0)
    assert s1.publish("$SYS/x", b"spoof", qos=1) == (0x87 if version == 5 else 0)
    msg = app.expect_message()
    assert (msg.topic, msg.payload) == ("sensors/s1/t", b"ok")
    app.expect_no_message(0.5)
    # s1 may read nothing: its `#` subscription is refused outright.
    assert s1.subscribe("#", qos=1) == ([0x87] if version == 5 else [0x80])


def test_mosquitto_pub_and_sub_with_user_and_password(auth_broker, uid):
    sub_tool, pub_tool = shutil.which("mosquitto_sub"), shutil.which("mosquitto_pub")
    if sub_tool is None or pub_tool is None:
        pytest.skip("mosquitto clients not installed")
    host, port = auth_broker.host, str(auth_broker.port)
    for v in ("mqttv311", "mqttv5"):
        sub = subprocess.Popen([sub_tool, "-h", host, "-p", port, "-V", v, "-u", "app", "-P", "app-secret",
                                "-t", "sensors/#", "-C", "1", "-W", "10", "-v"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        subprocess.run([pub_tool, "-h", host, "-p", port, "-V", v, "-u", "s1", "-P", "s1-secret", "-q", "1",
                        "-t", "sensors/s1/temp", "-m", "21.5"], check=True, timeout=10)
        out, err = sub.communicate(timeout=15)
        assert out.strip() == "sensors/s1/temp 21.5", f"{out!r} {err!r}"
        bad = subprocess.run([pub_tool, "-h", host, "-p", port, "-V", v, "-u", "s1", "-P", "wrong",
                              "-t", "sensors/s1/temp", "-m", "x"], capture_output=True, text=True, timeout=20)
        assert bad.returncode != 0
        assert "not authori" in bad.stderr.lower() or "bad user name or password" in bad.stderr.lower(), bad.stderr
