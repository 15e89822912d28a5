#!/usr/bin/env bash
# Cross-builds the robustmq-edge broker for ARM Linux without Docker, on a Debian/Ubuntu host.
#
#   cross/build.sh [TARGET] [extra cargo args...]
#
# TARGET is aarch64-unknown-linux-gnu (64-bit Raspberry Pi OS, Pi 3/4/5, most ARM gateways;
# the default) or armv7-unknown-linux-gnueabihf (32-bit Raspberry Pi OS, Pi 2/3/4).
#
# What it does:
#   1. installs Debian's cross C toolchain (gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf) when
#      missing; the linker for each target is set in the repository's .cargo/config.toml;
#   2. provides the Rust standard library for TARGET, from one of three sources
#      (RUST_STD_SOURCE=auto|rustup|debian|debian-src, default auto):
#        rustup      `rustup target add TARGET` (needs rustup's download server);
#        debian      Debian's rustc-web compiler with its prebuilt libstd-rust-web-dev for the
#                    target architecture (multiarch), for hosts that reach only Debian's archive;
#        debian-src  Debian's rustc-web with its source (rust-web-src), std built for TARGET by
#                    cargo -Z build-std (RUSTC_BOOTSTRAP=1), when the target's std package of the
#                    same version cannot be installed;
#      auto tries them in that order;
#   3. runs `cargo build --profile $BUILD_PROFILE -p robustmq-edge --target TARGET` and writes a
#      stripped copy next to the binary (robustmq-edge.stripped), printing both sizes.
#
# BUILD_PROFILE (environment, default release) picks the cargo profile: `release` is what ships
# (fat LTO); `arm-smoke` (Cargo.toml) is the cheaper one scripts/test-arm.sh builds for CI.
#
# Needs root (or sudo) only for the apt-get steps. Output:
#   $CARGO_TARGET_DIR/TARGET/BUILD_PROFILE/robustmq-edge  (default target dir: ./target, or
#   target/debian-rustc when Debian's compiler is used, to keep its artifacts apart)
set -euo pipefail

TARGET="${1:-aarch64-unknown-linux-gnu}"
shift || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case "$TARGET" in
    aarch64-unknown-linux-gnu)
        GCC_PKG=gcc-aarch64-linux-gnu; TRIPLE_GNU=aarch64-linux-gnu; DEB_ARCH=arm64 ;;
    armv7-unknown-linux-gnueabihf)
        GCC_PKG=gcc-arm-linux-gnueabihf; TRIPLE_GNU=arm-linux-gnueabihf; DEB_ARCH=armhf ;;
    -h|--help)
        sed -n '2,28p' "$0"; exit 0 ;;
    *)
        echo "unsupported target '$TARGET' (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" >&2
        exit 2 ;;
esac

