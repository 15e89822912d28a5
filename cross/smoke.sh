#!/usr/bin/env bash
# Runs a cross-built robustmq-edge under qemu user-mode emulation and checks it with real
# MQTT clients (mosquitto_pub / mosquitto_sub), on 127.0.0.1 only.
#
#   cross/smoke.sh [TARGET] [BINARY]
#
# TARGET defaults to aarch64-unknown-linux-gnu; BINARY to the file cross/build.sh printed
# (target/TARGET/release/robustmq-edge, or target/debian-rustc/... when built with Debian's
# compiler). Installs qemu-user and mosquitto-clients with apt-get when missing.
#
# Checks: print-config runs; the broker serves MQTT 3.1.1 and 5.0 QoS 1 round trips; a QoS 1
# retained message acknowledged before `kill -9` is there after a restart on the same data dir.
# With SMOKE_E2E=1 it then runs the Rust end-to-end suite (tests/, rumqttc clients) against
# the emulated binary, all but tests/memory.rs (RSS under qemu is mostly qemu's); about 2.5
# minutes for aarch64.
set -euo pipefail

TARGET="${1:-aarch64-unknown-linux-gnu}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$TARGET" in
    aarch64-unknown-linux-gnu) QEMU=qemu-aarch64; SYSROOT=/usr/aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) QEMU=qemu-arm; SYSROOT=/usr/arm-linux-gnueabihf ;;
    *) echo "unsupported target '$TARGET'" >&2; exit 2 ;;
esac
BIN="${2:-}"
if [ -z "$BIN" ]; then
    for dir in "${CARGO_TARGET_DIR:-$ROOT/target}" "$ROOT/target" "$ROOT/target/debian-rustc"; do
        if [ -x "$dir/$TARGET/release/robustmq-edge" ]; then BIN="$dir/$TARGET/release/robustmq-edge"; break; fi
    done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "no $TARGET binary found: run cross/build.sh $TARGET" >&2; exit 2; }

log() { printf '[cross/smoke] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
need=()
command -v "$QEMU" >/dev/null || need+=(qemu-user)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Loader and libraries both from the cross sysroot: with only -L, the loader comes from the
# sysroot but libc may be found in a multiarch /lib/<triple> of another version, and such a mix
# hangs in pthread_create (seen with libc6-arm64-cross 2.36-8cross1 + libc6:arm64 2.36-9).
RUN=("$QEMU" -L "$SYSROOT" -E "LD_LIBRARY_PATH=$SYSROOT/lib" "$BIN")

log "binary: $BIN ($(stat -c %s "$BIN") bytes)"
file "$BIN" 2>/dev/null || true
"${RUN[@]}" --version || true
"${RUN[@]}" print-config > "$WORK/printed.toml"
log "print-config: $(wc -l < "$WORK/printed.toml") lines"

start() {
    "${RUN[@]}" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >> "$WORK/broker.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/broker.log" >&2; echo "broker exited" >&2; exit 1; }
        sleep 0.1
    done
    cat "$WORK/broker.log" >&2; echo "broker did not listen on $PORT" >&2; exit 1
}

fail() { echo "SMOKE FAILED: $*" >&2; echo "--- broker log ---" >&2; cat "$WORK/broker.log" >&2; exit 1; }

start
T0=$(date +%s.%N)
for v in mqttv311 mqttv5; do
    mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$v" -q 1 -t "smoke/$v" -C 1 -W 20 > "$WORK/sub-$v.out" &
    SUB=$!
    sleep 1
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$v" -q 1 -t "smoke/$v" -m "hello-$v" || fail "publish $v"
    wait "$SUB" || fail "subscriber $v got nothing"
    [ "$(cat "$WORK/sub-$v.out")" = "hello-$v" ] || fail "subscriber $v got '$(cat "$WORK/sub-$v.out")'"
    log "$v QoS 1 round trip: ok"
done
mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -r -t smoke/retained -m kept || fail "retained publish"
kill -KILL "$PID"; wait "$PID" 2>/dev/null || true; PID=""
log "killed with SIGKILL after the retained PUBACK; restarting on the same data dir"
start
got="$(mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t smoke/retained -C 1 -W 20)" || fail "no retained message after restart"
[ "$got" = kept ] || fail "retained after restart: '$got'"
log "retained QoS 1 message survived kill -9: ok"
kill -TERM "$PID"; STATUS=0; wait "$PID" || STATUS=$?; PID=""
[ "$STATUS" = 0 ] || fail "SIGTERM exit status $STATUS"
log "SIGTERM: clean exit"
log "SMOKE OK: $TARGET under $QEMU ($(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$T0}") s)"

if [ "${SMOKE_E2E:-0}" = 1 ]; then
    WRAPPER="$WORK/robustmq-edge-$TARGET"
    # exec keeps the pid, so the harness's SIGTERM/SIGKILL reach qemu (which passes them on).
    printf '#!/bin/sh\nexec %s -L %s -E LD_LIBRARY_PATH=%s/lib %s "$@"\n' \
        "$QEMU" "$SYSROOT" "$SYSROOT" "$BIN" > "$WRAPPER"
    chmod +x "$WRAPPER"
    # Every test file but memory.rs: its RSS bounds would measure qemu (~35 MB of its own and
    # its translated code), not the broker.
    TESTS=()
    for t in "$ROOT"/tests/tests/*.rs; do
        name="$(basename "$t" .rs)"
        [ "$name" = memory ] || TESTS+=(--test "$name")
    done
    log "running the Rust e2e suite (but tests/memory.rs) against $WRAPPER"
    (cd "$ROOT" && ROBUSTMQ_EDGE_BIN="$WRAPPER" cargo test -p robustmq-edge-e2e --no-fail-fast "${TESTS[@]}")
    log "E2E OK under $QEMU"
fi
