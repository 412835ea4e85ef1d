"""Tool retrieval: keep only the tools relevant to a query.

Each tool's text (its name split into words, description, and each
parameter's name, description and enum values: `Tool.text`) is embedded
once with the shared MiniLM encoder (edge.embed) and cached on disk under
$EDGE_HOME/cache/tool-embeddings/<encoder build>, keyed by a hash of that text, so a large
registry costs one encoder pass per new or changed tool. A query is encoded
from its first QUERY_TOKENS word pieces (encoder time grows with length and
long chat turns set the tail latency), and tools are ranked by cosine
similarity plus a BM25 term over the same text with the name counted twice
(names such as "Restaurants_2_FindRestaurants" share exact words with
queries that embeddings blur). A query keeps at most the top-k tools, and of
those only the ones scoring within a margin of the best (at least one), plus
every tool whose cosine similarity passes the threshold.

Choices were made on the even-numbered BFCL retrieval queries and checked on
the odd ones (`edge eval bfcl --retrieval` prints both halves).
"""
from __future__ import annotations

import math
import os
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..store import home

# Defaults measured on the union of BFCL functions (edge eval bfcl --retrieval).
DEFAULT_K = 3
DEFAULT_THRESHOLD = 0.6
# Of the top-k, keep only tools scoring within this of the best one: when one tool is
# clearly ahead the others are dropped. Chosen on BFCL live_multiple's even-numbered
# items, odd ones held out (edge eval bfcl --retrieval --limit 0 --json prints both):
# prompt tokens with all tools / with the kept ones, and the share of expected
# functions kept, tuning half: top-3 only 1.34x / 0.996; margin 0.10 2.30x / 0.975,
# 0.15 2.13x / 0.989, 0.20 1.97x / 0.989 (held out at 0.15: 2.12x / 0.987). The
# threshold adds no expected function there (0.15 without it: 2.14x / 0.989).
DEFAULT_MARGIN = 0.15
# Best-tool cosine above which tool_choice=auto forces a call. On BFCL (edge eval bfcl):
# 85% of relevant queries pass it, 51% of irrelevance queries stay under it.
DEFAULT_RELEVANCE = 0.25
# Weight of BM25 next to cosine similarity. Per-function recall@5 over the BFCL pool
# (tuning half): cosine only 0.80, + 0.02 BM25 0.864, + 0.04 0.862; reciprocal-rank
# fusion of the two rankings was worse (0.841).
LEXICAL_WEIGHT = 0.02
# Word pieces of the query that are encoded. Encoder time grows linearly with them
# (float encoder on one x86 core: 14 ms at 32, 25 ms at 64; the int8 one on 2 threads
# takes about a sixth of that), while per-function recall@5 on the tuning half was
# 0.865 at 32, 0.864 at 64 and 0.871 at 256 (float encoder).
QUERY_TOKENS = 32
_STOP = frozenset("the a an of to in for and or is are be with on by from at as it this that what which "
                  "can you me my i please find get give tell".split())
CACHE_DIR = "cache/tool-embeddings"


def cache_dir() -> Path:
    """Per encoder build: a changed encoder graph must not reuse old vectors."""
    from ..embed import CACHE_NAME

    return home() / CACHE_DIR / Path(CACHE_NAME).stem


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
        self.lexical = BM25([f"{t.name} {t.name} {t.text()}" for t in tools])
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

    def similarity(self, query: str) -> np.ndarray:
        """Cosine similarity of the query to every tool."""
        q = np.asarray(self.encoder.encode([query], max_tokens=QUERY_TOKENS), dtype=np.float32)[0]
        # Not `matrix @ q`: OpenBLAS threads that product, and next to the encoder's
        # spinning threads it took 3-7 ms on 2 cores; einsum's own loop takes 0.2 ms.
        return np.einsum("nd,d->n", self.matrix, q)

    def search(self, query: str, k: int = DEFAULT_K, threshold: float | None = DEFAULT_THRESHOLD,
               margin: float | None = None) -> list[tuple[str, float]]:
        """(name, similarity) of the kept tools, best first.

        The top `k` by score, less those scoring more than `margin` below the
        best (None: no cut), plus any tool with cosine similarity >= `threshold`.
        """
        n = len(self.names)
        if n == 0:
            return []
        cos = self.similarity(query)
        s = cos + LEXICAL_WEIGHT * self.lexical.scores(query)
        k = max(0, min(k, n))
        keep = set(np.argpartition(-s, k - 1)[:k].tolist()) if k else set()
        if keep and margin is not None:
            best = max(s[i] for i in keep)
            keep = {i for i in keep if s[i] >= best - margin}
        if threshold is not None:
            keep.update(np.nonzero(cos >= threshold)[0].tolist())
        order = sorted(keep, key=lambda i: -s[i])
        return [(self.names[i], float(cos[i])) for i in order]


def words(text: str) -> list[str]:
    """Lower-case word stems, camelCase and snake_case split, stop words dropped."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    out = []
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if len(w) > 1 and w not in _STOP:
            out.append(w[:-1] if w.endswith("s") and len(w) > 3 else w)
    return out


class BM25:
    """Okapi BM25 over short tool texts, with posting lists (no dense matrix)."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        docs = [words(t) for t in texts]
        self.n = len(docs)
        avg = sum(map(len, docs)) / max(1, self.n)
        df = Counter(w for d in docs for w in set(d))
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        rows: dict[str, list] = defaultdict(list)
        for i, d in enumerate(docs):
            for w, c in Counter(d).items():
                rows[w].append((i, c * (k1 + 1) / (c + k1 * (1 - b + b * len(d) / avg))))
        for w, items in rows.items():
            idf = math.log(1 + (self.n - df[w] + 0.5) / (df[w] + 0.5))
            ids, tf = zip(*items)
            self.postings[w] = (np.array(ids, dtype=np.int64), np.array(tf, dtype=np.float32) * idf)

    def scores(self, query: str) -> np.ndarray:
        s = np.zeros(self.n, dtype=np.float32)
        for w in set(words(query)):
            hit = self.postings.get(w)
            if hit is not None:
                s[hit[0]] += hit[1]
        return s


def _save(path: Path, vec: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, vec)
    os.replace(tmp, path)
