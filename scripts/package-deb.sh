#!/usr/bin/env bash
# Builds the robustmq-edge Debian package for one architecture with dpkg-deb (no debhelper, no
# cargo-deb: the binary comes from cargo or cross/build.sh, the rest from packaging/debian/).
#
#   scripts/package-deb.sh ARCH [--profile PROFILE] [--no-pgo] [--binary PATH] [--out DIR]
#
#   ARCH        amd64 (x86_64-unknown-linux-gnu, built natively on an x86_64 host),
#               arm64 (aarch64-unknown-linux-gnu) or armhf (armv7-unknown-linux-gnueabihf),
#               both cross-built by cross/build.sh.
#   --profile   cargo profile to build (default release, what to ship; `dev` reuses the debug
#               build, for tests of the packaging only).
#   --no-pgo    the release binary without profile guidance. By default a release package gets
#               scripts/build-pgo.sh's binary (trained under qemu for arm64/armhf; needs rustup),
#               which uses ~10% less CPU per message and idles in 0.5-0.8 MB less RSS on x86_64
#               (BENCHMARKS.md, "A profile-guided build").
#   --binary    package this robustmq-edge executable instead of building one (its ELF machine
#               must match ARCH).
#   --out DIR   where the .deb goes (default $CARGO_TARGET_DIR/deb, i.e. target/deb).
#
# Environment: DEB_REVISION (default 1; the version is <workspace version>-<revision>),
# DEB_MAINTAINER (Maintainer field), SOURCE_DATE_EPOCH (file dates; default: the last commit's).
#
# Contents (see packaging/README.md):
#   /usr/bin/robustmq-edge                               stripped binary
#   /usr/lib/systemd/system/robustmq-edge.service        targets/systemd unit, /usr/bin paths
#   /usr/lib/sysusers.d/robustmq-edge.conf               the service account
#   /etc/robustmq-edge/config.toml                       conffile (targets/raspberry-pi profile)
#   /usr/share/doc/robustmq-edge/{copyright,changelog.Debian.gz,README.Debian,examples/}
#   DEBIAN/{control,conffiles,md5sums,postinst,prerm,postrm}
# Depends is read from the binary: libc6 (>= newest GLIBC_x.y symbol version), libgcc-s1.
# Prints the path of the .deb as the last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

usage() { sed -n '2,31p' "$0"; }
ARCH="${1:-}"
[ -n "$ARCH" ] || { usage >&2; exit 2; }
shift
PROFILE=release
PGO=1
BINARY=""
OUT="$CARGO_TARGET_DIR/deb"
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="$2"; shift 2 ;;
        --binary) BINARY="$2"; shift 2 ;;
        --no-pgo) PGO=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

case "$ARCH" in
    amd64) TRIPLE=x86_64-unknown-linux-gnu; GNU=x86_64-linux-gnu; MACHINE="Advanced Micro Devices X86-64" ;;
    arm64) TRIPLE=aarch64-unknown-linux-gnu; GNU=aarch64-linux-gnu; MACHINE="AArch64" ;;
    armhf) TRIPLE=armv7-unknown-linux-gnueabihf; GNU=arm-linux-gnueabihf; MACHINE="ARM" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown architecture '$ARCH' (amd64, arm64 or armhf)" >&2; exit 2 ;;
esac
log() { printf '[package-deb] %s\n' "$*" >&2; }
for tool in dpkg-deb readelf python3 gzip; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (Debian: dpkg, binutils, python3, gzip)" >&2; exit 1; }
done

# 1. The binary.
PROFILE_DIR="$PROFILE"
[ "$PROFILE" = dev ] && PROFILE_DIR=debug
if [ -z "$BINARY" ] && [ "$PROFILE" = release ] && [ "$PGO" = 1 ]; then
    log "scripts/build-pgo.sh $TRIPLE (profile-guided; --no-pgo for a plain release build)"
    BINARY="$(scripts/build-pgo.sh "$TRIPLE" | tail -1)"
elif [ -z "$BINARY" ]; then
    if [ "$ARCH" = amd64 ]; then
        [ "$(uname -m)" = x86_64 ] || { echo "amd64 is built natively on x86_64 only; pass --binary" >&2; exit 1; }
        log "cargo build --profile $PROFILE -p robustmq-edge"
        cargo build --profile "$PROFILE" -p robustmq-edge >&2
        BINARY="$CARGO_TARGET_DIR/$PROFILE_DIR/robustmq-edge"
    else
        BINARY="$(BUILD_PROFILE="$PROFILE" cross/build.sh "$TRIPLE" | tail -1)"
    fi
fi
[ -f "$BINARY" ] || { echo "no binary at '$BINARY'" >&2; exit 1; }
got_machine="$(readelf -h "$BINARY" | sed -n 's/^ *Machine: *//p')"
[ "$got_machine" = "$MACHINE" ] || { echo "$BINARY is for '$got_machine', not $ARCH ($MACHINE)" >&2; exit 1; }
if [ "$ARCH" = armhf ] && ! readelf -h "$BINARY" | grep -q 'hard-float ABI'; then
    echo "$BINARY is not a hard-float (armhf) binary" >&2; exit 1
fi

# 2. Version and dependencies.
UPSTREAM="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)"
[ -n "$UPSTREAM" ] || { echo "no [workspace.package] version in Cargo.toml" >&2; exit 1; }
VERSION="$UPSTREAM-${DEB_REVISION:-1}"
MAINTAINER="${DEB_MAINTAINER:-robustmq-edge maintainers <maintainers@robustmq-edge.invalid>}"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH
COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then COMMIT="$COMMIT (with uncommitted changes)"; fi

