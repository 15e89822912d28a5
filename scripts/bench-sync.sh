#!/usr/bin/env bash
# Store-and-forward drain benchmark: how fast a backlog of N small messages buffered by the edge
# broker while its upstream was down drains to a local mosquitto, and the edge's memory meanwhile.
#
#   1. builds release binaries (robustmq-edge, edge-bench) unless --no-build;
#   2. registers a persistent QoS 1 subscriber on `edge/#` with a mosquitto (persistence on), then
#      stops that mosquitto: the upstream is down;
#   3. starts robustmq-edge with a [sync] table pointing at it (drain pacing OFF:
#      max_messages_per_sec = 0, max_bytes_per_sec = 0) and publishes N messages of 24 bytes at
#      QoS 1 (edge-bench throughput: 1 publisher, window 64, 1 local subscriber) -> backlog N;
#   4. starts mosquitto again and the counting subscriber (mosquitto_sub -C N, same session);
#      measures the time until the subscriber has N messages AND `sync status --json` shows
#      backlog 0 / acked N; samples the edge's VmRSS every 50 ms and reads VmHWM;
#   5. repeats with pacing on (--paced-rate msgs/s, --paced-n messages) to show the cap holds.
#
# Usage: scripts/bench-sync.sh [--quick] [--n N] [--no-build] [--paced-rate R] [--paced-n N]
#                              [--no-paced] [--out DIR]
#   --quick   N = 100,000 (default 1,000,000)
# Prints a markdown section; --out DIR keeps logs and the section (default: a new /tmp folder).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
MOSQUITTO=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
N=1000000
BUILD=1
PACED_RATE=20000
PACED_N=100000
PACED=1
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N=100000 ;;
        --n) N=$2; shift ;;
        --no-build) BUILD=0 ;;
        --paced-rate) PACED_RATE=$2; shift ;;
        --paced-n) PACED_N=$2; shift ;;
        --no-paced) PACED=0 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