log() { printf '[cross/build] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -qq || log "apt-get update reported errors; trying to install anyway"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# 1. C cross toolchain (linker, and C compiler for crates with C code such as ring).
if ! command -v "${TRIPLE_GNU}-gcc" >/dev/null || [ ! -f "/usr/${TRIPLE_GNU}/lib/crti.o" ]; then
    apt_install "$GCC_PKG" "libc6-dev-${DEB_ARCH}-cross"
fi
TARGET_ENV="$(echo "$TARGET" | tr 'a-z-' 'A-Z_')"
export "CC_${TARGET//-/_}=${TRIPLE_GNU}-gcc"
export "AR_${TARGET//-/_}=${TRIPLE_GNU}-ar"
# The linker comes from .cargo/config.toml; set it here too so a moved config still works.
export "CARGO_TARGET_${TARGET_ENV}_LINKER=${TRIPLE_GNU}-gcc"

# 2. Rust standard library for the target.
SOURCE="${RUST_STD_SOURCE:-auto}"
rustup_has_target() {
    command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"
}
if [ "$SOURCE" = auto ]; then
    if rustup_has_target; then
        SOURCE=rustup
    elif command -v rustup >/dev/null && timeout 180 rustup target add "$TARGET"; then
        SOURCE=rustup
    else
        log "rustup cannot provide the $TARGET standard library here; using Debian's rustc-web"
        SOURCE=debian
    fi
elif [ "$SOURCE" = rustup ] && ! rustup_has_target; then
    rustup target add "$TARGET"
fi

versions_of() {  # available versions of a package, one a line
    apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -u
}
BUILD_STD=()
if [ "$SOURCE" = debian ] || [ "$SOURCE" = debian-src ]; then
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -qq || log "apt-get update reported errors; trying to install anyway"
        APT_UPDATED=1
    fi
    # The newest rustc-web (redb needs Rust 1.90+); its std must be the very same version.
    VERSION="$(versions_of rustc-web | sort -V | tail -1)"
    [ -n "$VERSION" ] || { echo "Debian's rustc-web is not available here" >&2; exit 1; }
    if [ "$SOURCE" = debian ]; then
        added=0
        if ! dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH" \
            && [ "$(dpkg --print-architecture)" != "$DEB_ARCH" ]; then
            log "dpkg --add-architecture $DEB_ARCH"
            $SUDO dpkg --add-architecture "$DEB_ARCH"
            $SUDO apt-get update -qq || log "apt-get update reported errors"
            added=1
        fi
        if ! versions_of "libstd-rust-web-dev:${DEB_ARCH}" | grep -qx "$VERSION"; then
            log "libstd-rust-web-dev:${DEB_ARCH} $VERSION not available; building std from source"
            if [ "$added" = 1 ]; then
                # Leave apt as it was (a foreign index that fails would break apt-get update).
                $SUDO dpkg --remove-architecture "$DEB_ARCH" && $SUDO apt-get update -qq || true
            fi
            SOURCE=debian-src
        fi
    fi
    if [ "$SOURCE" = debian ]; then
        installed="$(dpkg-query -W -f='${Version}' "libstd-rust-web-dev:${DEB_ARCH}" 2>/dev/null || true)"
        if [ "$installed" != "$VERSION" ] || ! [ -x /usr/bin/rustc ]; then
            apt_install "rustc-web=$VERSION" "libstd-rust-web-dev=$VERSION" \
                "libstd-rust-web-dev:${DEB_ARCH}=$VERSION"
        fi
    else
        if [ "$(dpkg-query -W -f='${Version}' rust-web-src 2>/dev/null || true)" != "$VERSION" ] \
            || ! [ -x /usr/bin/rustc ]; then
            apt_install "rustc-web=$VERSION" "libstd-rust-web-dev=$VERSION" "rust-web-src=$VERSION"
        fi
        export RUSTC_BOOTSTRAP=1
        BUILD_STD=(-Z build-std=std,panic_unwind)
    fi
    if ! command -v cargo >/dev/null; then
        apt_install "cargo-web=$VERSION"
    fi
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/debian-rustc}"
    log "compiler: $($RUSTC --version)"
fi

# 3. Build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BUILD_PROFILE="${BUILD_PROFILE:-release}"
log "cargo build --profile $BUILD_PROFILE -p robustmq-edge --target $TARGET (std from $SOURCE)"
cargo build --profile "$BUILD_PROFILE" -p robustmq-edge --target "$TARGET" ${BUILD_STD[@]+"${BUILD_STD[@]}"} "$@"

PROFILE_DIR="$BUILD_PROFILE"
[ "$BUILD_PROFILE" = dev ] && PROFILE_DIR=debug   # cargo's one renamed output directory
BIN="$CARGO_TARGET_DIR/$TARGET/$PROFILE_DIR/robustmq-edge"
"${TRIPLE_GNU}-strip" -o "$BIN.stripped" "$BIN"
log "built $BIN ($(stat -c %s "$BIN") bytes; stripped copy $(stat -c %s "$BIN.stripped") bytes)"
file "$BIN" 2>/dev/null || true
echo "$BIN"
