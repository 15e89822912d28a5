#!/usr/bin/env bash
# The training run of a profile-guided build (scripts/build-pgo.sh): drives an instrumented
# robustmq-edge through what a gateway does, so that the profile says which code is hot, which
# runs once and which never runs. LLVM lays the code out by that (see BENCHMARKS.md, "A
# profile-guided build"); code the training never reaches is treated as cold, so every listener
# kind and the sync path are exercised here, not only the benchmark's rows.
#
#   scripts/pgo-train.sh EDGE [WRAPPER...]
#
#   EDGE     the broker binary (instrumented or not: run on a normal build it is a smoke test of
#            the same paths, every edge-bench run checking for loss and duplicates)
#   WRAPPER  a command to run it under, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`
#
# Two brokers from EDGE on 127.0.0.1: an "edge" with a plain, a TLS and a WebSocket listener, the
# HTTP endpoint and a [sync] table forwarding edge-bench/# (one rule with `where` and `window`)
# to a "cloud" broker, which sends a downlink command back. Workloads (edge-bench, divided by
# PGO_SCALE, default 1; 10 suits qemu): idle connections, QoS 0/1/2 throughput at 64 B and 4 KB,
# fan-in and fan-out, MQTT 3.1.1 and 5, latency, TLS, WebSocket, HTTP scrapes, then a persistent
# session's backlog filled, the edge restarted and the backlog drained.
#
# Environment: EDGE_BENCH (default: the workspace's, cargo-built to date in $CARGO_TARGET_DIR/release),
# PGO_PORT (first of 11 ports, default 19890), PGO_SCALE. Needs openssl; mosquitto_pub for the
# downlink step (skipped with a line in the log when missing). Exits non-zero if a step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { sed -n '2,23p' "$0" >&2; exit 2; }
EDGE=$1; shift
WRAP=("$@")
[ -x "$EDGE" ] || { echo "pgo-train: no executable at $EDGE" >&2; exit 1; }
SCALE=${PGO_SCALE:-1}
P=${PGO_PORT:-19890}
BENCH=${EDGE_BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge-bench}
log() { printf '[pgo-train] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
if [ -z "${EDGE_BENCH:-}" ]; then # the workspace's own, brought up to date
    (cd "$ROOT" && cargo build --release -q -p robustmq-edge-bench) >&2
fi
[ -x "$BENCH" ] || die "no edge-bench at $BENCH"

WORK=$(mktemp -d /tmp/pgo-train.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/scripts/make-test-certs.sh" "$WORK" || die "openssl could not make the certificates"

EDGE_PORT=$P TLS_PORT=$((P + 1)) WS_PORT=$((P + 2)) HTTP_PORT=$((P + 3)) CLOUD_PORT=$((P + 10))
cat > "$WORK/edge.toml" <<EOF
data_dir = "$WORK/edge-data"
[[listeners]]
bind = "127.0.0.1:$EDGE_PORT"
[[listeners]]
bind = "127.0.0.1:$TLS_PORT"
[listeners.tls]
cert_file = "$WORK/server.pem"
key_file = "$WORK/server.key"
[[listeners]]
bind = "127.0.0.1:$WS_PORT"
kind = "websocket"
websocket_path = "/mqtt"
[limits]
max_connections = 20000
max_connections_per_ip = 20000
max_queued_messages = 2000000
max_queued_bytes = 4294967296
[http]
bind = "127.0.0.1:$HTTP_PORT"
[log]
level = "warn"
[sync]
node_id = "pgo"
upstreams = ["tcp://127.0.0.1:$CLOUD_PORT"]
[[sync.forward]]
filter = "edge-bench/#"
prefix = "edge/{node_id}/"
qos = 1
[[sync.forward]]
filter = "sensors/#"
where = "temp > 20"
window = { secs = 1, fields = ["temp"], ops = ["avg", "max"] }
qos = 1
[[sync.downlink]]
filter = "cmd/{node_id}/#"
qos = 1
EOF
cat > "$WORK/cloud.toml" <<EOF
data_dir = "$WORK/cloud-data"
[[listeners]]
bind = "127.0.0.1:$CLOUD_PORT"
[http]
enabled = false
[log]
level = "warn"
EOF

wait_port() {
    for _ in $(seq 1200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
start() { # name -> pid in BP
    "${WRAP[@]}" "$EDGE" --config "$WORK/$1.toml" >> "$WORK/$1.log" 2>&1 &
    BP=$!
    PIDS+=("$BP")
    local port=$EDGE_PORT
    [ "$1" = cloud ] && port=$CLOUD_PORT
    wait_port "$port" || die "$1 broker did not start: $(tail -3 "$WORK/$1.log")"
}
stop() { # pid: SIGTERM and a clean exit, which is when the profile is written
    kill -TERM "$1"
    wait "$1" || die "broker $1 exited with $? on SIGTERM"
}
n() { echo $(( $1 / SCALE > 10 ? $1 / SCALE : 10 )); }
b() { # step name, edge-bench arguments
    local name=$1; shift
    log "$name"
    "$BENCH" "$@" --broker-pid "$EDGE_PID" > "$WORK/bench.out" 2>&1 \
        || die "$name failed: $(tail -3 "$WORK/bench.out")"
}
http_get() { # path: a plain HTTP/1.1 GET on the HTTP endpoint, the status line checked
    exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT"
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3
    local status
    read -r status <&3
    cat <&3 > "$WORK/http.body"
    exec 3<&-
    [[ $status == *" 200 "* ]] || die "GET $1: $status"
}

start cloud
CLOUD_PID=$BP
start edge
EDGE_PID=$BP
b "idle connections" connections --port $EDGE_PORT --count "$(n 2000)"
b "idle connections with keep-alive" connections --port $EDGE_PORT --count "$(n 500)" --keep-alive 60
for q in 0 1 2; do
    b "QoS $q 64 B 1 -> 1" throughput --port $EDGE_PORT --qos $q --payload 64 --messages "$(n 100000)"
    b "QoS $q 4 KB 1 -> 1, MQTT 5" throughput --port $EDGE_PORT --qos $q --payload 4096 --protocol 5 \
        --messages "$(n 20000)"
    b "QoS $q 100 -> 1" throughput --port $EDGE_PORT --qos $q --payload 64 --publishers 100 \
        --messages "$(n 50000)"
    b "QoS $q 1 -> 100" throughput --port $EDGE_PORT --qos $q --payload 64 --subscribers 100 \
        --messages "$(n 2000)"
done
for q in 0 1; do
    b "QoS $q latency" latency --port $EDGE_PORT --qos $q --payload 64 --rate "$(n 2000)" --duration-secs 2
done
b "TLS QoS 1" throughput --port $TLS_PORT --tls-ca "$WORK/ca.pem" --qos 1 --payload 256 --messages "$(n 20000)"
b "WebSocket QoS 1" throughput --port $WS_PORT --websocket /mqtt --qos 1 --payload 256 --messages "$(n 20000)"
log "HTTP: metrics, status, status page"
for _ in 1 2 3; do http_get /metrics; http_get /api/v1/status; http_get /; done
if command -v mosquitto_pub >/dev/null; then
    log "sensors through where + window; a downlink command from the cloud"
    for t in 18 21 25 30; do
        mosquitto_pub -h 127.0.0.1 -p $EDGE_PORT -q 1 -t sensors/s1/temp -m "{\"temp\": $t}"
    done
    mosquitto_pub -h 127.0.0.1 -p $CLOUD_PORT -q 1 -t cmd/pgo/valve -m open
    # The uplink must have carried messages up and the downlink the command down.
    for _ in $(seq 100); do
        http_get /metrics
        grep -q '^robustmq_edge_sync_downlink_delivered_total [1-9]' "$WORK/http.body" && break
        sleep 0.1
    done
    grep -q '^robustmq_edge_sync_acked_total [1-9]' "$WORK/http.body" || die "the uplink acknowledged nothing"
    grep -q '^robustmq_edge_sync_downlink_delivered_total [1-9]' "$WORK/http.body" \
        || die "the downlink command did not arrive"
else
    log "mosquitto_pub missing: the where/window and downlink step is skipped"
fi
b "backlog fill" backlog-fill --port $EDGE_PORT --messages "$(n 200000)"
stop "$EDGE_PID"
start edge
EDGE_PID=$BP
b "backlog drain after a restart" backlog-drain --port $EDGE_PORT --messages "$(n 200000)"
stop "$EDGE_PID"
stop "$CLOUD_PID"
PIDS=()
log "done"
