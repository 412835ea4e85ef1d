"""Benchmarks: scripts that measure and print numbers (never tests).

`python -m edge.bench` (what `make bench` runs) runs each benchmark in
`SUITE` in turn; each module also runs alone with `python -m edge.bench.NAME`.
"""
from __future__ import annotations

# name -> (module, what it measures). Each module exports main(argv) -> int.
SUITE = {
    "decode": ("edge.bench.decode", "edge vs raw llama.cpp decode speed, time to first token, CLI start-up"),
    "backends": ("edge.bench.backends", "decode speed and TTFT per backend on SmolLM2 artifacts"),
    "convert": ("edge.bench.convert", "conversion time, size and quality per format"),
    "server": ("edge.bench.server_load", "8 concurrent streaming clients against edge serve"),
    "matrix": ("edge.bench.matrix", "edge bench: formats x quants x backends with a recommendation"),
    "rpc": ("edge.bench.rpc", "edge bench --rpc: local vs split over loopback and network-namespace workers"),
}
