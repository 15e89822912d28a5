#!/usr/bin/env bash
# Benchmarks robustmq-edge against mosquitto on this machine in one run: builds both binaries, starts
# each broker in turn on 127.0.0.1, runs the same edge-bench measurements against it and prints a table
# (metric, ours, mosquitto, ratio, target). Raw JSON lines and the tables land in the --out folder.
#
# Usage: scripts/bench.sh [--quick] [--out DIR] [--no-build] [--pgo] [--only ours|mosquitto] [--backlog-only]
#   --quick     message counts / 4, 5 s latency runs, backlogs of 10k and 100k (a few minutes)
#   --backlog-only  only the "memory vs backlog" table: 10k / 100k / 1M queued for an offline
#               session, both brokers (fill rate, RSS after fill and restart, start-up, drain)
#   --out DIR   where results.jsonl, table.md and broker logs go (default: a new /tmp folder)
#   --pgo       our broker as the packages ship it: scripts/build-pgo.sh's profile-guided binary
#               (built here unless --no-build)
# Env: CARGO_TARGET_DIR (default: <repo>/target), BENCH_PORT_OURS (21883), BENCH_PORT_MOSQ (21884).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EDGE=$TARGET/release/robustmq-edge
BENCH=$TARGET/release/edge-bench
PORT_OURS=${BENCH_PORT_OURS:-21883}
PORT_MOSQ=${BENCH_PORT_MOSQ:-21884}
QUICK=0
BUILD=1
ONLY=""
PGO=0
OUT=""
BACKLOG_ONLY=0""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --out) OUT=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --backlog-only) BACKLOG_ONLY=1 ;;
        --pgo) PGO=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
