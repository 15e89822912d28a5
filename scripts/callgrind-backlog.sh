#!/usr/bin/env bash
# Instruction counts of the broker filling and draining a backlog (QoS 1, 64 B, one offline
# persistent session), with valgrind's callgrind: counts do not depend on the machine's load, so
# before/after comparisons hold on a shared machine. Prints Ir for three broker runs: fill (start,
# fill N, stop), idle (start with N stored, stop) and drain (start, drain N, stop); profiles stay in
# the output folder for callgrind_annotate.
#
# Usage: scripts/callgrind-backlog.sh [--messages N] [--edge BINARY] [--out DIR]
#   defaults: 20000 messages, target/release/robustmq-edge, a new /tmp folder.
# Needs valgrind (apt-get install valgrind) and a release build of robustmq-edge and edge-bench.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
N=20000
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) N=$2; shift ;;
        --edge) EDGE=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }
[ -x "$EDGE" ] && [ -x "$BENCH" ] || { echo "build first: cargo build --release -p robustmq-edge -p robustmq-edge-bench" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/edge-callgrind.XXXXXX)}
mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$OUT/edge.toml" <<CONF
[limits]
max_queued_messages = 2000000
max_queued_bytes = 4294967296
CONF
rm -rf "$OUT/data"
VPID=""
start() { # phase
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.callgrind" "$EDGE" --config "$OUT/edge.toml" \
        --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" 2>"$OUT/$1.log" &
    VPID=$!
    for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "broker did not start (see $OUT/$1.log)" >&2; exit 1
}
stop() { kill -TERM "$VPID"; wait "$VPID" || true; }
trap '[ -n "$VPID" ] && kill -KILL "$VPID" 2>/dev/null || true' EXIT
start fill
"$BENCH" backlog-fill --port "$PORT" --client-id eb --messages "$N" --qos 1 --payload 64 --deadline-secs 1200
stop
start idle
stop
start drain
"$BENCH" backlog-drain --port "$PORT" --client-id eb --messages "$N" --qos 1 --payload 64 --cleanup --deadline-secs 1200
stop
for p in fill idle drain; do
    ir=$(grep -m1 '^summary:' "$OUT/$p.callgrind" | awk '{print $2}')
    echo "$p: $ir instructions ($((ir / N)) per message), profile $OUT/$p.callgrind"
done
