"""The guard's lexical half: hashed word uni- and bigrams into a logistic regression.

Sentence embeddings average a prompt's framing and its content together;
a linear model over the words themselves adds the content back (which
request, which substance, which target) at a cost of well under a
millisecond. Its logit is added to the embedding head's logit (weighted by
`Head.lex_weight`). Pure numpy and zlib: crc32 hashes are the same on
every platform, so the shipped weights mean the same thing everywhere.
"""
from __future__ import annotations

import re
import zlib

import numpy as np

BUCKETS = 1 << 18  # hashed features; collisions are rare at a few tens of thousands of distinct grams
MAX_CHARS = 20_000  # bounds the cost on huge inputs (the guard windows the embedding side)
_WORD = re.compile(r"\w+")
# Framing, not content: function words, tense and time expressions, generic
# subjects. Dropped so the lexical side reads WHAT is asked, not how it is
# phrased (the phrasing-past source would otherwise make "did"/"past" unsafe
# words, and benign questions would make other tenses safe words).
STOP = frozenset("""
a an the and or but if then so of to in on at for from by with about as into onto over under after before
during since until while than is are was were be been being am do does did done doing have has had having
will would shall should can could may might must i me my mine you your yours we us our they them their he
him his she her it its this that these those there here what which who whom whose how why when where
people person someone somebody individuals individual one ones past future present years year decades decade
ago coming upcoming later earlier era times time historically once now today nowadays tomorrow yesterday
ever never please s t ll d re ve m
""".split())


_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _words(text: str) -> list[str]:
    """Lower-cased words; a run of CJK characters (no spaces between words) counts as its character pairs."""
    out = []
    for w in _WORD.findall(text[:MAX_CHARS].lower()):
        if _CJK.search(w) and len(w) > 1:
            out += [w[i: i + 2] for i in range(len(w) - 1)]
        elif w not in STOP:
            out.append(w)
    return out


def grams(text: str) -> np.ndarray:
    """Sorted, distinct hashed unigrams and bigrams of the lower-cased words."""
    words = _words(text)
    pieces = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return np.array(sorted({zlib.crc32(p.encode("utf-8")) & (BUCKETS - 1) for p in pieces}), np.int64)


class Bags:
    """Many texts as one flat array of hashed grams (a CSR matrix with binary, L2-normalised rows)."""

    def __init__(self, texts: list[str]):
        per = [grams(t) for t in texts]
        self.n = len(per)
        self.counts = np.array([len(g) for g in per], np.int64)
        self.idx = np.concatenate(per) if per else np.zeros(0, np.int64)
        self.rows = np.repeat(np.arange(self.n), self.counts)
        self.value = 1.0 / np.sqrt(np.maximum(self.counts, 1))  # per row: binary features, unit norm

    def logits(self, w: np.ndarray, b: float) -> np.ndarray:
        return np.bincount(self.rows, weights=w[self.idx], minlength=self.n) * self.value + b

    def grad(self, r: np.ndarray) -> np.ndarray:
        """X^T r for per-row residuals r."""
        return np.bincount(self.idx, weights=(r * self.value)[self.rows], minlength=BUCKETS)


def fit(texts: list[str], unsafe: np.ndarray, weight: np.ndarray, l2: float = 1e-5, steps: int = 300,
        lr: float = 0.05) -> tuple[np.ndarray, float]:
    """Class-balanced, weighted logistic regression by full-batch Adam (deterministic)."""
    bags = Bags(texts)
    y = unsafe.astype(np.float64)
    pos = float((weight * y).sum() / weight.sum())
    cw = weight * np.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
    cw = cw / cw.sum()
    w, b = np.zeros(BUCKETS), 0.0
    m, v, mb, vb = np.zeros(BUCKETS), np.zeros(BUCKETS), 0.0, 0.0
    for t in range(1, steps + 1):
        r = (1 / (1 + np.exp(-bags.logits(w, b))) - y) * cw
        g, gb = bags.grad(r) + l2 * w, float(r.sum())
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
        w -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        b -= lr * (mb / (1 - 0.9 ** t)) / (np.sqrt(vb / (1 - 0.999 ** t)) + 1e-8)
    return w.astype(np.float32), float(b)
