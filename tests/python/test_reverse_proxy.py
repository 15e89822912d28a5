"""MQTT over WebSocket behind a real nginx reverse proxy: with the proxy in the listener's
`trusted_proxies`, the client the per-IP limit counts is the one nginx names in X-Forwarded-For,
not nginx itself. Clients bind to different loopback addresses (127.0.0.2, 127.0.0.3) so that
nginx sees different clients; nginx reaches the broker from 127.0.0.1.

Needs nginx (Debian's nginx-light; scripts/test.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import SourcedClient, free_port, robustmq_bin, wait_listening

pytestmark = pytest.mark.robustmq_only

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _nginx_conf(prefix: Path, port: int, upstream: int) -> Path:
    conf = prefix / "nginx.conf"
    # Runs in the foreground as whoever runs the tests; as root its workers stay root so that
    # they can use the test's private temporary folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /mqtt {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
""")
    return conf


def test_behind_nginx_the_per_ip_limit_counts_the_forwarded_clients(tmp_path):
    assert Path(NGINX).exists(), "nginx missing (apt-get install nginx-light)"
    mqtt_port, ws_port, proxy_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"""data_dir = "{tmp_path / 'data'}"

[limits]
max_connections_per_ip = 1

[[listeners]]
bind = "127.0.0.1:{mqtt_port}"

[[listeners]]
bind = "127.0.0.1:{ws_port}"
kind = "websocket"
trusted_proxies = ["127.0.0.1"]
""")
    log = tmp_path / "broker.log"
    with open(log, "wb") as err:
        broker = subprocess.Popen([str(robustmq_bin()), "--config", str(cfg)], stderr=err,
                                  env={**os.environ, "RUST_LOG": "info"})
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(_nginx_conf(tmp_path, proxy_port, ws_port))],
                             stderr=subprocess.DEVNULL)
    clients = []
    try:
        wait_listening(ws_port, broker, lambda: log.read_text(errors="replace")[-3000:])
        wait_listening(proxy_port, nginx, lambda: (tmp_path / "error.log").read_text(errors="replace"))
        for client_id, source, want in [("a", "127.0.0.2", 0), ("b", "127.0.0.3", 0), ("c", "127.0.0.2", 136)]:
            c = SourcedClient(client_id, source, ws_path="/mqtt")
            clients.append(c)
            # CONNACK 3, server unavailable (MQTT 3.1.1's answer to a limit), which paho reports
            # as reason code 136; a and b come from two addresses, so each is the first of its own.
            assert c.connect(proxy_port) == want, f"{client_id} from {source}"
        text = log.read_text(errors="replace")
        refusals = [l for l in text.splitlines() if "max_connections_per_ip" in l]
        assert refusals and all("peer=127.0.0.2:" in l for l in refusals), text[-3000:]
    finally:
        for c in clients:
            c.close()
        nginx.terminate()
        nginx.wait(10)
        broker.terminate()
        assert broker.wait(10) == 0
