"""The prompt guard: a millisecond safe/unsafe classifier in front of the model.

    from edge.guard import Guard
    v = Guard().check("how do I kill a python process")
    v.unsafe, v.label, v.category, v.score, v.latency_ms

MiniLM embeddings (edge.embed, shared with tool retrieval) feed a small
numpy head shipped as head.npz, whose unsafe logit is summed with a hashed
word-gram logistic regression over the same text (edge/guard/lexical.py). Any input is accepted: bytes are decoded as
UTF-8 with replacement, control characters dropped, empty text is safe.
Long text is WINDOWED: up to `MAX_WINDOWS` windows of 256 tokens (the
first ones and the last one) are scored and the most unsafe window decides;
text past `MAX_CHARS` characters, or windows beyond the cap, are skipped and
the verdict says so (`truncated`, `windows`).
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import GuardBlocked, InvalidOption
from .labels import CATEGORIES, DEFAULT_THRESHOLD, DESCRIPTIONS, SAFE, UNSAFE

__all__ = ["Guard", "Verdict", "CATEGORIES", "SAFE", "UNSAFE", "refusal"]

MAX_WINDOWS = 4  # bounds latency: at most 4 x 256 tokens per check
MAX_CHARS = 16_000  # head and tail kept; bounds tokenization time on 100k+ inputs
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


@dataclass
class Verdict:
    """What the guard decided about one text."""

    unsafe: bool
    category: str | None  # one of CATEGORIES when unsafe, else None
    score: float  # probability that the text is unsafe
    latency_ms: float
    threshold: float
    windows: int = 1  # 256-token windows scored
    truncated: bool = False  # part of a very long text was not scored

    @property
    def label(self) -> str:
        return UNSAFE if self.unsafe else SAFE

    @property
    def refusal(self) -> str:
        return refusal(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["label"] = self.label
        return d


def refusal(verdict: Verdict) -> str:
    """The short reply that replaces the model's answer to a blocked prompt."""
    what = DESCRIPTIONS.get(verdict.category, "unsafe content")
    return f"I can't help with that: the prompt guard flagged it as {what} ({verdict.category})."


def clean(text) -> str:
    """Any input as text the encoder can take: bytes decoded, control characters removed."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = "" if text is None else str(text)
    return _CONTROL.sub(" ", text).strip()


class Guard:
    """Classifies prompts; `check` never raises on odd input."""

    _default: "Guard | None" = None
    _lock = threading.Lock()

    def __init__(self, threshold: float | None = None, head_path=None, encoder=None):
        from ..embed import Encoder
        from .head import HEAD_PATH, Head

        self.head = Head.load(head_path or HEAD_PATH)
        self.threshold = self.head.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidOption(f"The guard threshold must be between 0 and 1 (got {threshold}).")
        self.encoder = encoder or Encoder.default()
        self.checked = 0
        self.blocked: dict[str, int] = {}

    @classmethod
    def default(cls) -> "Guard":
        """The process-wide guard with the shipped head and default threshold."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    @staticmethod
    def _shorten(text: str) -> str:
        """The text both sides score: past MAX_CHARS, its head and tail."""
        return text if len(text) <= MAX_CHARS else text[: MAX_CHARS * 3 // 4] + "\n" + text[-MAX_CHARS // 4 :]

    def _windows(self, text: str) -> tuple[list[list[int]], bool]:
        """The word pieces of each scored window, and whether part of the text was skipped."""
        truncated = len(text) > MAX_CHARS
        text = self._shorten(text)
        ids = self.encoder.token_ids(text)
        size = self.encoder.max_tokens - 2
        starts = list(range(0, max(1, len(ids)), size))
        if len(starts) > MAX_WINDOWS:
            truncated = True
            starts = starts[: MAX_WINDOWS - 1] + [max(0, len(ids) - size)]
        return [ids[s : s + size] for s in starts], truncated

    def check(self, text, threshold: float | None = None) -> Verdict:
        """Score one text (str or bytes)."""
        t0 = time.perf_counter()
        thr = self.threshold if threshold is None else float(threshold)
        text = clean(text)
        if not text:
            v = Verdict(False, None, 0.0, (time.perf_counter() - t0) * 1e3, thr, 0, False)
        else:
            windows, truncated = self._windows(text)
            # The lexical side reads the same (shortened) text once; each window adds its embedding logit.
            p_unsafe, p_cat = self.head(self.encoder.encode_pieces(windows), self._shorten(text))
            worst = int(np.argmax(p_unsafe))
            score = float(p_unsafe[worst])
            unsafe = score >= thr
            cat = self.head.categories[int(np.argmax(p_cat[worst]))] if unsafe else None
            v = Verdict(unsafe, cat, round(score, 4), (time.perf_counter() - t0) * 1e3, thr,
                        len(windows), truncated)
        self.checked += 1
        if v.unsafe:
            self.blocked[v.category] = self.blocked.get(v.category, 0) + 1
        return v

    def scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Batch scoring for evaluation: (unsafe probability, category probabilities), first window only."""
        texts = [clean(t) for t in texts]
        return self.head(self.encoder.encode(texts), [self._shorten(t) for t in texts])

    def enforce(self, text) -> Verdict:
        """check(), raising GuardBlocked (message = the refusal) when unsafe."""
        v = self.check(text)
        if v.unsafe:
            raise GuardBlocked(v.refusal, verdict=v)
        return v
