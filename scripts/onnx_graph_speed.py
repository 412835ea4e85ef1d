"""Decode speed of edge's fused ONNX graph against optimum's export, on a tiny random model.

Usage: python scripts/onnx_graph_speed.py ARCH   (qwen3, gemma2, gemma3, ...; from the repository root)
Tiny models measure per-node overhead, not weight reading.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGE_HOME", tempfile.mkdtemp(prefix="edge-speed-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import onnx  # noqa: E402
from tiny_models import make_tiny_hf  # noqa: E402

from edge import backends, converters  # noqa: E402
from edge.config import LoadOptions  # noqa: E402
from edge.store import Store  # noqa: E402

arch = sys.argv[1]
hf = make_tiny_hf(arch, Path(os.environ["EDGE_HOME"]) / "src" / arch)
for graph in ("fused", "optimum"):
    name = f"speed-{arch}-{graph}"
    converters.convert(source=str(hf), to=("onnx",), quant={"onnx": ["fp32"]}, name=name, quality=False,
                       progress=False, force=True, onnx_graph=graph)
    art = next(a for a in Store().artifacts(name) if a.format == "onnx")
    mod = backends.get("onnx")
    b = mod.Backend(art, LoadOptions(n_ctx=256, threads=1), mod.Options())
    best = 0.0
    for _ in range(3):
        b.reset()
        b.forward([5, 6, 7])
        t = time.perf_counter()
        for i in range(200):
            b.forward([10 + i % 50])
        best = max(best, 200 / (time.perf_counter() - t))
    nodes = len(onnx.load(str(art.main_path)).graph.node)
    print(f"| {arch} | {graph} | {nodes} | {best:.0f} |", flush=True)
