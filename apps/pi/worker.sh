#!/bin/sh
# The worker service command: `edge worker` with the options in config.json,
# using the edge source shipped in this bundle.
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}" EDGE_HOME="$HERE/state/edge-home" \
    exec "$HERE/venv/bin/python" -m edge.apps.pi.worker "$HERE/config.json"