WORK=$(mktemp -d /tmp/edge-sync-bench.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status" 2>/dev/null || true; }
json_num() { grep -o "\"$2\": *[0-9]*" <<<"$1" | head -1 | grep -o '[0-9]*$' || echo 0; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

command -v mosquitto_sub >/dev/null || die "mosquitto_sub missing (apt-get install mosquitto-clients)"
[ -x "$MOSQUITTO" ] || die "$MOSQUITTO missing (apt-get install mosquitto)"
if [ $BUILD = 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p robustmq-edge -p robustmq-edge-bench)
fi
[ -x "$EDGE" ] && [ -x "$BENCH" ] || die "release binaries missing under $TARGET/release"

start_mosquitto() { # $1 dir $2 port -> pid in MQ_PID
    cat >"$1/mosquitto.conf" <<EOF
listener $2 127.0.0.1
allow_anonymous true
persistence true
persistence_location $1/
max_queued_messages 0
max_inflight_messages 1000
autosave_interval 0
EOF
    "$MOSQUITTO" -c "$1/mosquitto.conf" >>"$1/mosquitto.log" 2>&1 &
    MQ_PID=$!
    PIDS+=("$MQ_PID")
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    die "mosquitto did not start on $2"
}

stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# run_drain LABEL N MPS BPS -> sets R_* variables
run_drain() {
    local label=$1 n=$2 mps=$3 bps=$4
    local dir="$WORK/$label"
    mkdir -p "$dir/mq" "$dir/edge"
    local mq_port edge_port
    mq_port=$(free_port)
    edge_port=$(free_port)

    # Persistent subscriber session, then the upstream goes down.
    start_mosquitto "$dir/mq" "$mq_port"
    mosquitto_sub -h 127.0.0.1 -p "$mq_port" -V mqttv5 -q 1 -c -x 3600 -i bench-sync-sub \
        -t 'edge/#' -E
    stop_pid "$MQ_PID"

    cat >"$dir/edge.toml" <<EOF
data_dir = "$dir/edge"
[[listeners]]
bind = "127.0.0.1:$edge_port"
[log]
level = "warn"
[sync]
node_id = "bench"
upstreams = ["tcp://127.0.0.1:$mq_port"]
max_messages_per_sec = $mps
max_bytes_per_sec = $bps
max_backlog_bytes = 1073741824
status_interval_secs = 1
[sync.backoff]
initial_ms = 100
max_ms = 200
[[sync.forward]]
filter = "edge-bench/#"
prefix = "edge/{node_id}/"
qos = 1
EOF
    "$EDGE" --config "$dir/edge.toml" >"$dir/edge.log" 2>&1 &
    local edge_pid=$!
    PIDS+=("$edge_pid")
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$edge_port") 2>/dev/null && break
        sleep 0.05
    done

    log "[$label] publishing $n messages (24 B, QoS 1, window 64) with the upstream down"
    local t_fill0 t_fill1
    t_fill0=$(now)
    "$BENCH" throughput --port "$edge_port" --protocol 5 --qos 1 --payload 24 --window 64 \
        --publishers 1 --subscribers 1 --messages "$n" --deadline-secs 3600 --json \
        >"$dir/fill.json" 2>"$dir/fill.log" || die "[$label] fill failed: $(tail -3 "$dir/fill.log")"
    t_fill1=$(now)
    local st=""
    for _ in $(seq 100); do
        st=$("$EDGE" sync status --config "$dir/edge.toml" --json 2>/dev/null || true)
        [ "$(json_num "$st" backlog_messages)" = "$n" ] && break
        sleep 0.2
    done
    [ "$(json_num "$st" backlog_messages)" = "$n" ] || die "[$label] backlog is not $n: $st"
    R_BACKLOG_BYTES=$(json_num "$st" backlog_bytes)
    R_RSS_BEFORE=$(kib "$edge_pid" VmRSS)
    R_HWM_FILL=$(kib "$edge_pid" VmHWM)
    R_FILL_S=$(calc "$t_fill1 - $t_fill0")

    # Memory sampler (VmRSS every 50 ms) over the drain.
    (peak=0; while kill -0 "$edge_pid" 2>/dev/null; do
        r=$(kib "$edge_pid" VmRSS); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$dir/rss_peak"
        sleep 0.05; done) &
    local sampler=$!
    PIDS+=("$sampler")

    log "[$label] upstream up: draining"
    local t0 t_sub t_done
    t0=$(now)
    start_mosquitto "$dir/mq" "$mq_port"
    mosquitto_sub -h 127.0.0.1 -p "$mq_port" -V mqttv5 -q 1 -c -x 3600 -i bench-sync-sub \
         -t 'edge/#' -C "$n" -F '%P' >"$dir/received" 2>"$dir/sub.log" &
    local sub_pid=$!
    PIDS+=("$sub_pid")
    local deadline=$(( $(date +%s) + 3600 ))
    t_sub=""
    t_done=""
    while :; do
        if [ -z "$t_sub" ] && ! kill -0 "$sub_pid" 2>/dev/null; then t_sub=$(now); fi
        st=$("$EDGE" sync status --config "$dir/edge.toml" --json 2>/dev/null || true)
        if [ -n "$t_sub" ] && [ "$(json_num "$st" backlog_messages)" = 0 ] \
            && [ "$(json_num "$st" acked)" -ge "$n" ]; then
            t_done=$(now)
            break
        fi
        [ "$(date +%s)" -lt $deadline ] || die "[$label] drain did not finish: $st"
        sleep 0.05
    done
    wait "$sub_pid" 2>/dev/null || true
    R_RECEIVED=$(wc -l <"$dir/received")
    R_DISTINCT=$(grep -o 'edge-msg-id:[^ ]*' "$dir/received" | sort -u | wc -l)
    R_DRAIN_S=$(calc "$t_sub - $t0")
    R_STATUS_S=$(calc "$t_done - $t0")
    R_RATE=$(calc "$n / $R_DRAIN_S")
    R_HWM=$(kib "$edge_pid" VmHWM)
    R_RSS_AFTER=$(kib "$edge_pid" VmRSS)
    R_RSS_PEAK_DRAIN=$(cat "$dir/rss_peak" 2>/dev/null || echo "?")
    R_SENT=$(json_num "$st" sent)
    R_REDELIVERED=$(json_num "$st" redelivered)
    kill "$sampler" 2>/dev/null || true
    stop_pid "$edge_pid"
    stop_pid "$MQ_PID"
    [ "$R_RECEIVED" -ge "$n" ] || die "[$label] subscriber got $R_RECEIVED of $n"
    [ "$R_DISTINCT" -eq "$n" ] || die "[$label] $R_DISTINCT distinct edge-msg-id of $n"
    printf '| %s | %s | %s | %.1f | %.2f | %.2f | %.0f | %s | %s | %s | %s | %s | %s |\n' \
        "$label" "$n" "$mps/$bps" "$(calc "$R_BACKLOG_BYTES / 1048576")" "$R_FILL_S" \
        "$R_DRAIN_S" "$R_RATE" "$R_RSS_BEFORE" "$R_RSS_PEAK_DRAIN" "$R_HWM" "$R_SENT" \
        "$R_REDELIVERED" "$R_DISTINCT" >>"$OUT/rows.md"
    log "[$label] drained $n in ${R_DRAIN_S}s (${R_RATE%.*} msgs/s; status backlog 0 after ${R_STATUS_S}s); \
RSS before drain ${R_RSS_BEFORE} KiB, peak during drain ${R_RSS_PEAK_DRAIN} KiB, VmHWM ${R_HWM} KiB; \
sent ${R_SENT}, redelivered ${R_REDELIVERED}, subscriber got ${R_RECEIVED} (${R_DISTINCT} distinct ids)"
}

: >"$OUT/rows.md"
run_drain unpaced "$N" 0 0
if [ $PACED = 1 ]; then
    run_drain paced "$PACED_N" "$PACED_RATE" 0
fi

{
    echo "## Sync backlog drain"
    echo
    echo "\`scripts/bench-sync.sh$( [ "$N" = 100000 ] && echo " --quick")\` ($(date -u +%Y-%m-%d), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), shared; $(uname -sr);"
    echo "$("$EDGE" --version), $("$MOSQUITTO" -h 2>/dev/null | head -1), rustc $(rustc --version | cut -d' ' -f2)."
    echo
    echo "The edge buffers N messages (24-byte payload, QoS 1, published by edge-bench with a window of"
    echo "64) while its upstream mosquitto is down; then mosquitto starts and a persistent QoS 1"
    echo "subscriber (mosquitto_sub, already registered) counts the forwarded messages. Drain time is from"
    echo "the upstream's start to the subscriber's N-th message (includes the reconnect, <= 200 ms"
    echo "backoff); sync status then shows backlog 0. Pacing (\`max_messages_per_sec\`/"
    echo "\`max_bytes_per_sec\`, defaults 500 msgs/s and 1 MiB/s) is OFF (0/0) in the first row."
    echo
    echo "| run | N | pacing msgs/s / bytes/s | backlog MiB | fill s | drain s | drain msgs/s | RSS before drain KiB | RSS peak during drain KiB | VmHWM KiB | sent | redelivered | distinct ids received |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$OUT/rows.md"
} >"$OUT/section.md"
cat "$OUT/section.md"
log "logs and section in $OUT"
