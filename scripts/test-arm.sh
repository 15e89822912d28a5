#!/usr/bin/env bash
# ARM in the test command: cross-builds the broker for aarch64 and runs the qemu smoke test
# (cross/smoke.sh: print-config, MQTT 3.1.1 and 5.0 QoS 1 round trips with mosquitto_pub/_sub,
# a retained QoS 1 message across kill -9 and a restart on the same data dir, clean SIGTERM).
#
#   scripts/test-arm.sh [TARGET]        TARGET: aarch64-unknown-linux-gnu (default) or
#                                       armv7-unknown-linux-gnueabihf
#
# Installs what is missing, each step skipped when already there (safe to run again):
#   rustup target add TARGET; Debian gcc-aarch64-linux-gnu + libc6-dev-arm64-cross (or the armhf
#   pair), qemu-user, mosquitto-clients, python3, file.
#
# Environment:
#   ARM_PROFILE=arm-smoke   cargo profile (default arm-smoke, the cheap CI build defined in the
#                           workspace Cargo.toml: opt-level 0, no LTO); ARM_PROFILE=release
#                           builds and smoke-tests exactly what ships (about 3.5x the CPU time)
#   SKIP_APT=1              do not install Debian packages
#   CARGO_TARGET_DIR        as usual (default ./target)
#
# Prints one summary line, "ARM SMOKE PASSED ..." or "ARM SMOKE FAILED ...", and exits non-zero
# on any failure.
set -uo pipefail

TARGET="${1:-aarch64-unknown-linux-gnu}"
PROFILE="${ARM_PROFILE:-arm-smoke}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

case "$TARGET" in
    aarch64-unknown-linux-gnu) GCC=aarch64-linux-gnu; DEB_ARCH=arm64; QEMU=qemu-aarch64 ;;
    armv7-unknown-linux-gnueabihf) GCC=arm-linux-gnueabihf; DEB_ARCH=armhf; QEMU=qemu-arm ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "ARM SMOKE FAILED: unsupported target '$TARGET'" >&2; exit 2 ;;
esac

T_START=$(date +%s)
STAGE="setup"
secs() { echo $(( $(date +%s) - $1 ))s; }
finish() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        echo "ARM SMOKE FAILED: $TARGET ($PROFILE) at stage '$STAGE' (exit $rc) after $(secs "$T_START")"
    fi
}
trap finish EXIT
section() { printf '\n==== %s ====\n' "$*"; }
die() { echo "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
section "Tools for $TARGET"
STAGE="install"
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        # cross/build.sh falls back to Debian's rustc-web when rustup cannot download.
        timeout 300 rustup target add "$TARGET" || echo "rustup target add failed; cross/build.sh will try Debian's std"
    fi
fi
need=()
command -v "$GCC-gcc" >/dev/null 2>&1 || need+=("gcc-$GCC")
[ -f "/usr/$GCC/lib/crti.o" ] || need+=("libc6-dev-$DEB_ARCH-cross")
command -v "$QEMU" >/dev/null 2>&1 || need+=(qemu-user)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v file >/dev/null 2>&1 || need+=(file)
if [ "${#need[@]}" -gt 0 ]; then
    [ "${SKIP_APT:-0}" = 1 ] && die "missing ${need[*]} and SKIP_APT=1"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    echo "installing: ${need[*]}"
    "${SUDO[@]}" apt-get update -qq || echo "apt-get update reported errors; trying to install anyway"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
        || die "apt-get install ${need[*]} failed"
else
    echo "all present"
fi
T_INSTALL=$(secs "$T_START")

# ---------------------------------------------------------------------------------------------
section "Build $TARGET (profile $PROFILE)"
STAGE="build"
T0=$(date +%s)
BIN="$(BUILD_PROFILE="$PROFILE" cross/build.sh "$TARGET" | tail -1)" || exit 1
[ -x "$BIN" ] || die "cross/build.sh printed no binary (got '$BIN')"
T_BUILD=$(secs "$T0")

# ---------------------------------------------------------------------------------------------
section "Smoke test under $QEMU"
STAGE="smoke"
T0=$(date +%s)
cross/smoke.sh "$TARGET" "$BIN" || exit 1
T_SMOKE=$(secs "$T0")

STAGE="done"
echo
echo "ARM SMOKE PASSED: $TARGET ($PROFILE, $(stat -c %s "$BIN") bytes) under $QEMU;" \
    "tools $T_INSTALL, build $T_BUILD, smoke $T_SMOKE, total $(secs "$T_START")"
