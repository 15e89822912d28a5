#!/usr/bin/env bash
# Memory over time: runs `edge-bench soak` (steady traffic plus client churn: new client ids,
# topics, filters, wills, retained messages, persistent sessions that come back or expire) against
# robustmq-edge and then mosquitto, each freshly started with its own default queue bounds and
# persistence on, and prints their RSS over the run: at 10%, 50% and the end, the peak, and the
# slope over the second half (kB/min). A broker whose memory does not grow with time levels off.
#
# Usage: scripts/soak.sh [--minutes N] [--rate MSG_PER_S] [--churn LIVES_PER_S] [--only ours|mosquitto]
#        [--out DIR] [--no-build]
#   defaults: 10 minutes per broker, 2000 msg/s, 50 lives/s. Nothing else heavy should run meanwhile.
# Env: CARGO_TARGET_DIR (default: <repo>/target), SOAK_PORT (21885).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
MOSQUITTO=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
PORT=${SOAK_PORT:-21885}
MINUTES=10
RATE=2000
CHURN=50
ONLY=""
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --churn) CHURN=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
case "$ONLY" in ""|ours|mosquitto) ;; *) echo "--only takes ours or mosquitto" >&2; exit 2 ;; esac
OUT=${OUT:-$(mktemp -d /tmp/edge-soak.XXXXXX)}
mkdir -p "$OUT"
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ $BUILD = 1 ]; then
    (cd "$ROOT" && cargo build --release -p robustmq-edge -p robustmq-edge-bench) || die "build failed"
fi
[ -x "$EDGE" ] && [ -x "$BENCH" ] || die "build first: cargo build --release -p robustmq-edge -p robustmq-edge-bench"
[ -n "$ONLY" ] && [ "$ONLY" = ours ] || [ -x "$MOSQUITTO" ] || die "$MOSQUITTO missing (apt-get install mosquitto)"

# Ours: the embedded defaults (durable) but for the listener and data dir. mosquitto: persistence
# on (saved at exit), the same per-client window, Nagle off as ours.
cat > "$OUT/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 64
set_tcp_nodelay true
persistence true
persistence_location $OUT/mosq-data/
log_dest stderr
log_type error
EOF
[ "$(id -u)" -eq 0 ] && echo "user root" >> "$OUT/mosquitto.conf"

PID=""
stop() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
trap stop EXIT

run() { # name command...
    local name=$1; shift
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break; sleep 0.1; done
    "$@" > "$OUT/$name.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    log "$name: pid $PID, soak of $MINUTES min"
    "$BENCH" soak --port "$PORT" --broker-pid "$PID" --duration-secs $((MINUTES * 60)) --sample-secs 10 \
        --rate "$RATE" --churn "$CHURN" --json --label "$name" >> "$OUT/results.jsonl" 2> >(tee -a "$OUT/$name.soak.txt" >&2)
    stop
}

: > "$OUT/results.jsonl"
if [ "$ONLY" != mosquitto ]; then
    rm -rf "$OUT/data-ours"
    run ours "$EDGE" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data-ours"
fi
if [ "$ONLY" != ours ]; then
    rm -rf "$OUT/mosq-data"; mkdir -p "$OUT/mosq-data"
    run mosquitto "$MOSQUITTO" -c "$OUT/mosquitto.conf"
fi
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| broker | lives (failed) | received | RSS 10% | RSS 50% | RSS end | RSS peak | slope, 2nd half |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    mb = lambda k: "-" if r.get(k) is None else f"{r[k] / 1024:.1f} MB"
    slope = r.get("slope_kb_per_min_second_half")
    print(f"| {r['label']} | {r['lives']} ({r['failed_lives']}) | {r['received']} | {mb('rss_kb_10pct')} | "
          f"{mb('rss_kb_50pct')} | {mb('rss_kb_end')} | {mb('rss_kb_max')} | "
          f"{'-' if slope is None else f'{slope:+.1f} kB/min'} |")
PY
log "results: $OUT/results.jsonl (every sample), broker logs in $OUT"
