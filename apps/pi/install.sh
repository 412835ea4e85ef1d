#!/bin/sh
# Install or update an edge bundle, then (re)start its server and/or worker. Safe to re-run:
# files are copied only when they changed, the virtual environment is rebuilt
# only when the pinned requirements changed, the service restarts only when
# something changed.
#
#   EDGE_ROOT    install under another root (an image, a test), default /
#   EDGE_PREFIX  where the bundle lives, default: where this script is
#   EDGE_VENV    use this existing Python environment instead of PREFIX/venv
#   EDGE_START   1: start or restart the server, 0: do not (default: 1 unless EDGE_ROOT is set)
#   EDGE_USER    the system user the service runs as, default @SERVICE@ (created if missing)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${EDGE_ROOT:-}
PREFIX=${EDGE_PREFIX:-$HERE}
DEST="$ROOT$PREFIX"
SERVICE=@SERVICE@
SVC_USER=${EDGE_USER:-$SERVICE}
case "$SVC_USER" in (*[!A-Za-z0-9_-]*|-*|"") echo "EDGE_USER '$SVC_USER' is not a user name" >&2; exit 2;; esac
if [ -n "$ROOT" ]; then START=${EDGE_START:-0}; else START=${EDGE_START:-1}; fi
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

mkdir -p "$DEST/state"
if [ "$DEST" != "$HERE" ]; then
    if command -v rsync >/dev/null 2>&1; then
        rsync -a --checksum --delete --exclude /venv --exclude /state --exclude /model/verified.json --exclude __pycache__ "$HERE/" "$DEST/"
    else
        cp -R "$HERE/." "$DEST/"
    fi
fi

# The environment: pinned packages, reinstalled only when the pins change.
# llama.cpp is built with its RPC backend, for `edge worker` and `--rpc`.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_RPC=ON}"
if [ -n "${EDGE_VENV:-}" ]; then
    ln -sfn "$EDGE_VENV" "$DEST/venv"
elif ! cmp -s "$DEST/requirements-aarch64.txt" "$DEST/state/requirements.installed" 2>/dev/null; then
    [ -x "$DEST/venv/bin/python" ] || python3 -m venv "$DEST/venv"
    "$DEST/venv/bin/python" -m pip install -q --upgrade pip
    "$DEST/venv/bin/python" -m pip install -q -r "$DEST/requirements-aarch64.txt"
    "$DEST/venv/bin/python" -m pip install -q --no-deps -r "$DEST/requirements-data.txt"
    cp "$DEST/requirements-aarch64.txt" "$DEST/state/requirements.installed"
fi

# The systemd units, with this install's paths and users: the server (edge.service,
# run.sh) runs as its dedicated system user; the worker (edge-worker.service,
# worker.sh) as the installing user, who owns the state folder its cache lives in.
USER_NAME=$(id -un)
UNIT_DIR="$ROOT/etc/systemd/system"
UNITS=""
[ -f "$DEST/edge.service" ] && UNITS="$SERVICE:edge.service:run.sh:server"
[ -f "$DEST/edge-worker.service" ] && UNITS="$UNITS $SERVICE-worker:edge-worker.service:worker.sh:worker"
for unit in $UNITS; do
    name=${unit%%:*}; rest=${unit#*:}; template=${rest%%:*}
    user=$USER_NAME; [ "$template" = edge.service ] && user=$SVC_USER
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@USER@|$user|g" "$DEST/$template" > "$DEST/state/$name.service"
    if [ -n "$ROOT" ]; then
        mkdir -p "$UNIT_DIR" && cp "$DEST/state/$name.service" "$UNIT_DIR/$name.service"
    fi
done

CHANGED=1
if cmp -s "$DEST/BUNDLE.json" "$DEST/state/BUNDLE.installed" 2>/dev/null; then CHANGED=0; fi
cp "$DEST/BUNDLE.json" "$DEST/state/BUNDLE.installed"
[ "$START" = 1 ] || { echo "installed in $DEST (not started)"; exit 0; }

start_unit() {  # name script log-name
    name=$1; script=$2; logname=$3
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if [ "$logname" = server ] && ! id -u "$SVC_USER" >/dev/null 2>&1; then
            $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$SVC_USER"
            echo "created system user $SVC_USER"
        fi
        $SUDO cp "$DEST/state/$name.service" "/etc/systemd/system/$name.service"
        $SUDO systemctl daemon-reload
        $SUDO systemctl enable "$name" >/dev/null 2>&1 || true
        if [ "$CHANGED" = 1 ] || ! systemctl is-active --quiet "$name"; then
            $SUDO systemctl restart "$name"
            echo "started $name (systemd)"
        else
            echo "$name is up to date and running"
        fi
    else
        # No systemd (a container, a chroot): keep one background process per prefix and unit.
        PID_FILE="$DEST/state/$logname.pid"
        if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            if [ "$CHANGED" = 0 ]; then echo "$name is up to date and running"; return 0; fi
            kill "$(cat "$PID_FILE")"
            sleep 1
        fi
        nohup "$DEST/$script" > "$DEST/state/$logname.log" 2>&1 < /dev/null &
        echo $! > "$PID_FILE"
        echo "started $name (background, log in $DEST/state/$logname.log)"
    fi
}

for unit in $UNITS; do
    name=${unit%%:*}; rest=${unit#*:}; rest=${rest#*:}; script=${rest%%:*}; logname=${rest#*:}
    start_unit "$name" "$script" "$logname"
done
