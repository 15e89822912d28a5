#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (nightly Rust; installs cargo-fuzz when missing).
#
#   scripts/fuzz.sh                 every target, 600 s each, one after the other
#   scripts/fuzz.sh codec 60        one target for 60 s
#   scripts/fuzz.sh all 600         every target
#
# Each target starts from its seed corpus (fuzz/corpus/<target>, read only) and a working
# corpus (fuzz/work/<target>, not committed) where libFuzzer keeps the new inputs it finds.
# Crashes land in fuzz/artifacts/<target>/. The log of each run is fuzz/work/<target>.log;
# its last lines are libFuzzer's final stats (stat::number_of_executed_units).
# Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 -workers=2" scripts/fuzz.sh codec 600
# Not part of scripts/test.sh: too slow for CI.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET="${1:-all}"
SECONDS_EACH="${2:-600}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi

ALL=$(cd fuzz && cargo "+$TOOLCHAIN" fuzz list)
if [ "$TARGET" = all ]; then
    TARGETS=$ALL
else
    echo "$ALL" | grep -qx "$TARGET" || { echo "unknown target $TARGET; targets: $(echo $ALL)" >&2; exit 2; }
    TARGETS=$TARGET
fi

cd fuzz
cargo "+$TOOLCHAIN" fuzz build -O
for t in $TARGETS; do
    mkdir -p "work/$t" "corpus/$t"
    echo "== $t: ${SECONDS_EACH}s" >&2
    # shellcheck disable=SC2086
    cargo "+$TOOLCHAIN" fuzz run -O "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=8192 -timeout=10 \
        ${FUZZ_FLAGS:-} 2>&1 | tee "work/$t.log" | grep -E '^(#|==|INFO: |SUMMARY|stat::)' | grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse)' || true
    status=${PIPESTATUS[0]}
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "work/$t.log" >&2 || true
    echo "   corpus: $(ls "work/$t" | wc -l) found + $(ls "corpus/$t" | wc -l) seeds" >&2
    if [ "$status" -ne 0 ]; then
        echo "$t: libFuzzer exited with $status (see fuzz/artifacts/$t/ and fuzz/work/$t.log)" >&2
        exit "$status"
    fi
done
