#!/usr/bin/env bash
# The commit journal's effect (issue 9, storage): a backlog fill (QoS 1, 64 B, 64 in flight, into
# an offline persistent session), then a restart and the drain of that backlog, against our
# broker with the journal (`storage.journal_bytes`, default) and without it (`= 0`), and
# mosquitto, alternated; for each: msg/s, the fill's commits and their mean time (ours, from
# /metrics), and what reached the block device during the fill and during the drain (write
# requests and MiB, from /sys/block/DEV/stat, the broker stopped cleanly and everything synced).
#
# Usage: scripts/bench-disk.sh [--messages N] [--rounds R] [--no-build] [--sd] [--phases]
#                              [--binary PATH]
#   --sd      run each broker in a blkio cgroup limited to 500 write IOPS and 20 MB/s, an SD
#             card's order of magnitude (needs root and cgroup v1 blkio or cgroup v2 io.max)
#   --phases  instead: one fill of ours (journal on, default 60,000 messages) traced with `perf`,
#             split into the phases of its commit cycles (scripts/fill-phases.py); the trace
#             costs some speed, so compare builds with it, not with plain fills
#   --binary  the robustmq-edge to run (another build to compare)
# Nothing else heavy may run meanwhile: device counters are machine-wide.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
PORT=${BENCH_PORT_OURS:-21883}
HTTP=$((PORT + 1000))
N=
ROUNDS=3
BUILD=1
SD=0
PHASES=0
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) N=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --sd) SD=1 ;;
        --phases) PHASES=1 ;;
        --binary) EDGE=$2; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
# Default messages: 200,000 per fill, 60,000 for the traced one.
if [ -z "$N" ]; then
    if [ $PHASES = 1 ]; then N=60000; else N=200000; fi
fi
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ $BUILD = 1 ]; then
    (cd "$ROOT" && cargo build --release -p robustmq-edge -p robustmq-edge-bench)
fi
[ -x "$EDGE" ] && [ -x "$BENCH" ] || die "release binaries missing (build first)"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || die "mosquitto missing (apt-get install mosquitto)"

WORK=$(mktemp -d /tmp/edge-bench-disk.XXXXXX)
# The block device holding WORK, for its counters (a partition's counters are under its disk).
DEV=$(lsblk -no PKNAME "$(df --output=source "$WORK" | tail -1)" 2>/dev/null || true)
[ -n "$DEV" ] || DEV=$(basename "$(df --output=source "$WORK" | tail -1)")
STAT=/sys/block/$DEV/stat
[ -r "$STAT" ] || die "no counters for device $DEV ($STAT)"
MAJMIN=$(cat "/sys/block/$DEV/dev")

# --sd: a cgroup whose block I/O to DEV is throttled; brokers are started inside it.
CGROUP_PROCS=""
if [ $SD = 1 ]; then
    if [ -d /sys/fs/cgroup/blkio ]; then
        CG=/sys/fs/cgroup/blkio/edge-bench-sd
        mkdir -p "$CG"
        echo "$MAJMIN 500" > "$CG/blkio.throttle.write_iops_device"
        echo "$MAJMIN 20971520" > "$CG/blkio.throttle.write_bps_device"
    elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        CG=/sys/fs/cgroup/edge-bench-sd
        mkdir -p "$CG"
        echo "+io" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        echo "$MAJMIN wiops=500 wbps=20971520" > "$CG/io.max"
    else
        die "--sd needs cgroup v1 blkio or cgroup v2 io"
    fi
    CGROUP_PROCS=$CG/cgroup.procs
fi

# Runs a command (a broker) in the throttled cgroup when --sd, in the background; prints its pid.
spawn() {
    local log=$1; shift
    if [ -n "$CGROUP_PROCS" ]; then
        sh -c 'echo $$ > "$0"; exec "$@"' "$CGROUP_PROCS" "$@" >"$log" 2>&1 &
    else
        "$@" >"$log" 2>&1 &
    fi
    echo $!
}

writes() { awk '{print $5, $7}' "$STAT"; }

config() {  # config NAME JOURNAL_BYTES
    cat > "$WORK/$1.toml" <<EOF
data_dir = "$WORK/data-$1"
[[listeners]]
bind = "127.0.0.1:$PORT"
[limits]
max_queued_messages = 2000000
max_queued_bytes = 4294967296
[storage]
journal_bytes = $2
[http]
bind = "127.0.0.1:$HTTP"
EOF
}
config journal 16777216
config nojournal 0
cat > "$WORK/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
user $(id -un)
allow_anonymous true
max_inflight_messages 64
max_queued_messages 2000000
set_tcp_nodelay true
persistence true
persistence_location $WORK/data-mosquitto/
autosave_interval 0
autosave_on_changes false
log_dest stderr
log_type error
EOF

