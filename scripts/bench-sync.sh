#!/usr/bin/env bash
# Store-and-forward drain benchmark: how fast a backlog of N small messages, buffered by the edge
# broker while its upstream was unreachable, drains to a local mosquitto, and the edge's memory.
#
#   1. builds release binaries (robustmq-edge, edge-bench) unless --no-build;
#   2. starts mosquitto and a counting QoS 1 subscriber on `edge/#` (mosquitto_sub -C N);
#   3. starts robustmq-edge with a [sync] table whose upstream is a port nothing listens on (drain
#      pacing OFF: max_messages_per_sec = 0, max_bytes_per_sec = 0) and publishes N messages of
#      24 bytes at QoS 1 (edge-bench throughput: 1 publisher, window 64, 1 local subscriber);
#   4. stops the edge (SIGTERM) and starts it again pointing at the mosquitto; measures the time
#      until the subscriber has N messages (every edge-msg-id checked) and `sync status --json`
#      shows backlog 0 / acked N; samples the edge's VmRSS every 50 ms and reads VmHWM;
#   5. repeats with pacing on (--paced-rate msgs/s, --paced-n messages) to show the cap holds;
#   6. drains a --rmq-n backlog (default 100,000) to a real RobustMQ 0.4.11 (../shared/robustmq,
#      fresh data folder, 3 partitions, admin/robustmq) and, in the same run, the same backlog to
#      mosquitto, so the two rows compare. The RobustMQ subscriber is mosquitto_sub over MQTT 3.1.1
#      (libmosquitto refuses RobustMQ's v5 CONNACK, whose Maximum QoS 2 the spec forbids), so it
#      checks distinct payloads instead of edge-msg-id.
#
# Usage: scripts/bench-sync.sh [--quick] [--n N] [--no-build] [--paced-rate R] [--paced-n N]
#                              [--no-paced] [--rmq-n N] [--no-robustmq] [--out DIR]
#   --quick   N = 100,000 (default 1,000,000)
# Prints a markdown section (also in OUT/section.md; OUT defaults to a new /tmp folder).
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
RMQ_N=100000
RMQ=1
RMQ_RUN=${ROBUSTMQ_RUN:-$ROOT/../shared/robustmq/run.sh}
OUT=""
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N=100000 ;;
        --n) N=$2; shift ;;
        --no-build) BUILD=0 ;;
        --paced-rate) PACED_RATE=$2; shift ;;
        --paced-n) PACED_N=$2; shift ;;
        --no-paced) PACED=0 ;;
        --rmq-n) RMQ_N=$2; shift ;;
        --no-robustmq) RMQ=0 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
WORK=$(mktemp -d /tmp/edge-sync-bench.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Monotonic seconds (the wall clock of a VM may jump).
now() { cut -d' ' -f1 /proc/uptime; }
calc() { python3 -c "print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status" 2>/dev/null || true; }
json_num() { grep -o "\"$2\": *[0-9]*" <<<"$1" | head -1 | grep -o '[0-9]*$' || echo 0; }

PIDS=()
RMQ_DIRS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for d in "${RMQ_DIRS[@]}"; do "$RMQ_RUN" stop "$d" 2>/dev/null || true; done
}
trap cleanup EXIT

command -v mosquitto_sub >/dev/null || die "mosquitto_sub missing (apt-get install mosquitto-clients)"
[ -x "$MOSQUITTO" ] || die "$MOSQUITTO missing (apt-get install mosquitto)"
if [ $BUILD = 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p robustmq-edge -p robustmq-edge-bench)
fi
[ -x "$EDGE" ] && [ -x "$BENCH" ] || die "release binaries missing under $TARGET/release"