WORK=$(mktemp -d /tmp/edge-bench.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# ---- sizes -------------------------------------------------------------------------------------
# Messages published per run, [shape:qos:payload]; fan-out delivers 100x as many. --quick: / 4.
if [ $QUICK = 1 ]; then DIV=4; else DIV=1; fi
declare -A COUNT=(
    [1-1:0:64]=1000000 [1-1:1:64]=300000 [1-1:2:64]=150000
    [1-1:0:4096]=200000 [1-1:1:4096]=100000 [1-1:2:4096]=60000
    [fanin:0:64]=1000000 [fanin:1:64]=300000 [fanin:2:64]=150000
    [fanin:0:4096]=200000 [fanin:1:4096]=100000 [fanin:2:4096]=60000
    [fanout:0:64]=10000 [fanout:1:64]=5000 [fanout:2:64]=3000
    [fanout:0:4096]=3000 [fanout:1:4096]=2000 [fanout:2:4096]=1000
)
CONNS=10000
LAT_RATE=10000
if [ $QUICK = 1 ]; then LAT_SECS=5; BACKLOGS="10000 100000"; else LAT_SECS=10; BACKLOGS="10000 100000 1000000"; fi
LAT_ROUNDS=3
RUN_TIMEOUT=600   # seconds, hard cap for one edge-bench invocation

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- setup -------------------------------------------------------------------------------------
if [ $BUILD = 1 ]; then
    log "building (cargo build --release -p robustmq-edge -p robustmq-edge-bench, target $TARGET)"
    (cd "$ROOT" && cargo build --release -p robustmq-edge -p robustmq-edge-bench)
    if [ $PGO = 1 ]; then
        log "building the profile-guided broker (scripts/build-pgo.sh)"
        "$ROOT/scripts/build-pgo.sh" >&2
    fi
fi
if [ $PGO = 1 ]; then EDGE=$TARGET/pgo/x86_64-unknown-linux-gnu/release/robustmq-edge; fi
[ -x "$BENCH" ] || die "$BENCH missing (build first)"
if [ "$ONLY" != mosquitto ]; then [ -x "$EDGE" ] || die "$EDGE missing (build first)"; fi
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    log "installing mosquitto (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# 10,000 idle connections need file descriptors in both the broker and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((CONNS + 200)) ] || log "warning: ulimit -n is $(ulimit -n), below $CONNS connections"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $PORT_OURS $PORT_MOSQ; do port_busy "$p" && die "port $p is already in use (set BENCH_PORT_OURS/BENCH_PORT_MOSQ)"; done

# Throughput, latency and idle runs: the default per-session queue limits (10,000 messages,
# 16 MiB), which pause publishers at 3/4 of them and lose nothing in these runs; only the
# connection limits are raised (see BENCHMARKS.md).
cat > "$WORK/ours.toml" <<EOF
[limits]
max_connections = 20000
# All benchmark clients come from 127.0.0.1 (the idle-connection run opens 10,000).
max_connections_per_ip = 20000
EOF
{ cat "$WORK/ours.toml"; } > "$WORK/ours-durable.toml"
{ echo 'durability = "none"'; cat "$WORK/ours.toml"; } > "$WORK/ours-none.toml"
# Backlog runs store up to 1,000,000 messages for one offline session: its limits raised.
{ cat "$WORK/ours.toml"; printf 'max_queued_messages = 2000000\nmax_queued_bytes = 4294967296\n'; } > "$WORK/ours-backlog.toml"

mosq_conf() { # $1 = file, $2 = persistence dir or empty
    cat > "$1" <<EOF
listener $PORT_MOSQ 127.0.0.1
allow_anonymous true
max_connections -1
# Same per-client window as robustmq-edge's default max_inflight; queue large enough not to drop.
max_inflight_messages 64
# robustmq-edge disables Nagle on client sockets; give mosquitto the same.
set_tcp_nodelay true
max_queued_messages 2000000
log_dest stderr
log_type error
log_type warning
connection_messages false
# Stay the invoking user (as root mosquitto would switch to "mosquitto" and lose the data dir).
user root
EOF
    if [ -n "$2" ]; then
        mkdir -p "$2"
        printf 'persistence true\npersistence_location %s/\nautosave_interval 0\nautosave_on_changes false\n' "$2" >> "$1"
    else
        echo "persistence false" >> "$1"
    fi
}
mosq_conf "$WORK/mosquitto.conf" ""
mosq_conf "$WORK/mosquitto-persist.conf" "$WORK/mosq-data"

# ---- broker lifecycle --------------------------------------------------------------------------
BROKER_PID=""
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
stop_broker() {
    local pid=$BROKER_PID
    [ -n "$pid" ] || return 0
    BROKER_PID=""
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 600); do alive "$pid" || return 0; sleep 0.1; done
    log "broker $pid ignored SIGTERM for 60 s, killing"
    kill -KILL "$pid" 2>/dev/null || true
}
trap 'stop_broker; rm -rf "$WORK"/data-* "$WORK/mosq-data"' EXIT

# Runs edge-bench with --json: the JSON line goes to results.jsonl, the human summary to the terminal.
bench() { # label subcommand args...
    local label=$1 line
    shift
    echo "  $label" >&2
    line=$(timeout $RUN_TIMEOUT "$BENCH" "$@" --json --label "$label" 2> >(sed 's/^/    /' >&2)) || true
    if [ -z "$line" ]; then
        line="{\"label\":\"$label\",\"test\":\"$1\",\"error\":\"edge-bench failed or timed out\"}"
    fi
    echo "$line" >> "$RESULTS"
}

