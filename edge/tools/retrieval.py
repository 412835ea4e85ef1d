"""Tool retrieval: keep only the tools relevant to a query.

Each tool's name, description and parameter names are embedded once with
the shared MiniLM encoder (edge.embed) and cached on disk under
$EDGE_HOME/cache/tool-embeddings, keyed by a hash of that text, so a large
registry costs one encoder pass per new or changed tool. A query keeps the
top-k tools plus every tool whose cosine similarity passes the threshold.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..store import home

# Defaults measured on the union of BFCL functions (edge eval bfcl --retrieval).
DEFAULT_K = 3
DEFAULT_THRESHOLD = 0.6
# Best-tool similarity above which tool_choice=auto forces a call.
DEFAULT_RELEVANCE = 0.3
CACHE_DIR = "cache/tool-embeddings"


def cache_dir() -> Path:
    return home() / CACHE_DIR


def _encoder():
    from ..embed import Encoder

    return Encoder.default()


class Retriever:
    """Cosine search over a fixed list of tools."""

    def __init__(self, tools: list, encoder=None):
        self.tools = tools
        self.names = [t.name for t in tools]
        self.encoder = encoder or _encoder()
        t0 = time.perf_counter()
        self.matrix = self._embed_tools()
        self.build_s = time.perf_counter() - t0

    def _embed_tools(self) -> np.ndarray:
        folder = cache_dir()
        rows: list[np.ndarray | None] = []
        todo: list[int] = []
        for i, t in enumerate(self.tools):
            f = folder / f"{t.key()}.npy"
            try:
                rows.append(np.load(f))
            except (OSError, ValueError):
                rows.append(None)
                todo.append(i)
        if todo:
            vecs = self.encoder.encode([self.tools[i].text() for i in todo])
            folder.mkdir(parents=True, exist_ok=True)
            for i, v in zip(todo, vecs):
                v = np.asarray(v, dtype=np.float32)
                rows[i] = v
                _save(folder / f"{self.tools[i].key()}.npy", v)
        if not rows:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack(rows).astype(np.float32)

    def scores(self, query: str) -> np.ndarray:
        q = np.asarray(self.encoder.encode([query]), dtype=np.float32)[0]
        return self.matrix @ q

    def search(self, query: str, k: int = DEFAULT_K, threshold: float | None = DEFAULT_THRESHOLD) -> list[tuple[str, float]]:
        """(name, similarity) of the kept tools, best first."""
        n = len(self.names)
        if n == 0:
            return []
        s = self.scores(query)
        k = max(0, min(k, n))
        keep = set(np.argpartition(-s, k - 1)[:k].tolist()) if k else set()
        if threshold is not None:
            keep.update(np.nonzero(s >= threshold)[0].tolist())
        order = sorted(keep, key=lambda i: -s[i])
        return [(self.names[i], float(s[i])) for i in order]


def _save(path: Path, vec: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, vec)
    os.replace(tmp, path)
