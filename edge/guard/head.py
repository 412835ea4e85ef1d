"""The guard's classifier head: a small numpy MLP over sentence embeddings.

One hidden layer feeds two outputs: an `unsafe` logit and category logits
(meaningful when unsafe). When the head carries lexical weights
(edge/guard/lexical.py) and is given the texts, their logit is added to the
`unsafe` logit; the category always comes from the embedding side. The
weights ship as `head.npz` next to this file; running it needs only numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadModelFile

HEAD_PATH = Path(__file__).resolve().parent / "head.npz"


@dataclass
class Head:
    w1: np.ndarray  # (encoder width, hidden)
    b1: np.ndarray
    w_unsafe: np.ndarray  # (hidden,)
    b_unsafe: float
    w_cat: np.ndarray  # (hidden, n_categories)
    b_cat: np.ndarray
    categories: tuple[str, ...]
    threshold: float
    lex_w: np.ndarray | None = None  # (lexical.BUCKETS,) hashed-gram weights, or None
    lex_b: float = 0.0
    lex_weight: float = 0.0  # how much the lexical logit counts next to the embedding logit
    calibration: tuple[str, ...] = ()  # the out-of-distribution sets whose benign prompts bounded the threshold

    def hidden(self, x: np.ndarray) -> np.ndarray:
        # The guard runs this inside its encoder's BLAS thread limit (one thread): a plain
        # product is then the fastest; unlimited, OpenBLAS threads even a one-row product.
        z = x @ self.w1
        return np.maximum(z + self.b1, 0.0)

    def lexical(self, texts: list[str]) -> np.ndarray:
        """The weighted lexical logit of each text (zeros when the head has none)."""
        if self.lex_w is None or not self.lex_weight:
            return np.zeros(len(texts), np.float32)
        from .lexical import Bags

        return (self.lex_weight * Bags(texts).logits(self.lex_w, self.lex_b)).astype(np.float32)

    def __call__(self, x: np.ndarray, texts: list[str] | str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(unsafe probability (n,), category probabilities (n, k)) for embeddings x (n, d).

        `texts` (one per row, or one string for every row: the windows of one
        text) adds the lexical logit; without them only the embedding side scores.
        """
        if isinstance(texts, str):
            texts = [texts]
        h = self.hidden(x)
        z = h @ self.w_unsafe + self.b_unsafe
        if texts is not None:
            z = z + self.lexical(texts)
        z = np.clip(z, -40, 40)
        logits = h @ self.w_cat + self.b_cat
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return 1.0 / (1.0 + np.exp(-z)), e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path = HEAD_PATH) -> Path:
        from ..fsutil import atomic_path

        with atomic_path(path, mode=0o644) as tmp, open(tmp, "wb") as f:
            # float16 halves the widest matrix (an ensemble's side-by-side hidden layers) for no change in verdicts.
            np.savez_compressed(f, w1=self.w1.astype(np.float16), b1=self.b1.astype(np.float32),
                                w_unsafe=self.w_unsafe.astype(np.float32), b_unsafe=np.float32(self.b_unsafe),
                                w_cat=self.w_cat.astype(np.float32), b_cat=self.b_cat.astype(np.float32),
                                categories=np.array(self.categories), threshold=np.float32(self.threshold),
                                calibration=np.array(self.calibration, dtype=str),
                                **({} if self.lex_w is None else
                                   {"lex_w": self.lex_w.astype(np.float32), "lex_b": np.float32(self.lex_b),
                                    "lex_weight": np.float32(self.lex_weight)}))
        return Path(path)

    @classmethod
    def load(cls, path: Path = HEAD_PATH) -> "Head":
        try:
            with np.load(path, allow_pickle=False) as z:
                lex = ({"lex_w": z["lex_w"], "lex_b": float(z["lex_b"]), "lex_weight": float(z["lex_weight"])}
                       if "lex_w" in z.files else {})
                calibration = tuple(str(c) for c in z["calibration"]) if "calibration" in z.files else ()
                return cls(z["w1"].astype(np.float32), z["b1"], z["w_unsafe"], float(z["b_unsafe"]), z["w_cat"], z["b_cat"],
                           tuple(str(c) for c in z["categories"]), round(float(z["threshold"]), 4), **lex,
                           calibration=calibration)
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"Cannot read the guard head {path}: {exc}",
                               "Reinstall edge, or retrain it with: edge guard train") from exc
