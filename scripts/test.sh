#!/usr/bin/env bash
# The project's one test command: installs what the tests need, builds the workspace, checks
# formatting (cargo fmt --check) and lints (cargo clippy -D warnings), runs the Rust tests
# (cargo test) and the Python end-to-end tests (pytest + paho-mqtt against the real broker
# binary). Every step after the build runs even when an earlier one failed; exits non-zero if
# anything fails, and always ends with one result line.
#
# Environment:
#   SKIP_APT=1          do not try to install Debian packages
#   SKIP_ARM=1          skip the aarch64 cross build + qemu smoke test (scripts/test-arm.sh)
#   SKIP_32BIT=1        skip the armv7 (32-bit) unit tests under qemu-arm (scripts/test-32bit.sh)
#   SKIP_DEB=1          skip the .deb build + scratch-root install test (scripts/test-deb.sh)
#   SKIP_PGO=1          skip the profile-guided release build (scripts/build-pgo.sh) and its run
#   PYTEST_ARGS="..."   extra arguments for pytest (e.g. "-k retained -x")
#   CHROMIUM_BIN        the chromium the WebSocket browser test drives (/usr/bin/chromium)
#   MQTT_TEST_BROKER    "robustmq" (default) or "mosquitto" for the Python tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==== %s ====\n' "$*"; }

# ---------------------------------------------------------------------------------------------
section "System packages"
need_pkgs=()
[ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
# The RobustMQ server of tests/tests/sync_robustmq.rs is unpacked with xz (../shared/robustmq/run.sh).
command -v xz >/dev/null 2>&1 || need_pkgs+=(xz-utils)
# tests/tests/ops_http.rs: `promtool check metrics` on /metrics, HTTPS through curl, and the
# status page in headless chromium.
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
# The WebSocket tests (tests/websocket): MQTT.js under Node and in headless chromium, openssl
# for their certificate.
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# tests/python/test_reverse_proxy.py: WebSocket clients through a real nginx (X-Forwarded-For).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_pkgs+=(nginx-light)
# tests/python/test_proxy_protocol.py: MQTT clients through a real HAProxy (PROXY protocol).
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need_pkgs+=(haproxy)
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
    need_pkgs+=(python3)
fi
# `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_pkgs+=(python3-venv)
fi
if [ "${#need_pkgs[@]}" -gt 0 ] && [ "${SKIP_APT:-0}" != 1 ]; then
    echo "installing: ${need_pkgs[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
    # Debian's python3-venv belongs to /usr/bin/python3; use it if the default one still lacks ensurepip.
    if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 && [ -x /usr/bin/python3 ]; then
        PY=/usr/bin/python3
    fi
else
    echo "all present"
fi

# ---------------------------------------------------------------------------------------------
section "Python venv (.venv)"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
REQ="$ROOT/tests/python/requirements.txt"
STAMP="$VENV/.requirements.sha"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
fi
"$VENV/bin/python" -c 'import paho.mqtt, pytest, pytest_timeout; print("paho-mqtt", paho.mqtt.__version__, "pytest", pytest.__version__)'

# ---------------------------------------------------------------------------------------------
section "Machine: disk and RobustMQ's fixed ports"
# Incremental caches are of no use to a one-off CI build and cost ~0.9 GB of target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h "$ROOT" | tail -n 1
# RobustMQ (tests/tests/sync_robustmq.rs) binds fixed ports 58080, 1228, 1778 and 1885. 58080
# lies in Linux's ephemeral range, so a client socket of an earlier test (or its TIME_WAIT, for
# 60 s) can hold it and RobustMQ then fails with "Address already in use" (seen in CI). Keep
# them out of the ephemeral range where this machine lets us; the test also waits for them.
RESERVED=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$RESERVED" ]; then
    cur="$(cat "$RESERVED")"
    if echo "${cur:+$cur,}1228,1778,1885,58080" > "$RESERVED" 2>/dev/null; then
        echo "reserved ports: $(cat "$RESERVED")"
    else
        echo "could not reserve RobustMQ's ports (kept: $cur)"
    fi
else
    echo "$RESERVED is not writable: RobustMQ's ports are not reserved"
fi

# ---------------------------------------------------------------------------------------------
section "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

# ---------------------------------------------------------------------------------------------
status=0
failed=()
fail() { echo "$1 FAILED"; failed+=("$1"); status=1; }

section "cargo fmt --all -- --check"
if ! cargo fmt --all -- --check; then
    fail "cargo fmt"
fi

# ---------------------------------------------------------------------------------------------
section "cargo clippy --workspace --all-targets -- -D warnings"
if ! cargo clippy --workspace --all-targets -- -D warnings; then
    fail "cargo clippy"
fi

# ---------------------------------------------------------------------------------------------
section "cargo test --workspace"
# --no-fail-fast: one failing test binary must not hide the results of the others.
if ! cargo test --workspace --no-fail-fast; then
    fail "cargo test"
fi

# ---------------------------------------------------------------------------------------------
section "pytest tests/python"
export ROBUSTMQ_EDGE_BIN="${ROBUSTMQ_EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/robustmq-edge}"
set +e
# shellcheck disable=SC2086
"$VENV/bin/python" -m pytest tests/python -q -p no:cacheprovider ${PYTEST_ARGS:-}
rc=$?
set -e
case "$rc" in
    0) ;;
    5) echo "pytest collected NO tests: treating as a failure"; fail "pytest" ;;
    *) echo "pytest exited with $rc"; fail "pytest" ;;
