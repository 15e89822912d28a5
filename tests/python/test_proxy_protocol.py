"""MQTT behind a real HAProxy in TCP mode sending the PROXY protocol (v1 `send-proxy` and v2
`send-proxy-v2`), with its TCP health checks (connect, then close without a byte): the broker's
per-IP limit counts the clients HAProxy names, not HAProxy, and the health checks are not
logged as refused connections. Clients bind to different loopback addresses (127.0.0.2,
127.0.0.3); HAProxy reaches the broker from 127.0.0.1, which is the listener's only trusted peer.

Needs haproxy (Debian's package; scripts/test.sh installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import assert_per_ip_limit_counts_sources, free_port, start_logged_broker, wait_listening

pytestmark = pytest.mark.robustmq_only

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _haproxy_conf(path: Path, port: int, upstream: int, send: str) -> Path:
    path.write_text(f"""global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend mqtt
    bind 127.0.0.1:{port}
    default_backend edge
backend edge
    server edge1 127.0.0.1:{upstream} {send} check inter 200ms
""")
    return path


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_behind_haproxy_the_per_ip_limit_counts_the_clients_it_names(tmp_path, send):
    assert Path(HAPROXY).exists(), "haproxy missing (apt-get install haproxy)"
    mqtt_port, proxy_port = free_port(), free_port()
    broker, log = start_logged_broker(tmp_path, f"""data_dir = "{tmp_path / 'data'}"

[limits]
max_connections_per_ip = 1

[[listeners]]
bind = "127.0.0.1:{mqtt_port}"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]
""")
    haproxy_log = tmp_path / "haproxy.log"
    with open(haproxy_log, "wb") as err:
        haproxy = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(_haproxy_conf(tmp_path / "haproxy.cfg", proxy_port, mqtt_port, send))],
            stdout=err, stderr=err)
    try:
        wait_listening(mqtt_port, broker, lambda: log.read_text(errors="replace")[-3000:])
        wait_listening(proxy_port, haproxy, lambda: haproxy_log.read_text(errors="replace"))
        # A few health checks (every 200 ms) reach the broker meanwhile.
        time.sleep(0.5)
        assert_per_ip_limit_counts_sources(proxy_port, log)
        text = log.read_text(errors="replace")
        assert "PROXY protocol handshake failed" not in text, text[-3000:]
    finally:
        haproxy.terminate()
        haproxy.wait(10)
        broker.terminate()
        assert broker.wait(10) == 0
