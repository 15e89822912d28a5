#!/usr/bin/env bash
# 32-bit in the test command: the unit tests of the broker, sync and MQTT crates built for
# armv7-unknown-linux-gnueabihf (what the armhf package ships; `usize` is 4 bytes there) and run
# under qemu-arm. Catches what a 64-bit host cannot: config values that do not fit a 32-bit
# `usize`, arithmetic that overflows only there, sizes that assume 8-byte pointers.
#
#   scripts/test-32bit.sh
#
# Installs what is missing (safe to run again): rustup target armv7-unknown-linux-gnueabihf;
# Debian gcc-arm-linux-gnueabihf + libc6-dev-armhf-cross, qemu-user. SKIP_APT=1: install no
# Debian packages. One test is skipped: systemd::tests::env_driven_api_in_a_child_process
# re-executes the test binary, which the host cannot run without binfmt_misc.
# Prints "32-BIT UNIT TESTS PASSED ..." or "... FAILED ..." last; exits non-zero on failure.
set -uo pipefail

TARGET=armv7-unknown-linux-gnueabihf
GCC=arm-linux-gnueabihf
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
T_START=$(date +%s)
fail() { echo "32-BIT UNIT TESTS FAILED: $* after $(( $(date +%s) - T_START )) s"; exit 1; }

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    timeout 300 rustup target add "$TARGET" || fail "rustup target add $TARGET"
fi
need=()
command -v "$GCC-gcc" >/dev/null 2>&1 || need+=("gcc-$GCC")
[ -f "/usr/$GCC/lib/crti.o" ] || need+=("libc6-dev-armhf-cross")
command -v qemu-arm >/dev/null 2>&1 || need+=(qemu-user)
if [ "${#need[@]}" -gt 0 ]; then
    [ "${SKIP_APT:-0}" = 1 ] && fail "missing ${need[*]} and SKIP_APT=1"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update -qq || echo "apt-get update reported errors; trying to install anyway"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" || fail "apt-get install ${need[*]}"
fi

T=${TARGET//-/_}
export "CC_$T=$GCC-gcc" "AR_$T=$GCC-ar"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm -L /usr/$GCC"
cargo test --target "$TARGET" -p robustmq-edge -p robustmq-edge-sync -p robustmq-edge-mqtt --lib \
    -- --skip systemd::tests::env_driven_api_in_a_child_process \
    || fail "cargo test --target $TARGET (see above)"
echo "32-BIT UNIT TESTS PASSED: $TARGET under qemu-arm in $(( $(date +%s) - T_START )) s"
