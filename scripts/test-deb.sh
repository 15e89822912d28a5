#!/usr/bin/env bash
# Tests the Debian package and the systemd unit, with the real tools:
#   1. builds the amd64 package (scripts/package-deb.sh);
#   2. dpkg-deb -I / -c: control fields, Depends, conffiles, maintainer scripts, the exact file
#      list, owners and modes;
#   3. installs it with dpkg into an empty scratch root (dpkg --root=DIR --force-script-chrootless
#      --force-depends: the maintainer scripts run on this host with DPKG_ROOT=DIR and must touch
#      nothing outside DIR, which is checked), then checks the files, the conffile registration,
#      the service user (systemd-sysusers --root), the config's 0640 root:robustmq-edge, the
#      state directory and the unit's enablement symlink;
#   4. systemd-analyze verify on the installed unit (under --root, with the host's targets);
#   5. runs the installed binary: --version, print-config, check-config on the installed config,
#      and a start with NOTIFY_SOCKET/WATCHDOG_USEC set: READY=1 must arrive, MQTT must work
#      (mosquitto_pub/_sub), the watchdog must ping, SIGTERM must send STOPPING=1 and exit 0;
#   6. reinstalls over an edited config (edit kept), removes (config and data kept) and purges
#      (config, data, user, group and enablement gone);
#   7. the same install and purge with systemd-sysusers hidden, for the useradd fallback.
#
#   sudo scripts/test-deb.sh
#
# Environment:
#   DEB_PROFILE=release   cargo profile of the packaged binary (default release; `dev` reuses the
#                         debug build of scripts/test.sh, the packaging being what is tested)
#   DEB_TEST_NOTIFY=0     skip the systemd notification checks of step 5 (the broker still has to
#                         start and serve MQTT)
#   SKIP_APT=1            do not install missing Debian packages (dpkg, binutils, systemd,
#                         mosquitto-clients, python3)
#   KEEP=1                keep the scratch directory
#
# Prints "DEB TEST PASSED ..." or "DEB TEST FAILED ..." last; exits non-zero on failure.
# "A && B || fail" below is meant: fail unless both hold.
# shellcheck disable=SC2015
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${DEB_PROFILE:-release}"
T_START=$(date +%s)
STAGE=setup
CHECKS=0
WORK=""
BROKER=""
LISTENER=""