# Starts a broker through `edge-bench startup --keep` (that measures start-up time) and sets BROKER_PID.
start_broker() { # label port command
    local label=$1 port=$2 cmd=$3
    for _ in $(seq 1 100); do port_busy "$port" || break; sleep 0.1; done
    port_busy "$port" && die "port $port busy before starting $label"
    local line
    line=$("$BENCH" startup --port "$port" --cmd "$cmd" --keep --timeout-secs 600 --log "$OUT/$label.log" \
        --json --label "$label") || die "$label did not start: $(tail -5 "$OUT/$label.log" 2>/dev/null)"
    echo "$line" >> "$RESULTS"
    BROKER_PID=$(echo "$line" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
    [ -n "$BROKER_PID" ] || die "no pid in: $line"
    log "  $label up, pid $BROKER_PID: $line"
}

idle_rss() { # label
    sleep 2
    bench "$1" mem --pid "$BROKER_PID"
}

# Every measurement below gets a freshly started broker (new data dir for ours), so that peak RSS and
# throughput of one run are not inherited from the previous one. $1 of these helpers is the broker
# name (ours, ours-none, mosq); broker_cmd prints the command that starts it on an empty state.
broker_cmd() { # name
    case $1 in
        ours) rm -rf "$WORK/data-ours"; echo "$EDGE --config $WORK/ours-durable.toml --listen 127.0.0.1:$PORT_OURS --data-dir $WORK/data-ours" ;;
        ours-none) rm -rf "$WORK/data-ours"; echo "$EDGE --config $WORK/ours-none.toml --listen 127.0.0.1:$PORT_OURS --data-dir $WORK/data-ours" ;;
        mosq) echo "$MOSQUITTO -c $WORK/mosquitto.conf" ;;
    esac
}
broker_port() { case $1 in mosq) echo $PORT_MOSQ ;; *) echo $PORT_OURS ;; esac; }

fresh() { # name label
    start_broker "$2" "$(broker_port "$1")" "$(broker_cmd "$1")"
}

tp() { # name shape qos size
    local name=$1 shape=$2 qos=$3 size=$4 pubs=1 subs=1 n
    case $shape in fanin) pubs=100 ;; fanout) subs=100 ;; esac
    n=$(( ${COUNT[$shape:$qos:$size]} / DIV ))
    fresh "$name" "$name:tp:$shape:q$qos:$size:start"
    bench "$name:tp:$shape:q$qos:$size" throughput --port "$(broker_port "$name")" --broker-pid "$BROKER_PID" \
        --qos "$qos" --payload "$size" --publishers $pubs --subscribers $subs --messages "$n"
    stop_broker
}

lat() { # name qos round
    fresh "$1" "$1:lat:q$2:r$3:start"
    bench "$1:lat:q$2:r$3" latency --port "$(broker_port "$1")" --broker-pid "$BROKER_PID" --qos "$2" --payload 64 \
        --rate $LAT_RATE --duration-secs $LAT_SECS
    stop_broker
}

basics() { # name: start-up on an empty state, idle RSS, idle connections (without and with a keep-alive)
    fresh "$1" "$1:startup-empty"
    idle_rss "$1:rss-idle"
    bench "$1:conns" connections --port "$(broker_port "$1")" --broker-pid "$BROKER_PID" --count $CONNS
    stop_broker
    # Most clients ask for a keep-alive (60 s in mosquitto_sub and paho); a fresh broker, so
    # that the two RSS deltas do not share a warm-up.
    fresh "$1" "$1:conns-ka:start"
    bench "$1:conns-ka" connections --port "$(broker_port "$1")" --broker-pid "$BROKER_PID" --count $CONNS \
        --keep-alive 60
    stop_broker
}

