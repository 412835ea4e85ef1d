"""Next-token selection for the generation loops we own.

Greedy, temperature, top-k, top-p and repetition penalty over a numpy logits
vector, plus the caller's logits hook (constrained decoding). One module,
shared by every backend whose loop runs in Python.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import GenerationOptions


class Sampler:
    """Picks the next token; holds the seeded RNG for one generation."""

    def __init__(self, opts: GenerationOptions):
        self.opts = opts
        self.rng = np.random.default_rng(opts.seed)
        self.greedy = opts.temperature == 0
        self.plain = self.greedy and opts.repeat_penalty == 1.0 and opts.logits_hook is None

    def __call__(self, logits: np.ndarray, ids: Sequence[int], banned: Sequence[int] = ()) -> int:
        if self.plain:
            # The hot path of greedy decoding: no copy, no masking, unless the best token is banned.
            tok = int(np.argmax(logits))
            if tok not in banned:
                return tok
        logits = np.array(logits, dtype=np.float32, copy=True)
        o = self.opts
        if banned:
            logits[list(banned)] = -np.inf
        if o.repeat_penalty != 1.0 and len(ids):
            seen = np.unique(np.asarray(ids[-64:], dtype=np.int64))
            seen = seen[seen < logits.shape[0]]
            vals = logits[seen]
            logits[seen] = np.where(vals > 0, vals / o.repeat_penalty, vals * o.repeat_penalty)
        if o.logits_hook is not None:
            o.logits_hook(ids, logits)
        if self.greedy:
            return int(np.argmax(logits))
        return sample(logits, o.temperature, o.top_k, o.top_p, self.rng)


def sample(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    n = logits.shape[0]
    k = top_k if 0 < top_k < n else n
    if k < n:
        idx = np.argpartition(logits, -k)[-k:]
    else:
        idx = np.arange(n)
    vals = logits[idx].astype(np.float64) / max(temperature, 1e-6)
    finite = np.isfinite(vals)
    if not finite.any():
        return int(idx[np.argmax(logits[idx])])
    vals = np.where(finite, vals, -np.inf)
    order = np.argsort(-vals)
    idx, vals = idx[order], vals[order]
    p = np.exp(vals - vals[0])
    p /= p.sum()
    if top_p < 1.0:
        cut = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        idx, p = idx[:cut], p[:cut] / p[:cut].sum()
    return int(idx[rng.choice(len(p), p=p)])