esac

# ---------------------------------------------------------------------------------------------
# MQTT over WebSocket with the real MQTT.js (npm), from Node and from a page in headless
# chromium, against the broker binary. `npm ci` runs when package-lock.json changed.
section "WebSocket: MQTT.js from Node and headless chromium (tests/websocket)"
WSDIR="$ROOT/tests/websocket"
ws_ok=1
want="$(sha256sum "$WSDIR/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$WSDIR/node_modules/.lock.sha" 2>/dev/null || true)" != "$want" ]; then
    if (cd "$WSDIR" && npm ci --no-audit --no-fund); then
        echo "$want" > "$WSDIR/node_modules/.lock.sha"
    else
        ws_ok=0
    fi
fi
if [ "$ws_ok" = 1 ] && (cd "$WSDIR" && ROBUSTMQ_EDGE_BIN="$ROBUSTMQ_EDGE_BIN" npm test); then
    :
else
    fail "websocket (MQTT.js)"
fi

# ---------------------------------------------------------------------------------------------
# ARM: the aarch64 binary (cross-built, arm-smoke profile) serves MQTT and keeps data under qemu.
if [ "${SKIP_ARM:-0}" != 1 ]; then
    section "ARM: aarch64 cross build + qemu smoke (scripts/test-arm.sh)"
    if ! scripts/test-arm.sh; then fail "ARM smoke"; fi
fi

# ---------------------------------------------------------------------------------------------
# 32-bit: the armhf package's target, where usize is 4 bytes; the unit tests under qemu-arm.
if [ "${SKIP_32BIT:-0}" != 1 ]; then
    section "armv7 (32-bit) unit tests under qemu-arm (scripts/test-32bit.sh)"
    if ! scripts/test-32bit.sh; then fail "32-bit unit tests"; fi
fi

# ---------------------------------------------------------------------------------------------
# The .deb (debug build), installed into a scratch root; the systemd unit verified.
if [ "${SKIP_DEB:-0}" != 1 ]; then
    section "Debian package + systemd unit (scripts/test-deb.sh)"
    if ! DEB_PROFILE=dev scripts/test-deb.sh; then fail "deb package"; fi
fi

# ---------------------------------------------------------------------------------------------
# The profile-guided release build the packages ship (instrumented build, training, rebuild),
# then the built binary through the same workloads as a check: every listener kind, QoS 0/1/2,
# sync up and down, a backlog across a restart, each edge-bench run checked for loss.
if [ "${SKIP_PGO:-0}" != 1 ]; then
    section "Profile-guided release build (scripts/build-pgo.sh) + its binary through scripts/pgo-train.sh"
    if pgo_bin="$(scripts/build-pgo.sh | tail -1)" && [ -x "$pgo_bin" ] && scripts/pgo-train.sh "$pgo_bin"; then
        :
    else
        fail "PGO build"
    fi
fi

section "Result"
if [ "${#failed[@]}" -gt 0 ]; then echo "failed steps: ${failed[*]}"; fi
if [ "$status" -eq 0 ]; then echo "all tests passed"; else echo "SOME TESTS FAILED"; fi
exit "$status"
