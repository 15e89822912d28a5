#!/usr/bin/env bash
# MQTT over TLS, ours against mosquitto in the same run: both brokers serve a TLS listener with
# the same certificate (a fresh CA and a P-256 server certificate for 127.0.0.1, made here with
# openssl), and `edge-bench --tls-ca` measures, alternating the brokers round by round:
# throughput QoS 0 / QoS 1 at 64 B and QoS 1 at 4 KB (1 -> 1), QoS 1 latency at 10,000 msg/s,
# and the broker's RSS per idle TLS connection (2,000 of them). Ours durable (default config),
# mosquitto acknowledging from memory (persistence off), as in scripts/bench.sh's table.
#
# Usage: scripts/bench-tls.sh [--rounds R] [--no-build]
# (wss:// is measured against ours only, with `edge-bench --websocket /mqtt --tls-ca`: Debian's
# mosquitto 2.0.11 serves no WebSocket listener.) Nothing else heavy may run meanwhile.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
PORT_OURS=${BENCH_PORT_OURS:-21893}
PORT_MOSQ=${BENCH_PORT_MOSQ:-21894}
ROUNDS=3
BUILD=1
CONNS=2000
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ $BUILD = 1 ]; then
    (cd "$ROOT" && cargo build --release -p robustmq-edge -p robustmq-edge-bench)
fi
[ -x "$EDGE" ] && [ -x "$BENCH" ] || die "release binaries missing (build first)"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || die "mosquitto missing (apt-get install mosquitto)"
command -v openssl >/dev/null || die "openssl missing (apt-get install openssl)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d /tmp/edge-bench-tls.XXXXXX)
trap 'stop; rm -rf "$WORK/data"' EXIT

# ---- certificates ------------------------------------------------------------------------------
"$ROOT/scripts/make-test-certs.sh" "$WORK" || die "openssl could not make the certificates"

# ---- brokers -----------------------------------------------------------------------------------
cat > "$WORK/ours.toml" <<EOF
data_dir = "$WORK/data"
[[listeners]]
bind = "127.0.0.1:$PORT_OURS"
[listeners.tls]
cert_file = "$WORK/server.pem"
key_file = "$WORK/server.key"
[limits]
max_connections = 20000
max_connections_per_ip = 20000
max_queued_messages = 2000000
max_queued_bytes = 4294967296
[http]
bind = "127.0.0.1:$((PORT_OURS + 1000))"
EOF
cat > "$WORK/mosquitto.conf" <<EOF
listener $PORT_MOSQ 127.0.0.1
certfile $WORK/server.pem
keyfile $WORK/server.key
allow_anonymous true
max_connections -1
max_inflight_messages 64
set_tcp_nodelay true
max_queued_messages 2000000
persistence false
log_dest stderr
log_type error
user root
EOF

pid=""
start() { # ours|mosquitto
    local port
    rm -rf "$WORK/data"
    if [ "$1" = ours ]; then
        port=$PORT_OURS; "$EDGE" --config "$WORK/ours.toml" >"$WORK/ours.log" 2>&1 &
    else
        port=$PORT_MOSQ; "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
    die "$1 did not listen on $port (see $WORK/$1.log)"
}
stop() {
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    pid=""
}

# One edge-bench run with --json; prints the value of the JSON field $1 (a number).
field() { # field args...
    local f=$1; shift
    "$BENCH" "$@" --tls-ca "$WORK/ca.pem" --json 2>/dev/null \
        | sed -n "s/.*\"$f\":\([0-9.]*\).*/\1/p" | head -1
}

declare -A R
measure() { # broker round
    local b=$1 r=$2 port
    port=$([ "$b" = ours ] && echo $PORT_OURS || echo $PORT_MOSQ)
    for spec in "q0-64:0:64:1000000" "q1-64:1:64:300000" "q1-4k:1:4096:100000"; do
        IFS=: read -r name qos size n <<< "$spec"
        start "$b"
        R[$b:$r:$name]=$(field delivered_per_s throughput --port "$port" --qos "$qos" --payload "$size" --messages "$n")
        stop
    done
    start "$b"
    local lat
    lat=$("$BENCH" latency --port "$port" --qos 1 --payload 64 --rate 10000 --duration-secs 10 \
        --tls-ca "$WORK/ca.pem" --json 2>/dev/null)
    R[$b:$r:p50]=$(echo "$lat" | sed -n 's/.*"p50":\([0-9]*\).*/\1/p')
    R[$b:$r:p99]=$(echo "$lat" | sed -n 's/.*"p99":\([0-9]*\).*/\1/p')
    stop
    start "$b"
    R[$b:$r:conn]=$(field bytes_per_conn connections --port "$port" --count $CONNS --broker-pid "$pid")
    stop
}

for r in $(seq "$ROUNDS"); do
    for b in ours mosquitto; do
        log "round $r: $b"
        measure "$b" "$r"
    done
done

ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
printf '| round | metric | ours | mosquitto | ours / mosquitto |\n|---|---|---:|---:|---:|\n'
for r in $(seq "$ROUNDS"); do
    for m in "q0-64:throughput QoS 0, 64 B (msg/s)" "q1-64:throughput QoS 1, 64 B (msg/s)" \
             "q1-4k:throughput QoS 1, 4 KB (msg/s)" "p50:QoS 1 latency p50 at 10k msg/s (us)" \
             "p99:QoS 1 latency p99 at 10k msg/s (us)" "conn:RSS per idle connection (bytes)"; do
        key=${m%%:*}; label=${m#*:}
        o=${R[ours:$r:$key]:-}; q=${R[mosquitto:$r:$key]:-}
        printf '| %s | %s | %s | %s | %s |\n' "$r" "$label" "${o:--}" "${q:--}" "$(ratio "$o" "$q")"
    done
done
log "logs in $WORK"
