"""Tool retrieval: keep only the tools relevant to a query.

Each tool's text (its name split into words, description, and each
parameter's name, description and enum values: `Tool.text`) is embedded
once with the shared MiniLM encoder (edge.embed) and cached on disk under
$EDGE_HOME/cache/tool-embeddings/<encoder build>, keyed by a hash of that text, so a large
registry costs one encoder pass per new or changed tool. A query is cut into
windows of QUERY_TOKENS word pieces, at most QUERY_WINDOWS of them (encoder
time grows with length and long chat turns set the tail latency); each
window is encoded on its own, and tools are ranked by their mean cosine
similarity to the windows plus a BM25 term over the same text with the name counted twice
(names such as "Restaurants_2_FindRestaurants" share exact words with
queries that embeddings blur). A query keeps at most the top-k tools, and of
those only the ones scoring within a margin of the best (at least one), plus
every tool whose cosine similarity passes the threshold.

Choices were made on the even-numbered BFCL retrieval queries and checked on
the odd ones (`edge eval bfcl --retrieval` prints both halves). Tried and not
kept: embedding a tool's name, description and parameters apart and scoring
the max or a weighted sum of their cosines with the whole text's (recall@5,
tuning half, at best 0.859 against 0.854, held-out half 0.856 against 0.857);
a description-first tool text (cosine only 0.768 against 0.769).
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..store import home

# Retrieval defaults, chosen on the union of BFCL functions with `edge eval bfcl
# --retrieval` (tuning half, other half held out); the figures behind each choice are
# in docs/experiments.md, "tools: retrieval".
DEFAULT_K = 3
DEFAULT_THRESHOLD = 0.6
# Of the top-k, keep only tools scoring within this of the best one: a clear winner
# goes into the prompt alone, which shrinks prompts most for the expected tools lost.
DEFAULT_MARGIN = 0.15
# Best-tool cosine above which tool_choice=auto forces a call.
DEFAULT_RELEVANCE = 0.25
# Weight of BM25 next to cosine similarity (a small weight breaks ties between close
# tools by the words the query shares with them; rank fusion was worse).
LEXICAL_WEIGHT = 0.02
# BM25 term-frequency saturation: a higher k1 lets a word the query repeats from a
# tool's text ("weather", a parameter name) count more.
BM25_K1 = 2.5
# Word pieces per query window, and how many windows are encoded. Encoder time grows
# with the pieces, so long queries are cut; but a request with several calls names its
# later tools past the first 32 pieces. Each window is encoded on its own and a tool
# scores its mean cosine to them; past 2 windows recall barely moves while the tail
# latency grows with each.
QUERY_TOKENS = 32
QUERY_WINDOWS = 2
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
        self.lexical = BM25([f"{t.name} {t.name} {t.text()}" for t in tools], k1=BM25_K1)
        self.build_s = time.perf_counter() - t0

    def _embed_tools(self) -> np.ndarray:
        return embed_cached(self.encoder, [t.text() for t in self.tools])

    def similarity(self, query: str) -> np.ndarray:
        """Mean cosine similarity of the query's windows to every tool."""
        q = query_vector(self.encoder, query)
        # Not `matrix @ q`: OpenBLAS threads that product, and next to the encoder's
        # spinning threads it was an order of magnitude slower than einsum's own loop.
        return np.einsum("nd,d->n", self.matrix, q)

    def search(self, query: str, k: int = DEFAULT_K, threshold: float | None = DEFAULT_THRESHOLD,
               margin: float | None = None, only: set[str] | None = None) -> list[tuple[str, float]]:
        """(name, similarity) of the kept tools, best first.

        The top `k` by score, less those scoring more than `margin` below the
        best (None: no cut), plus any tool with cosine similarity >= `threshold`;
        with `only`, among those tools alone.
        """
        n = len(self.names)
        if n == 0:
            return []
        cos = self.similarity(query)
        s = cos + LEXICAL_WEIGHT * self.lexical.scores(query)
        if only is not None:
            out = np.array([name not in only for name in self.names])
            s, cos = np.where(out, -np.inf, s), np.where(out, -np.inf, cos)
            n = n - int(out.sum())
        k = max(0, min(k, n))
        keep = set(np.argpartition(-s, k - 1)[:k].tolist()) if k else set()
        if keep and margin is not None:
            best = max(s[i] for i in keep)
            keep = {i for i in keep if s[i] >= best - margin}
        if threshold is not None:
            keep.update(np.nonzero(cos >= threshold)[0].tolist())
        order = sorted(keep, key=lambda i: -s[i])
        return [(self.names[i], float(cos[i])) for i in order]


def text_key(text: str) -> str:
    """Hash of an embedded text: the name of its cached vector."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def embed_cached(encoder, texts: list[str]) -> np.ndarray:
    """(n, 384) embeddings of `texts`, read from or added to the on-disk cache."""
    folder = cache_dir()
    rows: list[np.ndarray | None] = []
    todo: list[int] = []
    for i, text in enumerate(texts):
        try:
            rows.append(np.load(folder / f"{text_key(text)}.npy"))
        except (OSError, ValueError):
            rows.append(None)
            todo.append(i)
    if todo:
        vecs = encoder.encode([texts[i] for i in todo])
        folder.mkdir(parents=True, exist_ok=True)
        for i, v in zip(todo, vecs):
            rows[i] = np.asarray(v, dtype=np.float32)
            _save(folder / f"{text_key(texts[i])}.npy", rows[i])
    if not rows:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack(rows).astype(np.float32)


def query_vector(encoder, query: str) -> np.ndarray:
    """Mean of the embeddings of the query's first QUERY_WINDOWS windows of
    QUERY_TOKENS word pieces: its dot product with a tool's unit vector is the
    mean cosine over the windows."""
    ids = encoder.token_ids(query)
    starts = list(range(0, len(ids), QUERY_TOKENS))[:QUERY_WINDOWS] or [0]
    vecs = encoder.encode_pieces([ids[s : s + QUERY_TOKENS] for s in starts])
    return np.asarray(vecs, dtype=np.float32).mean(axis=0)


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
    from ..fsutil import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, vec)
