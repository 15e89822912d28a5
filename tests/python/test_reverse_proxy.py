"""MQTT over WebSocket behind a real nginx reverse proxy: with the proxy in the listener's
`trusted_proxies`, the client the per-IP limit counts is the one nginx names in X-Forwarded-For
or in an RFC 7239 `Forwarded` header, not nginx itself. Clients bind to different loopback
addresses (127.0.0.2, 127.0.0.3) so that nginx sees different clients; nginx reaches the broker
from 127.0.0.1.

Needs nginx (Debian's nginx-light; scripts/test.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_per_ip_limit_counts_sources, free_port, start_logged_broker, wait_listening

pytestmark = pytest.mark.robustmq_only

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


# How nginx names the client: the de facto header, or RFC 7239's (nginx has no variable for
# it: set by hand, as its documentation shows; a client's own header is replaced).
FORWARDING = {
    "x-forwarded-for": "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "forwarded": 'proxy_set_header Forwarded "for=$remote_addr;proto=$scheme";',
}


def _nginx_conf(prefix: Path, port: int, upstream: int, forwarding: str) -> Path:
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
            {forwarding}
        }}
    }}
}}
""")
    return conf


@pytest.mark.parametrize("header", sorted(FORWARDING))
def test_behind_nginx_the_per_ip_limit_counts_the_forwarded_clients(tmp_path, header):
    assert Path(NGINX).exists(), "nginx missing (apt-get install nginx-light)"
    mqtt_port, ws_port, proxy_port = free_port(), free_port(), free_port()
    broker, log = start_logged_broker(tmp_path, f"""data_dir = "{tmp_path / 'data'}"

[limits]
max_connections_per_ip = 1

[[listeners]]
bind = "127.0.0.1:{mqtt_port}"

[[listeners]]
bind = "127.0.0.1:{ws_port}"
kind = "websocket"
trusted_proxies = ["127.0.0.1"]
""")
    conf = _nginx_conf(tmp_path, proxy_port, ws_port, FORWARDING[header])
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)],
                             stderr=subprocess.DEVNULL)
    try:
        wait_listening(ws_port, broker, lambda: log.read_text(errors="replace")[-3000:])
        wait_listening(proxy_port, nginx, lambda: (tmp_path / "error.log").read_text(errors="replace"))
        assert_per_ip_limit_counts_sources(proxy_port, log, ws_path="/mqtt")
    finally:
        nginx.terminate()
        nginx.wait(10)
        broker.terminate()
        assert broker.wait(10) == 0
