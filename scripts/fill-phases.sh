#!/usr/bin/env bash
# Where one commit cycle of a backlog fill goes (issue 9): a QoS 1 fill (64 B, 64 in flight, into
# an offline persistent session) of our broker traced with `perf record` on six syscalls, then,
# per cycle from one journal fdatasync to the next, the median and mean of its phases:
#   sync->sendto    the journal's sync returned -> the PUBACKs' write (the acknowledgement path)
#   sendto->recv    -> the publisher's next publishes read (the client's turn and loopback)
#   recv->pwrite    -> redb's first page write (the publishes handled, the writer's apply/commit)
#   pwrite->jwrite  -> the journal record's write (redb's page writes, the record built)
#   jwrite->fsync   -> the journal's fdatasync called (the record's direct write)
#   fsync           the journal's fdatasync
# The trace costs some speed; compare builds run by this script, not with plain fills.
#
# Usage: scripts/fill-phases.sh [--messages N] [--binary PATH] [--no-build]   (needs perf, root)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
PORT=${BENCH_PORT_OURS:-21883}
N=60000
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) N=$2; shift ;;
        --binary) EDGE=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "error: $*" >&2; exit 1; }
if [ $BUILD = 1 ]; then
    (cd "$ROOT" && cargo build --release -p robustmq-edge -p robustmq-edge-bench)
fi
[ -x "$EDGE" ] && [ -x "$BENCH" ] || die "release binaries missing (build first)"
command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"

WORK=$(mktemp -d /tmp/edge-fill-phases.XXXXXX)
BROKER=""
cleanup() {
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null && wait "$BROKER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cat > "$WORK/edge.toml" <<TOML
data_dir = "$WORK/data"
[[listeners]]
bind = "127.0.0.1:$PORT"
[limits]
max_queued_messages = 2000000
max_queued_bytes = 4294967296
[http]
enabled = false
TOML
"$EDGE" --config "$WORK/edge.toml" >"$WORK/edge.log" 2>&1 &
BROKER=$!
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.1
done
EVENTS=syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync,syscalls:sys_enter_pwrite64
EVENTS=$EVENTS,syscalls:sys_enter_sendto,syscalls:sys_exit_recvfrom,syscalls:sys_exit_futex
perf record -q -o "$WORK/perf.data" -p "$BROKER" -e "$EVENTS" >/dev/null 2>&1 &
PERF=$!
sleep 0.5
"$BENCH" backlog-fill --port "$PORT" --messages "$N" --qos 1 --payload 64 --protocol 4 2>&1 \
    | grep -o 'queued in .*msg/s)' || die "the fill failed (see $WORK/edge.log)"
kill -INT "$PERF"
wait "$PERF" 2>/dev/null || true
perf script -i "$WORK/perf.data" 2>/dev/null | python3 -c '
import re, statistics, sys
ev = []
for line in sys.stdin:
    m = re.match(r"\s*(\S+)\s+\d+\s+\[\d+\]\s+([\d.]+):\s+syscalls:(\w+):\s*(.*)", line)
    if m:
        ev.append((float(m.group(2)) * 1e6, m.group(1), m.group(3), m.group(4)))
names = ["sync->sendto", "sendto->recv", "recv->pwrite", "pwrite->jwrite", "jwrite->fsync",
         "fsync", "cycle"]
phases = {k: [] for k in names}
syncs = [i for i, e in enumerate(ev) if e[2] == "sys_exit_fdatasync"]
for a, b in zip(syncs, syncs[1:]):
    seg = ev[a:b + 1]
    t0, end = seg[0][0], seg[-1][0]
    first = lambda pred, after: next((e[0] for e in seg if e[0] >= after and pred(e)), None)
    sent = first(lambda e: e[2] == "sys_enter_sendto", t0)
    if sent is None:
        continue
    recv = first(lambda e: e[2] == "sys_exit_recvfrom" and not e[3].startswith("0xffff"), sent)
    if recv is None:
        continue
    writes = [e[0] for e in seg if e[2] == "sys_enter_pwrite64" and e[0] > recv]
    if not writes:
        continue
    fsync = first(lambda e: e[2] == "sys_enter_fdatasync", writes[-1])
    if fsync is None:
        continue
    for k, v in zip(names, [sent - t0, recv - sent, writes[0] - recv, writes[-1] - writes[0],
                            fsync - writes[-1], end - fsync, end - t0]):
        phases[k].append(v)
if not phases["cycle"]:
    sys.exit("no whole cycle traced (journal off, or not a disk file system?)")
print("cycles", len(phases["cycle"]))
for k in names:
    v = phases[k]
    print("%-15s median %6.1f us  mean %6.1f us" % (k, statistics.median(v), statistics.mean(v)))
'