wait_port() {
    for _ in $(seq 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.025
    done
    return 1
}

stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

start_mosquitto() { # $1 dir $2 port -> pid in MQ_PID
    cat >"$1/mosquitto.conf" <<EOF
listener $2 127.0.0.1
allow_anonymous true
user $(id -un)
max_queued_messages 0
max_inflight_messages 1000
log_dest file $1/mosquitto.log
log_type error
log_type warning
log_type subscribe
EOF
    "$MOSQUITTO" -c "$1/mosquitto.conf" >>"$1/mosquitto.out" 2>&1 &
    MQ_PID=$!
    PIDS+=("$MQ_PID")
    wait_port "$2" || die "mosquitto did not start on $2"
}

edge_config() { # $1 file, $2 data dir, $3 edge port, $4 upstream port, $5 msgs/s, $6 bytes/s, [$7 extra sync keys]
    cat >"$1" <<EOF
data_dir = "$2"
[[listeners]]
bind = "127.0.0.1:$3"
[log]
level = "warn"
[sync]
node_id = "bench"
upstreams = ["tcp://127.0.0.1:$4"]
max_messages_per_sec = $5
max_bytes_per_sec = $6
max_backlog_bytes = 1073741824
status_interval_secs = 1
${7:-}
[sync.backoff]
initial_ms = 100
max_ms = 200
[[sync.forward]]
filter = "edge-bench/#"
prefix = "edge/{node_id}/"
qos = 1
EOF
}

# run_drain LABEL N MPS BPS [UPSTREAM]: fills a backlog while the upstream is unreachable (the
# edge points at a port nothing listens on), stops the edge (SIGTERM), starts it again pointing at
# the running upstream (mosquitto, or robustmq), whose counting subscriber is already subscribed,
# and times the drain.
run_drain() {
    local label=$1 n=$2 mps=$3 bps=$4 upstream=${5:-mosquitto}
    local dir="$WORK/$label"
    mkdir -p "$dir/mq" "$dir/edge"
    local mq_port edge_port dead_port up_pid extra=""
    mq_port=$(free_port)
    edge_port=$(free_port)
    dead_port=$(free_port)

    if [ "$upstream" = robustmq ]; then
        RMQ_DIRS+=("$dir/rmq")
        "$RMQ_RUN" start "$dir/rmq" "$mq_port" >"$dir/rmq.out" 2>&1 \
            || die "[$label] robustmq did not start: $(tail -3 "$dir/rmq.out")"
        up_pid=$(cat "$dir/rmq/server.pid")
        extra='username = "admin"
password = "robustmq"'
        # Over 3.1.1 (see the header); the payload (publisher, sequence, time) identifies a message.
        # RobustMQ refuses 3.1.1 client ids over 23 characters (identifier rejected).
        mosquitto_sub -h 127.0.0.1 -p "$mq_port" -V mqttv311 -q 1 -i "bsync-rmq-$$" \
            -u admin -P robustmq -t 'edge/#' -C "$n" -F 'edge-msg-id:%x' >"$dir/received" 2>"$dir/sub.log" &
        local sub_pid=$!
        PIDS+=("$sub_pid")
        sleep 2 # no subscription log to watch; RobustMQ answers SUBACK well within this
        kill -0 "$sub_pid" 2>/dev/null || die "[$label] subscriber ended: $(cat "$dir/sub.log")"
    else
        start_mosquitto "$dir/mq" "$mq_port"
        up_pid=$MQ_PID
        mosquitto_sub -h 127.0.0.1 -p "$mq_port" -V mqttv5 -q 1 -i "bench-sync-sub-$label" \
            -t 'edge/#' -C "$n" -F '%P' >"$dir/received" 2>"$dir/sub.log" &
        local sub_pid=$!
        PIDS+=("$sub_pid")
        for _ in $(seq 400); do
            grep -q "bench-sync-sub-$label 1 edge/#" "$dir/mq/mosquitto.log" 2>/dev/null && break
            sleep 0.025
        done
        grep -q "bench-sync-sub-$label 1 edge/#" "$dir/mq/mosquitto.log" \
            || die "[$label] counting subscriber not subscribed"
    fi

    edge_config "$dir/fill.toml" "$dir/edge" "$edge_port" "$dead_port" "$mps" "$bps" "$extra"
    "$EDGE" --config "$dir/fill.toml" >"$dir/edge-fill.log" 2>&1 &
    local edge_pid=$!
    PIDS+=("$edge_pid")
    wait_port "$edge_port" || die "[$label] edge did not start"

    log "[$label] publishing $n messages (24 B, QoS 1, window 64) with the upstream unreachable"
    local t_fill0 t_fill1
    t_fill0=$(now)
    "$BENCH" throughput --port "$edge_port" --protocol 5 --qos 1 --payload 24 --window 64 \
        --publishers 1 --subscribers 1 --messages "$n" --deadline-secs 3600 --json \
        >"$dir/fill.json" 2>"$dir/fill.log" || die "[$label] fill failed: $(tail -3 "$dir/fill.log")"
    t_fill1=$(now)
    local st=""
    for _ in $(seq 100); do
        st=$("$EDGE" sync status --config "$dir/fill.toml" --json 2>/dev/null || true)
        [ "$(json_num "$st" backlog_messages)" = "$n" ] && break
        sleep 0.2
    done
    [ "$(json_num "$st" backlog_messages)" = "$n" ] || die "[$label] backlog is not $n: $st"
    R_BACKLOG_BYTES=$(json_num "$st" backlog_bytes)
    R_HWM_FILL=$(kib "$edge_pid" VmHWM)
    R_FILL_S=$(calc "$t_fill1 - $t_fill0")
    stop_pid "$edge_pid"

    log "[$label] edge restarted with the upstream reachable: draining"
    edge_config "$dir/drain.toml" "$dir/edge" "$edge_port" "$mq_port" "$mps" "$bps" "$extra"
    local t0 t_listen t_sub t_done
    t0=$(now)
    "$EDGE" --config "$dir/drain.toml" >"$dir/edge-drain.log" 2>&1 &
    edge_pid=$!
    PIDS+=("$edge_pid")
    # Memory sampler (VmRSS every 50 ms) over the drain.
    (
        peak=0
        while kill -0 "$edge_pid" 2>/dev/null; do
            r=$(kib "$edge_pid" VmRSS)
            if [ -n "$r" ] && [ "$r" -gt "$peak" ]; then peak=$r; echo "$peak" >"$dir/rss_peak"; fi
            sleep 0.05
        done
    ) &
    local sampler=$!
    PIDS+=("$sampler")
    wait_port "$edge_port" || die "[$label] edge did not restart"
    t_listen=$(now)
    local deadline=$(( $(date +%s) + 3600 ))
    t_sub=""
    t_done=""
    while :; do
        if [ -z "$t_sub" ] && ! kill -0 "$sub_pid" 2>/dev/null; then t_sub=$(now); fi
        st=$("$EDGE" sync status --config "$dir/drain.toml" --json 2>/dev/null || true)
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
    R_START_S=$(calc "$t_listen - $t0")
    R_DRAIN_S=$(calc "$t_sub - $t0")
    R_STATUS_S=$(calc "$t_done - $t0")
    R_RATE=$(calc "$n / $R_DRAIN_S")
    R_HWM=$(kib "$edge_pid" VmHWM)
    R_RSS_PEAK_DRAIN=$(cat "$dir/rss_peak" 2>/dev/null || echo "?")
    R_SENT=$(json_num "$st" sent)
    R_REDELIVERED=$(json_num "$st" redelivered)
    R_UP_RSS=$(kib "$up_pid" VmRSS)
    stop_pid "$edge_pid"
    kill "$sampler" 2>/dev/null || true
    if [ "$upstream" = robustmq ]; then "$RMQ_RUN" stop "$dir/rmq"; else stop_pid "$MQ_PID"; fi
    [ "$R_RECEIVED" -ge "$n" ] || die "[$label] subscriber got $R_RECEIVED of $n"
    [ "$R_DISTINCT" -eq "$n" ] || die "[$label] $R_DISTINCT distinct edge-msg-id of $n"
    printf '| %s | %s | %s | %s | %.1f | %.2f | %.2f | %.2f | %.0f | %s | %s | %s | %s | %s | %s |\n' \
        "$label" "$upstream ($(( R_UP_RSS / 1024 )) MiB)" "$n" "$mps / $bps" "$(calc "$R_BACKLOG_BYTES / 1048576")" "$R_FILL_S" \
        "$R_START_S" "$R_DRAIN_S" "$R_RATE" "$R_HWM_FILL" "$R_RSS_PEAK_DRAIN" "$R_HWM" "$R_SENT" \
        "$R_REDELIVERED" "$R_DISTINCT" >>"$OUT/rows.md"
    log "[$label] drained $n in ${R_DRAIN_S}s from the restart (listening after ${R_START_S}s;" \
        "${R_RATE%.*} msgs/s; status backlog 0 after ${R_STATUS_S}s); VmHWM filling ${R_HWM_FILL} KiB;" \
        "draining: VmRSS peak ${R_RSS_PEAK_DRAIN} KiB, VmHWM ${R_HWM} KiB; sent ${R_SENT}," \
        "redelivered ${R_REDELIVERED}; subscriber got ${R_RECEIVED} (${R_DISTINCT} distinct ids)"
}

: >"$OUT/rows.md"
run_drain unpaced "$N" 0 0
if [ $PACED = 1 ]; then
    run_drain "paced-$PACED_RATE" "$PACED_N" "$PACED_RATE" 0
fi
if [ $RMQ = 1 ]; then
    [ -x "$RMQ_RUN" ] || die "$RMQ_RUN missing (use --no-robustmq)"
    run_drain "robustmq-$RMQ_N" "$RMQ_N" 0 0 robustmq
    run_drain "mosquitto-$RMQ_N" "$RMQ_N" 0 0 mosquitto
fi

{
    echo "## Sync backlog drain"
    echo
    echo "\`scripts/bench-sync.sh $ARGS\` ($(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), shared with other"
    echo "work (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)); $(uname -sr); $("$EDGE" --version);"
    echo "$("$MOSQUITTO" -h 2>/dev/null | head -1); $(rustc --version 2>/dev/null || echo 'rustc ?')."
    echo
    echo "The edge buffers N messages (24-byte payload, QoS 1, published by edge-bench with a window of"
    echo "64, one local subscriber) while its upstream is unreachable, is stopped (SIGTERM) and started"
    echo "again pointing at a running mosquitto where a QoS 1 subscriber (mosquitto_sub) on the forwarded"
    echo "topics is already subscribed. Drain time runs from the restart to the subscriber's N-th message"
    echo "(start-up included, also shown alone); \`sync status\` then shows backlog 0 and acked N; every"
    echo "\`edge-msg-id\` is checked to arrive. Pacing (\`max_messages_per_sec\` / \`max_bytes_per_sec\`,"
    echo "defaults 500 msgs/s and 1 MiB/s) is OFF (0 / 0) in the unpaced row. Memory: VmHWM of the"
    echo "filling process, and VmRSS sampled every 50 ms plus VmHWM of the draining process."
    echo "The robustmq-N and mosquitto-N rows drain the same backlog in the same run to a real RobustMQ"
    echo "0.4.11 (debug build from ../shared/robustmq, fresh data, 3 partitions; subscriber over MQTT"
    echo "3.1.1, distinct payloads checked) and to mosquitto."
    echo
    echo "| run | upstream (its RSS after the drain) | N | pacing msgs/s / bytes/s | backlog MiB | fill s | restart until listening s | drain s (from restart) | drain msgs/s | VmHWM filling KiB | VmRSS peak draining KiB | VmHWM draining KiB | sent | redelivered | distinct ids received |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$OUT/rows.md"
} >"$OUT/section.md"
cat "$OUT/section.md"
log "logs and section in $OUT"