finish() {
    local rc=$?
    [ -n "$BROKER" ] && kill -KILL "$BROKER" 2>/dev/null
    [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null
    if [ -n "$WORK" ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
    [ -n "$WORK" ] && [ "${KEEP:-0}" = 1 ] && echo "kept $WORK"
    if [ "$rc" = 0 ]; then
        echo "DEB TEST PASSED: amd64 package ($PROFILE build), $CHECKS checks, $(( $(date +%s) - T_START ))s"
    else
        echo "DEB TEST FAILED at stage '$STAGE' (exit $rc) after $(( $(date +%s) - T_START ))s"
    fi
}
trap finish EXIT
section() { STAGE="$1"; printf '\n==== %s ====\n' "$1"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { CHECKS=$((CHECKS + 1)); echo "ok: $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (the scratch install sets owners; nothing outside it is changed)"
[ "$(uname -m)" = x86_64 ] || fail "the test installs and runs the amd64 package: x86_64 host needed"

# ---------------------------------------------------------------------------------------------
section "tools"
need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v readelf >/dev/null || need+=(binutils)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-sysusers >/dev/null || need+=(systemd)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v python3 >/dev/null || need+=(python3)
command -v useradd >/dev/null || need+=(passwd)
if [ "${#need[@]}" -gt 0 ]; then
    [ "${SKIP_APT:-0}" = 1 ] && fail "missing ${need[*]} and SKIP_APT=1"
    echo "installing: ${need[*]}"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
else
    echo "all present"
fi

# ---------------------------------------------------------------------------------------------
section "build the amd64 package ($PROFILE)"
DEB="$(scripts/package-deb.sh amd64 --profile "$PROFILE" | tail -1)"
[ -f "$DEB" ] || fail "package-deb.sh produced no package"
ok "built $DEB ($(stat -c %s "$DEB") bytes)"
WORK="$(mktemp -d /tmp/robustmq-edge-deb.XXXXXX)"
VERSION="$(dpkg-deb -f "$DEB" Version)"

# ---------------------------------------------------------------------------------------------
section "dpkg-deb -I"
dpkg-deb -I "$DEB" | tee "$WORK/info.txt"
field() { dpkg-deb -f "$DEB" "$1"; }
[ "$(field Package)" = robustmq-edge ] || fail "Package: $(field Package)"
[ "$(field Architecture)" = amd64 ] || fail "Architecture: $(field Architecture)"
want_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)-${DEB_REVISION:-1}"
[ "$VERSION" = "$want_version" ] || fail "Version $VERSION, expected $want_version"
field Depends | grep -Eq '^libc6 \(>= 2\.[0-9]+\), libgcc-s1$' || fail "Depends: $(field Depends)"
[ -n "$(field Maintainer)" ] && [ -n "$(field Installed-Size)" ] && [ -n "$(field Description)" ] \
    || fail "Maintainer, Installed-Size or Description missing"
ok "control: robustmq-edge $VERSION amd64, Depends: $(field Depends)"
mkdir -p "$WORK/control"
dpkg-deb -e "$DEB" "$WORK/control"
[ "$(cat "$WORK/control/conffiles")" = /etc/robustmq-edge/config.toml ] || fail "conffiles: $(cat "$WORK/control/conffiles")"
ok "conffiles: /etc/robustmq-edge/config.toml"
for s in postinst prerm postrm; do
    [ -x "$WORK/control/$s" ] || fail "maintainer script $s missing or not executable"
    sh -n "$WORK/control/$s" || fail "$s: shell syntax"
    grep -q '^set -e' "$WORK/control/$s" || fail "$s does not set -e"
done
ok "maintainer scripts postinst, prerm, postrm: executable, valid sh"
if command -v shellcheck >/dev/null; then
    shellcheck -s sh "$WORK/control/postinst" "$WORK/control/prerm" "$WORK/control/postrm" || fail "shellcheck"
    ok "shellcheck: maintainer scripts clean"
fi
dpkg-deb -x "$DEB" "$WORK/extracted"
(cd "$WORK/extracted" && md5sum --check --quiet "$WORK/control/md5sums") || fail "md5sums do not match the files"
[ "$(wc -l < "$WORK/control/md5sums")" = 8 ] || fail "md5sums should list the 8 non-conffile files"
ok "md5sums match the 8 files outside /etc"

# ---------------------------------------------------------------------------------------------
section "dpkg-deb -c"
dpkg-deb -c "$DEB" | tee "$WORK/contents.txt"
expected="./etc/robustmq-edge/config.toml
./usr/bin/robustmq-edge
./usr/lib/systemd/system/robustmq-edge.service
./usr/lib/sysusers.d/robustmq-edge.conf
./usr/share/doc/robustmq-edge/README.Debian
./usr/share/doc/robustmq-edge/changelog.Debian.gz
./usr/share/doc/robustmq-edge/copyright
./usr/share/doc/robustmq-edge/examples/arm64-gateway.toml
./usr/share/doc/robustmq-edge/examples/raspberry-pi.toml"
got="$(awk '$1 !~ /^d/ { print $6 }' "$WORK/contents.txt" | LC_ALL=C sort)"
[ "$got" = "$expected" ] || { diff <(echo "$expected") <(echo "$got") >&2; fail "file list differs (above: - expected, + packaged)"; }
ok "file list: the 9 expected files, nothing else"
line_of() { awk -v p="$1" '$6 == p' "$WORK/contents.txt"; }
line_of ./usr/bin/robustmq-edge | grep -q '^-rwxr-xr-x root/root' || fail "binary mode/owner: $(line_of ./usr/bin/robustmq-edge)"
line_of ./etc/robustmq-edge/config.toml | grep -q '^-rw-r--r-- root/root' || fail "config mode/owner"
if awk '{ print $2 }' "$WORK/contents.txt" | grep -qv '^root/root$'; then fail "a file not owned by root/root"; fi
ok "owners root/root; binary 0755, config 0644 in the archive (0640 after postinst)"

# ---------------------------------------------------------------------------------------------
# A scratch root with an empty dpkg database and account files holding only root.
new_root() {
    local r="$1"
    mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/triggers" \
        "$r/var/log" "$r/etc" "$r/usr/sbin"
    : > "$r/var/lib/dpkg/status"
    : > "$r/var/lib/dpkg/available"
    echo 'root:x:0:0:root:/root:/bin/bash' > "$r/etc/passwd"
    echo 'root:x:0:' > "$r/etc/group"
    echo 'root:*:19000:0:99999:7:::' > "$r/etc/shadow"
    echo 'root:*::' > "$r/etc/gshadow"
    chmod 0640 "$r/etc/shadow" "$r/etc/gshadow"
}
# Fingerprint of what on the host a maintainer script could wrongly touch.
host_state() {
    { sha256sum /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null
      ls -la /etc/systemd/system /etc/systemd/system/multi-user.target.wants 2>/dev/null
      ls -ld /var/lib/robustmq-edge /etc/robustmq-edge /usr/bin/robustmq-edge \
          /usr/lib/systemd/system/robustmq-edge.service 2>&1
      find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
          -name '*robustmq*' 2>/dev/null || true
    } | sed 's/ [A-Z][a-z][a-z] [ 0-9][0-9] [0-9:]\{4,5\} / /'
}
DPKG_FLAGS=(--force-script-chrootless --force-depends --log=/dev/null)
dpkg_in() { local r="$1"; shift; dpkg --root="$r" "${DPKG_FLAGS[@]}" "$@"; }
gid_in() { awk -F: -v n=robustmq-edge '$1 == n { print $3 }' "$1/etc/group"; }
uid_in() { awk -F: -v n=robustmq-edge '$1 == n { print $3 }' "$1/etc/passwd"; }

section "install into a scratch root (dpkg --root, chrootless scripts)"
R="$WORK/root"
new_root "$R"
HOST_BEFORE="$(host_state)"
dpkg_in "$R" -i "$DEB"
[ "$(dpkg --root="$R" -s robustmq-edge | sed -n 's/^Status: //p')" = "install ok installed" ] \
    || fail "dpkg -s: not installed"
dpkg --root="$R" -s robustmq-edge | grep -Eq '^ /etc/robustmq-edge/config.toml [0-9a-f]{32}$' \
    || fail "conffile not registered in the dpkg database"
ok "dpkg: install ok installed, conffile registered with its md5"
for f in usr/bin/robustmq-edge usr/lib/systemd/system/robustmq-edge.service \
    usr/lib/sysusers.d/robustmq-edge.conf etc/robustmq-edge/config.toml \
    usr/share/doc/robustmq-edge/copyright; do
    [ -f "$R/$f" ] || fail "/$f not installed"
done
[ -x "$R/usr/bin/robustmq-edge" ] || fail "binary not executable"
grep -q '^ExecStart=/usr/bin/robustmq-edge --config /etc/robustmq-edge/config.toml$' \
    "$R/usr/lib/systemd/system/robustmq-edge.service" || fail "unit ExecStart not /usr/bin"
grep -q '^Type=notify$' "$R/usr/lib/systemd/system/robustmq-edge.service" || fail "unit not Type=notify"
ok "files landed; unit runs /usr/bin/robustmq-edge, Type=notify"
pw="$(grep '^robustmq-edge:' "$R/etc/passwd")" || fail "no robustmq-edge user in the scratch passwd"
echo "$pw" | grep -q ':/var/lib/robustmq-edge:/usr/sbin/nologin$' || fail "user entry: $pw"
UID_R="$(uid_in "$R")"; GID_R="$(gid_in "$R")"
[ -n "$GID_R" ] || fail "no robustmq-edge group"
[ "$UID_R" -lt 1000 ] || fail "uid $UID_R is not a system uid"
grep -q '^robustmq-edge:' "$R/etc/shadow" || fail "no shadow entry"
ok "system user robustmq-edge ($UID_R:$GID_R, nologin) created in the scratch root by systemd-sysusers"
[ "$(stat -c '%a %u %g' "$R/etc/robustmq-edge/config.toml")" = "640 0 $GID_R" ] \
    || fail "config mode/owner: $(stat -c '%a %u %g' "$R/etc/robustmq-edge/config.toml")"
[ "$(stat -c '%a %u %g' "$R/var/lib/robustmq-edge")" = "750 $UID_R $GID_R" ] \
    || fail "state dir: $(stat -c '%a %u %g' "$R/var/lib/robustmq-edge" 2>&1)"
ok "config 0640 root:robustmq-edge; /var/lib/robustmq-edge 0750 robustmq-edge"
[ "$(readlink "$R/etc/systemd/system/multi-user.target.wants/robustmq-edge.service")" = \
    /usr/lib/systemd/system/robustmq-edge.service ] || fail "unit not enabled (no multi-user.target.wants link)"
ok "unit enabled (multi-user.target.wants symlink)"
[ "$(host_state)" = "$HOST_BEFORE" ] || { diff <(echo "$HOST_BEFORE") <(host_state) >&2; fail "the host changed"; }
ok "host untouched (accounts, systemd links, /var/lib, /etc, /usr)"

# ---------------------------------------------------------------------------------------------
section "systemd-analyze verify"
# verify --root resolves the unit's dependencies (sysinit.target, basic.target, ...) and the
# ExecStart= binary inside the root: copy the host's target and slice units there (outside the
# package's paths). It exits 0 even on parse warnings, so any output is a failure too.
mkdir -p "$R/lib/systemd/system"
cp -a /lib/systemd/system/*.target /lib/systemd/system/*.slice "$R/lib/systemd/system/"
# ExecReload=/bin/kill: verify wants it executable inside the root (a base system has it).
if [ ! -e "$R/bin/kill" ]; then mkdir -p "$R/bin" && cp "$(readlink -f /bin/kill)" "$R/bin/kill"; fi
if ! out="$(systemd-analyze verify --man=no --root="$R" robustmq-edge.service 2>&1)" || [ -n "$out" ]; then
    echo "$out" >&2
    fail "systemd-analyze verify"
fi
ok "systemd-analyze verify ($(systemd-analyze --version | head -1)): no warnings"
# And the check itself catches a bad unit.
sed 's/^Type=notify$/Type=notifyy/' "$R/usr/lib/systemd/system/robustmq-edge.service" > "$R/etc/systemd/system/robustmq-edge-bad.service"
out="$(systemd-analyze verify --man=no --root="$R" robustmq-edge-bad.service 2>&1 || true)"
rm -f "$R/etc/systemd/system/robustmq-edge-bad.service"
echo "$out" | grep -q 'Failed to parse service type' || fail "verify did not flag a bad Type=: $out"
ok "systemd-analyze verify flags a broken copy (Type=notifyy)"

# ---------------------------------------------------------------------------------------------
section "run the installed binary"
BIN="$R/usr/bin/robustmq-edge"
"$BIN" --version | tee "$WORK/version.txt"
grep -q "^robustmq-edge ${VERSION%-*}$" "$WORK/version.txt" || fail "--version: $(cat "$WORK/version.txt")"
"$BIN" print-config > "$WORK/printed.toml"
[ -s "$WORK/printed.toml" ] && grep -q '^\[\[listeners\]\]' "$WORK/printed.toml" || fail "print-config"
"$BIN" --config "$R/etc/robustmq-edge/config.toml" check-config || fail "check-config on the installed config"
ok "--version, print-config, check-config of the installed config"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SOCK="$WORK/notify.sock"
# A stand-in for systemd's notify socket: records each datagram as one line (newlines -> ';').
python3 - "$SOCK" "$WORK/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1)
end = time.time() + 120
with open(sys.argv[2], "a", buffering=1) as log:
    while time.time() < end:
        try:
            log.write(s.recv(4096).decode().replace("\n", ";") + "\n")
        except socket.timeout:
            pass
PY
LISTENER=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || fail "notify listener did not start"
# The installed config names /etc/robustmq-edge/{passwd,acl}: run a copy pointing at the empty
# password file postinst created in the scratch root, and at an ACL letting this test's
# anonymous loopback clients use deb/# (postinst's empty ACL refuses everything).
printf 'topic readwrite deb/#\n' > "$WORK/acl"
sed -e "s#/etc/robustmq-edge/passwd#$R/etc/robustmq-edge/passwd#" -e "s#/etc/robustmq-edge/acl#$WORK/acl#" \
    "$R/etc/robustmq-edge/config.toml" > "$WORK/run.toml"
[ -f "$R/etc/robustmq-edge/passwd" ] || fail "postinst did not create /etc/robustmq-edge/passwd"
NOTIFY_SOCKET="$SOCK" WATCHDOG_USEC=1000000 RUST_LOG=info "$BIN" --config "$WORK/run.toml" \
    --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" > "$WORK/broker.log" 2>&1 &
BROKER=$!
ready=0
for _ in $(seq 150); do
    if [ "${DEB_TEST_NOTIFY:-1}" != 0 ]; then
        grep -qx 'READY=1' "$WORK/notify.log" 2>/dev/null && { ready=1; break; }
    elif (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then ready=1; break; fi
    kill -0 "$BROKER" 2>/dev/null || { cat "$WORK/broker.log" >&2; fail "broker exited at start"; }
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    cat "$WORK/broker.log" >&2
    fail "no READY=1 on NOTIFY_SOCKET within 15 s (systemd notify not wired into the broker?)"
fi
if [ "${DEB_TEST_NOTIFY:-1}" != 0 ]; then
    # READY=1 means the listener is bound: connect right away, no retry.
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || fail "READY=1 sent before the listener accepts"
    ok "READY=1 received, and the listener accepts at that moment"
fi
mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t deb/test -C 1 -W 10 > "$WORK/sub.out" &
SUB=$!
sleep 0.5
mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t deb/test -m from-the-package || fail "mosquitto_pub"
wait "$SUB" || fail "mosquitto_sub got nothing"
[ "$(cat "$WORK/sub.out")" = from-the-package ] || fail "mosquitto_sub got '$(cat "$WORK/sub.out")'"
ok "MQTT QoS 1 publish/subscribe through the installed binary"
if [ "${DEB_TEST_NOTIFY:-1}" != 0 ]; then
    sleep 1.2
    pings="$(grep -cx 'WATCHDOG=1' "$WORK/notify.log" || true)"
    [ "$pings" -ge 2 ] || fail "$pings watchdog pings in ~2 s at WATCHDOG_USEC=1 s (expected one each 0.5 s)"
    ok "watchdog: $pings WATCHDOG=1 pings at WATCHDOG_USEC=1000000"
fi
kill -TERM "$BROKER"
status=0; wait "$BROKER" || status=$?
BROKER=""
[ "$status" = 0 ] || { cat "$WORK/broker.log" >&2; fail "exit status $status after SIGTERM"; }
if [ "${DEB_TEST_NOTIFY:-1}" != 0 ]; then
    grep -qx 'STOPPING=1' "$WORK/notify.log" || fail "no STOPPING=1 on shutdown"
    ok "SIGTERM: STOPPING=1 sent, exit 0"
else
    ok "SIGTERM: exit 0 (notify checks skipped: DEB_TEST_NOTIFY=0)"
fi
kill "$LISTENER" 2>/dev/null || true; LISTENER=""
echo "notifications: $(sort "$WORK/notify.log" 2>/dev/null | uniq -c | tr -s ' ' | tr '\n' ',')"

# ---------------------------------------------------------------------------------------------
section "reinstall over an edited config, remove, purge"
echo '# edited by the administrator' >> "$R/etc/robustmq-edge/config.toml"
dpkg_in "$R" -i "$DEB"
tail -1 "$R/etc/robustmq-edge/config.toml" | grep -q '^# edited by the administrator$' || fail "reinstall replaced the edited config"
[ "$(stat -c '%a %u %g' "$R/etc/robustmq-edge/config.toml")" = "640 0 $GID_R" ] || fail "reinstall changed the config's mode"
[ "$(uid_in "$R")" = "$UID_R" ] || fail "reinstall changed the uid"
ok "reinstall: edited conffile kept (0640), same user"
echo data > "$R/var/lib/robustmq-edge/edge.redb"
dpkg_in "$R" -r robustmq-edge
[ ! -e "$R/usr/bin/robustmq-edge" ] && [ ! -e "$R/usr/lib/systemd/system/robustmq-edge.service" ] || fail "remove left the binary or unit"
[ -f "$R/etc/robustmq-edge/config.toml" ] && [ -f "$R/var/lib/robustmq-edge/edge.redb" ] || fail "remove deleted config or data"
[ -n "$(uid_in "$R")" ] || fail "remove deleted the user"
ok "remove: binary and unit gone; config, data and user kept"
dpkg_in "$R" -P robustmq-edge
[ ! -e "$R/etc/robustmq-edge" ] || fail "purge left /etc/robustmq-edge: $(ls -la "$R/etc/robustmq-edge")"
[ ! -e "$R/var/lib/robustmq-edge" ] || fail "purge left /var/lib/robustmq-edge"
[ -z "$(uid_in "$R")" ] && [ -z "$(gid_in "$R")" ] || fail "purge left the user or group"
! grep -q '^robustmq-edge:' "$R/etc/shadow" "$R/etc/gshadow" || fail "purge left shadow entries"
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/robustmq-edge.service" ] || fail "purge left the enablement link"
left="$(find "$R/etc/systemd" "$R/var/lib/systemd" -name '*robustmq*' 2>/dev/null)"
[ -z "$left" ] || fail "purge left deb-systemd-helper state: $left"
if dpkg --root="$R" -s robustmq-edge >/dev/null 2>&1; then fail "dpkg still knows the package after purge"; fi
ok "purge: config, data, user, group, enablement gone; dpkg forgot the package"
[ "$(host_state)" = "$HOST_BEFORE" ] || { diff <(echo "$HOST_BEFORE") <(host_state) >&2; fail "the host changed"; }
ok "host still untouched"

# ---------------------------------------------------------------------------------------------
section "without systemd-sysusers: the useradd fallback"
# A PATH holding every host command except systemd-sysusers.
SHIM="$WORK/path"
mkdir -p "$SHIM"
for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
        n="${f##*/}"
        [ "$n" = systemd-sysusers ] && continue
        [ -e "$SHIM/$n" ] || ln -s "$f" "$SHIM/$n"
    done
done
R2="$WORK/root2"
new_root "$R2"
PATH="$SHIM" dpkg --root="$R2" "${DPKG_FLAGS[@]}" -i "$DEB"
grep -q '^robustmq-edge:x:[0-9]*:[0-9]*:robustmq-edge MQTT broker:/var/lib/robustmq-edge:/usr/sbin/nologin$' "$R2/etc/passwd" \
    || fail "useradd fallback: $(grep robustmq-edge "$R2/etc/passwd" || echo no user)"
[ "$(uid_in "$R2")" -lt 1000 ] || fail "useradd fallback: not a system uid"
[ "$(stat -c '%a %u %g' "$R2/etc/robustmq-edge/config.toml")" = "640 0 $(gid_in "$R2")" ] || fail "useradd fallback: config mode"
ok "useradd fallback: system user $(uid_in "$R2"):$(gid_in "$R2") created, config 0640"
PATH="$SHIM" dpkg --root="$R2" "${DPKG_FLAGS[@]}" -P robustmq-edge
[ -z "$(uid_in "$R2")" ] && [ -z "$(gid_in "$R2")" ] && [ ! -e "$R2/etc/robustmq-edge" ] || fail "useradd fallback: purge incomplete"
ok "useradd fallback: purge removes user, group and config"
[ "$(host_state)" = "$HOST_BEFORE" ] || { diff <(echo "$HOST_BEFORE") <(host_state) >&2; fail "the host changed"; }
ok "host still untouched"
STAGE="done"