# One backlog of $4 messages: fill an offline session (RSS after fill in the fill result), restart
# (start-up time, RSS after restart), drain (rate, peak RSS), then a fill with 256 in flight.
# Labels name:bk<N>:...
backlog_runs() { # name port start-command-for-persistent-broker messages
    local name=$1 port=$2 cmd=$3 n=$4
    start_broker "$name:bk$n:start-empty" "$port" "$cmd"
    bench "$name:bk$n:fill" backlog-fill --port "$port" --broker-pid "$BROKER_PID" --client-id "eb-backlog" \
        --messages "$n" --qos 1 --payload 64 --deadline-secs $((RUN_TIMEOUT - 60))
    stop_broker
    start_broker "$name:bk$n:startup" "$port" "$cmd"
    idle_rss "$name:bk$n:rss-restart"
    bench "$name:bk$n:drain" backlog-drain --port "$port" --broker-pid "$BROKER_PID" --client-id "eb-backlog" \
        --messages "$n" --qos 1 --payload 64 --cleanup --deadline-secs $((RUN_TIMEOUT - 60))
    stop_broker
    # The same fill by a publisher keeping 256 in flight (the Receive Maximum our CONNACK
    # announces): a durable broker's fill rate follows the messages per commit.
    start_broker "$name:bk$n:start-w256" "$port" "$cmd"
    bench "$name:bk$n:fill-w256" backlog-fill --port "$port" --broker-pid "$BROKER_PID" --client-id "eb-backlog-w256" \
        --messages "$n" --qos 1 --payload 64 --window 256 --deadline-secs $((RUN_TIMEOUT - 60))
    stop_broker
}

backlogs() { # name: every size of BACKLOGS, each from an empty data dir
    local name=$1 n
    for n in $BACKLOGS; do
        log "$name: $n messages stored for an offline session (fill, restart with them, drain)"
        if [ "$name" = ours ]; then
            rm -rf "$WORK/data-ours-backlog"
            backlog_runs ours $PORT_OURS "$EDGE --config $WORK/ours-backlog.toml --listen 127.0.0.1:$PORT_OURS --data-dir $WORK/data-ours-backlog" "$n"
        else
            rm -rf "$WORK/mosq-data"; mkdir -p "$WORK/mosq-data"
            backlog_runs mosq $PORT_MOSQ "$MOSQUITTO -c $WORK/mosquitto-persist.conf" "$n"
        fi
    done
}

suite() { # name
    local name=$1 shape size qos
    log "$name: start-up (empty), idle RSS, $CONNS idle connections"
    basics "$name"
    log "$name: throughput matrix (fresh broker per run)"
    for shape in 1-1 fanin fanout; do
        for size in 64 4096; do
            for qos in 0 1 2; do tp "$name" $shape $qos $size; done
        done
    done
    if [ "$name" = ours ]; then
        log "ours: durability = \"none\""
        tp ours-none 1-1 1 64
        tp ours-none 1-1 1 4096
        tp ours-none fanin 1 64
        lat ours-none 1 1
    fi
    backlogs "$name"
}

log "results in $OUT (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
START=$(date +%s)
if [ $BACKLOG_ONLY = 1 ]; then
    [ "$ONLY" = mosquitto ] || backlogs ours
    [ "$ONLY" = ours ] || backlogs mosq
else
    [ "$ONLY" = mosquitto ] || suite ours
    [ "$ONLY" = ours ] || suite mosq
    # Latency is the measure most hurt by other load on the machine: both brokers alternate, 3
    # rounds, and the table shows the median.
    log "latency at $LAT_RATE msg/s, $LAT_ROUNDS rounds, brokers alternating"
    for round in $(seq 1 $LAT_ROUNDS); do
        for qos in 0 1; do
            [ "$ONLY" = mosquitto ] || lat ours $qos "$round"
            [ "$ONLY" = ours ] || lat mosq $qos "$round"
        done
    done
fi
log "done in $(( $(date +%s) - START )) s (load now: $(cut -d' ' -f1-3 /proc/loadavg))"

# ---- table -------------------------------------------------------------------------------------
{
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "versions: $("$MOSQUITTO" -h 2>/dev/null | head -1); $(rustc -V 2>/dev/null || echo rustc ?); robustmq-edge built from $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo ?) ($(cd "$ROOT" && git status --porcelain -- edge sync 2>/dev/null | wc -l) uncommitted files in edge/ sync/)"
    echo "mode: $([ $QUICK = 1 ] && echo quick || echo full)"
    echo
    "$BENCH" report "$RESULTS"
} | tee "$OUT/table.md"
log "raw results: $RESULTS, table: $OUT/table.md"