wait_port() {
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
    die "broker did not listen on $PORT"
}

start() {  # start BROKER: starts it (in the throttled cgroup with --sd), waits for its port
    if [ "$1" = mosquitto ]; then
        pid=$(spawn "$WORK/$1.log" "$MOSQUITTO" -c "$WORK/mosquitto.conf")
    else
        pid=$(spawn "$WORK/$1.log" "$EDGE" --config "$WORK/$1.toml")
    fi
    wait_port
}
stop() {  # stops the broker cleanly (it is not this shell's child: polled) and lets the device settle
    kill -INT "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    sync; sleep 6; sync
}

if [ $PHASES = 1 ]; then
    command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
    mkdir -p "$WORK/data-journal"
    start journal
    events=syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync,syscalls:sys_enter_pwrite64
    events=$events,syscalls:sys_enter_sendto,syscalls:sys_exit_recvfrom,syscalls:sys_exit_futex
    perf record -q -o "$WORK/perf.data" -p "$pid" -e "$events" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
    "$BENCH" backlog-fill --port "$PORT" --messages "$N" --qos 1 --payload 64 --window 64 2>&1 \
        | grep -o 'queued in .*msg/s)' || die "the fill failed (see $WORK/journal.log)"
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    stop
    perf script -i "$WORK/perf.data" 2>/dev/null | python3 "$ROOT/scripts/fill-phases.py"
    rm -rf "$WORK"
    exit 0
fi

# The floor of a durable commit's wait on this device: a 40 KiB O_DIRECT write over blocks
# written before (a journal record after its first lap), then the device's flush (dd's dsync).
# Printed so that rounds on different machines can be told apart: the fill with 64 in flight
# waits for one of these per window, mosquitto (acknowledging from memory) for none.
probe() {
    local f=$WORK/probe n=1000 t0 t1
    dd if=/dev/zero of="$f" bs=40k count=$n oflag=direct 2>/dev/null && sync || { echo "n/a (no O_DIRECT)"; return; }
    t0=$(date +%s%N)
    dd if=/dev/zero of="$f" bs=40k count=$n oflag=direct,dsync conv=notrunc 2>/dev/null || { echo "n/a"; return; }
    t1=$(date +%s%N)
    rm -f "$f"
    echo "$(( (t1 - t0) / n / 1000 )) us"
}
log "device $DEV: 40 KiB direct write + flush, mean of 1,000: $(probe)"

printf '| round | broker | fill (msg/s) | fill commits | mean commit (ms) | fill: write requests | fill: MiB | drain (msg/s) | drain: write requests | drain: MiB |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for r in $(seq "$ROUNDS"); do
    for b in journal nojournal mosquitto; do
        rm -rf "$WORK/data-$b"; mkdir -p "$WORK/data-$b"
        start $b
        # Counted from here: a journal's one-time preallocation at creation is not part of it.
        sync; sleep 1
        read -r w0 s0 < <(writes)
        rate=$("$BENCH" backlog-fill --port "$PORT" --messages "$N" --qos 1 --payload 64 --window 64 --json 2>/dev/null \
            | sed -n 's/.*"published_per_s":\([0-9.]*\).*/\1/p')
        commits="-"; mean="-"
        if [ $b != mosquitto ]; then
            m=$(curl -s "127.0.0.1:$HTTP/metrics" | grep -E '^robustmq_edge_storage_commit_duration_seconds_(sum|count)')
            sum=$(echo "$m" | awk '/_sum/ {print $2}'); commits=$(echo "$m" | awk '/_count/ {print $2}')
            mean=$(awk -v s="$sum" -v c="$commits" 'BEGIN {printf "%.3f", 1000 * s / c}')
        fi
        stop; read -r w1 s1 < <(writes)
        start $b
        sync; sleep 1
        read -r w2 s2 < <(writes)
        drain=$("$BENCH" backlog-drain --port "$PORT" --messages "$N" --window 64 --json 2>/dev/null \
            | sed -n 's/.*"delivered_per_s":\([0-9.]*\).*/\1/p')
        stop; read -r w3 s3 < <(writes)
        printf '| %s | %s | %.0f | %s | %s | %d | %d | %.0f | %d | %d |\n' "$r" "$b" "${rate:-0}" \
            "$commits" "$mean" $((w1 - w0)) $(((s1 - s0) * 512 / 1048576)) \
            "${drain:-0}" $((w3 - w2)) $(((s3 - s2) * 512 / 1048576))
    done
done
log "logs and data in $WORK"
