#!/usr/bin/env bash
# Installs robustmq-edge as a systemd service on a Raspberry Pi or another Linux board.
#
#   sudo targets/install.sh [--binary PATH] [--target raspberry-pi|arm64] [--config FILE]
#                           [--no-start] [--root DIR] [--user NAME] [--password-stdin]
#
#   --binary PATH   the robustmq-edge executable to install. Default: ./robustmq-edge if present,
#                   else the cross/native release build for this machine's architecture
#                   (target/<triple>/release/robustmq-edge, target/release/robustmq-edge).
#   --target NAME   which targets/NAME/config.toml to install (default: raspberry-pi).
#   --config FILE   install this config file instead.
#   --no-start      install and enable, but do not (re)start the service now.
#   --root DIR      stage everything under DIR (a packaging root): no user creation, no
#                   systemctl. Used by tests; `--root /` is the same as no --root.
#   --user NAME     the first MQTT user, put in a new password file (default: admin).
#   --password-stdin  read that user's password from the first line of standard input;
#                   without it a random password is generated and printed once.
#
# What it does, each step skipped when already done (so it is safe to run again, e.g. to
# upgrade the binary):
#   1. creates the system user and group `robustmq-edge` (no login, no home);
#   2. installs the binary as /usr/local/bin/robustmq-edge (replaced when different);
#   3. installs the config as /etc/robustmq-edge/config.toml, never overwriting one you edited:
#      a different new version is written next to it as config.toml.new;
#   3b. creates /etc/robustmq-edge/passwd with a first user (mode 0640, group robustmq-edge) and
#      /etc/robustmq-edge/acl, an example ACL for a store, when they do not exist yet (an empty
#      password file left by the .deb counts as not existing); manage users afterwards with
#      `robustmq-edge passwd /etc/robustmq-edge/passwd USER`, reload with
#      `systemctl reload robustmq-edge`;
#   4. checks the config with `robustmq-edge check-config`;
#   5. installs /etc/systemd/system/robustmq-edge.service, reloads systemd, enables the
#      service and (re)starts it when the binary, config or unit changed.
# The database lives in /var/lib/robustmq-edge (created by systemd, StateDirectory=).
# Uninstall: systemctl disable --now robustmq-edge; rm /usr/local/bin/robustmq-edge
#   /etc/systemd/system/robustmq-edge.service; (data) rm -r /var/lib/robustmq-edge.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BINARY=""
TARGET="raspberry-pi"
CONFIG=""
START=1
ROOT=""
MQTT_USER="admin"
PASSWORD_STDIN=0

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) BINARY="$2"; shift 2 ;;
        --target) TARGET="$2"; shift 2 ;;
        --config) CONFIG="$2"; shift 2 ;;
        --no-start) START=0; shift ;;
        --root) ROOT="${2%/}"; shift 2 ;;
        --user) MQTT_USER="$2"; shift 2 ;;
        --password-stdin) PASSWORD_STDIN=1; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[install] %s\n' "$*"; }
STAGED=0
[ -n "$ROOT" ] && STAGED=1
if [ "$STAGED" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "run as root (sudo $0 ...)" >&2
    exit 1
fi

# Locate the binary.
if [ -z "$BINARY" ]; then
    case "$(uname -m)" in
        aarch64|arm64) triple=aarch64-unknown-linux-gnu ;;
        armv7l|armv6l) triple=armv7-unknown-linux-gnueabihf ;;
        *) triple="" ;;
    esac
    for c in ./robustmq-edge \
        ${triple:+"$REPO/target/$triple/release/robustmq-edge"} \
        ${triple:+"$REPO/target/debian-rustc/$triple/release/robustmq-edge"} \
        "$REPO/target/release/robustmq-edge"; do
        if [ -f "$c" ]; then BINARY="$c"; break; fi
    done
fi
if [ -z "$BINARY" ] || [ ! -f "$BINARY" ]; then
    echo "no robustmq-edge binary found; pass --binary PATH (see cross/README.md to build one)" >&2
    exit 1
fi
if [ -z "$CONFIG" ]; then
    CONFIG="$HERE/$TARGET/config.toml"
fi
[ -f "$CONFIG" ] || { echo "config not found: $CONFIG" >&2; exit 1; }
UNIT_SRC="$HERE/systemd/robustmq-edge.service"

BIN_DST="$ROOT/usr/local/bin/robustmq-edge"
CONF_DIR="$ROOT/etc/robustmq-edge"
CONF_DST="$CONF_DIR/config.toml"
UNIT_DST="$ROOT/etc/systemd/system/robustmq-edge.service"
CHANGED=0

# 1. System user.
if [ "$STAGED" = 0 ]; then
    if ! getent group robustmq-edge >/dev/null; then
        groupadd --system robustmq-edge
        log "created group robustmq-edge"
    fi
    if ! getent passwd robustmq-edge >/dev/null; then
        useradd --system --gid robustmq-edge --no-create-home \
            --home-dir /var/lib/robustmq-edge --shell /usr/sbin/nologin \
            --comment "robustmq-edge MQTT broker" robustmq-edge
        log "created user robustmq-edge"
    fi
fi

