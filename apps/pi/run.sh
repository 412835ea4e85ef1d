#!/bin/sh
# The service command: start `edge serve` with the options in config.json,
# using the edge source shipped in this bundle. Under systemd the config comes
# as a credential and EDGE_HOME is the unit's state directory.
HERE=$(cd "$(dirname "$0")" && pwd)
CONFIG="$HERE/config.json"
if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -f "$CREDENTIALS_DIRECTORY/config.json" ]; then
    CONFIG="$CREDENTIALS_DIRECTORY/config.json"
fi
PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}" EDGE_HOME="${STATE_DIRECTORY:-$HERE/state/edge-home}" \
    exec "$HERE/venv/bin/python" -m edge.apps.pi.serve "$CONFIG" "$HERE"