# Shared libraries the binary needs, mapped to Debian packages; an unknown one stops the build
# rather than producing a package with a missing dependency.
GLIBC="$(readelf -V --wide "$BINARY" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
[ -n "$GLIBC" ] || { echo "no GLIBC symbol versions in $BINARY (static?)" >&2; exit 1; }
DEPENDS="libc6 (>= $GLIBC)"
for lib in $(readelf -d "$BINARY" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case "$lib" in
        libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|libutil.so.1|ld-linux*.so.*) ;;
        libgcc_s.so.1) DEPENDS="$DEPENDS, libgcc-s1" ;;
        *) echo "$BINARY needs $lib: add its Debian package to scripts/package-deb.sh" >&2; exit 1 ;;
    esac
done

# 3. The tree.
NAME="robustmq-edge_${VERSION}_${ARCH}"
STAGE="$CARGO_TARGET_DIR/deb/stage/$NAME"
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/usr/bin" "$STAGE/usr/lib/systemd/system" "$STAGE/usr/lib/sysusers.d" \
    "$STAGE/etc/robustmq-edge" "$STAGE/usr/share/doc/robustmq-edge/examples"
DOC="$STAGE/usr/share/doc/robustmq-edge"

if command -v "$GNU-strip" >/dev/null; then STRIP="$GNU-strip"
elif [ "$ARCH" = amd64 ] && [ "$(uname -m)" = x86_64 ]; then STRIP="strip"
else echo "$GNU-strip is needed (Debian: binutils-$GNU)" >&2; exit 1
fi
"$STRIP" --strip-all -o "$STAGE/usr/bin/robustmq-edge" "$BINARY"
chmod 0755 "$STAGE/usr/bin/robustmq-edge"

sed 's#/usr/local/bin/robustmq-edge#/usr/bin/robustmq-edge#g' targets/systemd/robustmq-edge.service \
    > "$STAGE/usr/lib/systemd/system/robustmq-edge.service"
if grep -v '^#' "$STAGE/usr/lib/systemd/system/robustmq-edge.service" | grep -q /usr/local; then
    echo "the unit still names /usr/local after the path rewrite" >&2; exit 1
fi
cp packaging/debian/robustmq-edge.sysusers "$STAGE/usr/lib/sysusers.d/robustmq-edge.conf"

# The config: the Raspberry Pi profile's settings under a header for the package.
{
    cat packaging/debian/config-header.toml
    awk 'started { print; next } /^$/ { started = 1; print }' targets/raspberry-pi/config.toml
} > "$STAGE/etc/robustmq-edge/config.toml"
cp targets/raspberry-pi/config.toml "$DOC/examples/raspberry-pi.toml"
cp targets/arm64/config.toml "$DOC/examples/arm64-gateway.toml"

# copyright, with the crates linked into the binary (normal dependencies of the edge crate for
# this target, proc-macros excluded) listed from cargo metadata.
CRATES="$(cargo metadata --locked --format-version 1 --filter-platform "$TRIPLE" | python3 -c '
import json, sys
m = json.load(sys.stdin)
pkgs = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
members = set(m["workspace_members"])
root = next(i for i in members if pkgs[i]["name"] == "robustmq-edge")
seen, todo = set(), [root]
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] is None for k in d["dep_kinds"]):
            p = pkgs[d["pkg"]]
            if not any("proc-macro" in t["kind"] for t in p["targets"]):
                todo.append(d["pkg"])
rows = sorted((pkgs[i]["name"], pkgs[i]["version"], pkgs[i].get("license") or "see crate")
              for i in seen if i not in members)
for name, ver, lic in rows:
    print(f"  {name} {ver}: {lic}")
')"
[ -n "$CRATES" ] || { echo "could not list the crates in the binary" >&2; exit 1; }
python3 - "$CRATES" packaging/debian/copyright.in > "$DOC/copyright" <<'PY'
import sys
crates, template = sys.argv[1], open(sys.argv[2]).read()
sys.stdout.write(template.replace("@CRATES@", crates))
PY

DATE="$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
printf 'robustmq-edge (%s) unstable; urgency=medium\n\n  * Built from git commit %s.\n\n -- %s  %s\n' \
    "$VERSION" "$COMMIT" "$MAINTAINER" "$DATE" | gzip -9n > "$DOC/changelog.Debian.gz"
cp packaging/README.md "$DOC/README.Debian"

cp packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
echo /etc/robustmq-edge/config.toml > "$STAGE/DEBIAN/conffiles"

# Permissions and dates (reproducible: owners come from --root-owner-group).
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -type f -exec chmod 0644 {} +
chmod 0755 "$STAGE/usr/bin/robustmq-edge" "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"

(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort \
    | xargs md5sum) > "$STAGE/DEBIAN/md5sums"
INSTALLED_SIZE="$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)"
cat > "$STAGE/DEBIAN/control" <<EOF
Package: robustmq-edge
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: $DEPENDS
Recommends: systemd
Suggests: mosquitto-clients
Section: net
Priority: optional
Description: small MQTT 3.1/3.1.1/5.0 broker for edge gateways
 robustmq-edge is an MQTT broker for ARM edge gateways (Raspberry Pi class
 boards, industrial PCs, vehicles). QoS 1 and 2 messages are acknowledged only
 once they are stored in its redb database, and a store-and-forward module
 carries buffered data up to a central RobustMQ cluster (or any MQTT 5 broker)
 and commands back down.
 .
 The package runs it as the systemd service robustmq-edge (user robustmq-edge,
 state in /var/lib/robustmq-edge), configured in /etc/robustmq-edge/config.toml.
EOF
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
DEB="$OUT/$NAME.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >&2
log "built $DEB ($(stat -c %s "$DEB") bytes; binary $(stat -c %s "$STAGE/usr/bin/robustmq-edge") bytes; Depends: $DEPENDS)"
echo "$DEB"