# install_replacing WHAT MODE SRC DST: installs SRC as DST unless DST already has its bytes.
# Atomic replace (a temporary file renamed over DST), so a running broker keeps the inode of
# its old binary until restarted.
install_replacing() {
    local what="$1" mode="$2" src="$3" dst="$4"
    mkdir -p "$(dirname "$dst")"
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        log "$what unchanged: $dst"
    else
        install -m "$mode" "$src" "$dst.tmp"
        mv -f "$dst.tmp" "$dst"
        CHANGED=1
        log "installed $dst from $src"
    fi
}

# 2. Binary.
install_replacing binary 0755 "$BINARY" "$BIN_DST"

# 3. Config (never overwrite local edits).
mkdir -p "$CONF_DIR"
chmod 0755 "$CONF_DIR"
if [ ! -f "$CONF_DST" ]; then
    install -m 0644 "$CONFIG" "$CONF_DST"
    CHANGED=1
    log "installed $CONF_DST from $CONFIG"
elif cmp -s "$CONFIG" "$CONF_DST"; then
    log "config unchanged: $CONF_DST"
else
    install -m 0644 "$CONFIG" "$CONF_DST.new"
    log "kept your $CONF_DST; the shipped version is in $CONF_DST.new (diff them)"
fi

# 3b. Password file with a first user, and an example ACL (never overwriting existing ones).
PASSWD_DST="$CONF_DIR/passwd"
ACL_DST="$CONF_DIR/acl"
own_secret() { # root:robustmq-edge 0640: the service (group) reads, nobody else does.
    chmod 0640 "$1"
    if [ "$STAGED" = 0 ]; then chown root:robustmq-edge "$1"; fi
}
if [ -s "$PASSWD_DST" ]; then
    log "password file kept: $PASSWD_DST"
elif ! "$BIN_DST" --version >/dev/null 2>&1; then
    log "binary cannot run here: create the first user later with"
    log "  robustmq-edge passwd -c /etc/robustmq-edge/passwd $MQTT_USER"
else
    if [ "$PASSWORD_STDIN" = 1 ]; then
        IFS= read -r PASSWORD || true
        [ -n "$PASSWORD" ] || { echo "--password-stdin: empty password" >&2; exit 1; }
        GENERATED=0
    else
        PASSWORD="$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)"
        GENERATED=1
    fi
    printf '%s\n' "$PASSWORD" | "$BIN_DST" passwd -c --password-stdin "$PASSWD_DST" "$MQTT_USER"
    own_secret "$PASSWD_DST"
    CHANGED=1
    log "created $PASSWD_DST with user $MQTT_USER"
    if [ "$GENERATED" = 1 ]; then
        # Printed once, here; only its hash is stored.
        printf '\n  MQTT user: %s\n  password:  %s\n  (not shown again; change it with: robustmq-edge passwd %s %s)\n\n' \
            "$MQTT_USER" "$PASSWORD" /etc/robustmq-edge/passwd "$MQTT_USER"
    fi
fi
if [ -s "$ACL_DST" ]; then
    log "ACL kept: $ACL_DST"
else
    cat > "$ACL_DST" <<EOF_ACL
# Who may read and write what (mosquitto acl_file syntax; README "Users and access control").
# Edit, then: systemctl reload robustmq-edge. Anything not granted here is refused.

# Sensors: one user per sensor, named after it. Each publishes under its own name only
# (user freezer-1 writes sensors/freezer-1/...), and reads commands sent to it.
pattern write sensors/%u/#
pattern read commands/%u/#

# Apps (dashboards, the till, alerting): read every sensor, own apps/..., send commands.
user app
topic read sensors/#
topic readwrite apps/#
topic write commands/#

# The first user created by targets/install.sh: everything.
user $MQTT_USER
topic readwrite #
EOF_ACL
    own_secret "$ACL_DST"
    CHANGED=1
    log "created $ACL_DST (example store ACL)"
fi

# 4. Check the config with the installed binary, when it can run here.
if "$BIN_DST" --version >/dev/null 2>&1; then
    if ! "$BIN_DST" --config "$CONF_DST" check-config; then
        echo "config check failed: fix $CONF_DST, then run this script again" >&2
        exit 1
    fi
    log "config check passed"
else
    log "binary cannot run on this machine (cross-built?); config check skipped"
fi

# 5. systemd unit.
install_replacing unit 0644 "$UNIT_SRC" "$UNIT_DST"

if [ "$STAGED" = 1 ] || ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
    log "systemd not managed here (staged install or no systemd); done"
    exit 0
fi
systemctl daemon-reload
systemctl enable robustmq-edge.service >/dev/null
log "enabled robustmq-edge.service"
if [ "$START" = 1 ]; then
    if ! systemctl is-active --quiet robustmq-edge.service; then
        systemctl start robustmq-edge.service
        log "started robustmq-edge.service"
    elif [ "$CHANGED" = 1 ]; then
        systemctl restart robustmq-edge.service
        log "restarted robustmq-edge.service (binary, config or unit changed)"
    else
        log "robustmq-edge.service already running and up to date"
    fi
    systemctl --no-pager --lines=5 status robustmq-edge.service || true
fi
