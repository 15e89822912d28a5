#!/usr/bin/env bash
# Profile-guided release build of robustmq-edge: what the packages ship. Builds an instrumented
# binary, runs it through scripts/pgo-train.sh, merges the profile with the toolchain's own
# llvm-profdata and builds again with it. The profile is made fresh from this source tree every
# time (nothing is checked in, so it can never be stale). Why: the code a broker runs at start
# and at idle ends up together instead of scattered over the whole binary, which is what an idle
# broker's RSS is made of (measured in BENCHMARKS.md, "A profile-guided build").
#
#   scripts/build-pgo.sh [TARGET]
#
#   TARGET  x86_64-unknown-linux-gnu (the default, on an x86_64 host), aarch64-unknown-linux-gnu
#           or armv7-unknown-linux-gnueabihf (cross-built with cross/build.sh and trained under
#           qemu user-mode emulation, PGO_SCALE default 10 there).
#
# Needs rustup (the llvm-tools component is added when missing: its llvm-profdata matches the
# compiler's LLVM, which a distribution's llvm-profdata usually does not). Work goes to
# $CARGO_TARGET_DIR/pgo-generate and $CARGO_TARGET_DIR/pgo (default target dir ./target), so the
# ordinary release build is left alone. Prints the path of the binary as the last line (for
# cross targets a stripped copy is next to it, as with cross/build.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HOST=x86_64-unknown-linux-gnu
TARGET="${1:-$HOST}"
log() { printf '[build-pgo] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$TARGET" in
    "$HOST")
        [ "$(uname -m)" = x86_64 ] || die "$HOST is built natively on x86_64 only"
        WRAP=() ;;
    aarch64-unknown-linux-gnu) WRAP=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
    armv7-unknown-linux-gnueabihf) WRAP=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
    *) die "unsupported target '$TARGET' ($HOST, aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" ;;
esac
if [ "$TARGET" != "$HOST" ]; then
    export PGO_SCALE="${PGO_SCALE:-10}"
    command -v "${WRAP[0]}" >/dev/null || die "${WRAP[0]} is needed for the training run (Debian: qemu-user)"
fi

command -v rustup >/dev/null || die "rustup is needed (for the llvm-tools component)"
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
    log "rustup component add llvm-tools"
    rustup component add llvm-tools >&2
fi
[ -x "$PROFDATA" ] || die "no llvm-profdata at $PROFDATA after adding llvm-tools"

PROFILES="$CARGO_TARGET_DIR/pgo-generate/profiles/$TARGET"
MERGED="$CARGO_TARGET_DIR/pgo/$TARGET.profdata"
rm -rf "$PROFILES"
mkdir -p "$PROFILES" "$(dirname "$MERGED")"

# `--target` also for the host: RUSTFLAGS then reach only the target's crates, not build scripts
# and proc macros, whose runs would add their own profiles.
build() { # target dir, RUSTFLAGS -> binary path
    if [ "$TARGET" = "$HOST" ]; then
        CARGO_TARGET_DIR="$1" RUSTFLAGS="$2" cargo build --release -p robustmq-edge --target "$TARGET" >&2
        echo "$1/$TARGET/release/robustmq-edge"
    else
        # rustup's standard library: Debian's compiler would not match rustup's llvm-profdata.
        CARGO_TARGET_DIR="$1" RUSTFLAGS="$2" RUST_STD_SOURCE=rustup cross/build.sh "$TARGET" | tail -1
    fi
}

log "1/4 instrumented build ($TARGET)"
# Temporal instrumentation also records the order in which functions first run (one trace), which
# the x86_64 link below uses to put the code of start-up and idle together.
GEN_BIN="$(build "$CARGO_TARGET_DIR/pgo-generate" "-Cprofile-generate=$PROFILES -Cllvm-args=-pgo-temporal-instrumentation")"
log "2/4 training run (scripts/pgo-train.sh, PGO_SCALE=${PGO_SCALE:-1})"
scripts/pgo-train.sh "$GEN_BIN" ${WRAP[@]+"${WRAP[@]}"}
log "3/4 merging $(find "$PROFILES" -name '*.profraw' | wc -l) raw profile(s)"
"$PROFDATA" merge -o "$MERGED" "$PROFILES"
FUNCTIONS="$("$PROFDATA" show "$MERGED" | sed -n 's/^Total functions: *//p')"
log "  $MERGED: ${FUNCTIONS:-?} functions"
[ "${FUNCTIONS:-0}" -gt 1000 ] || die "the profile has ${FUNCTIONS:-no} functions: the training did not reach the broker's code"
log "4/4 build with the profile"
# lld's balanced partitioning orders the functions by the trace so that the code run first shares
# pages (`--bp-startup-sort`). rustc links x86_64 Linux with its own lld already; the ARM targets
# are linked by Debian's cross gcc, which is pointed at the same lld (rustup's `gcc-ld/ld.lld`,
# a multi-target linker) instead of GNU ld, which has no such option.
USE_FLAGS="-Cprofile-use=$MERGED"
if [ "$TARGET" != "$HOST" ]; then
    GCC_LD="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/gcc-ld"
    [ -x "$GCC_LD/ld.lld" ] || die "no rustup lld at $GCC_LD/ld.lld"
    USE_FLAGS="$USE_FLAGS -Clink-arg=-B$GCC_LD -Clink-arg=-fuse-ld=lld"
fi
USE_FLAGS="$USE_FLAGS -Clink-arg=-Wl,--irpgo-profile=$MERGED -Clink-arg=-Wl,--bp-startup-sort=function"
BIN="$(build "$CARGO_TARGET_DIR/pgo" "$USE_FLAGS")"
log "built $BIN"
echo "$BIN"
