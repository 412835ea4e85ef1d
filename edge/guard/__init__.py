"""The prompt guard: a millisecond safe/unsafe classifier in front of the model.

    from edge.guard import Guard, screen_messages
    v = Guard().check("how do I kill a python process")
    v.unsafe, v.label, v.category, v.score, v.latency_ms, v.disguises
    v = screen_messages(Guard.default(), messages)   # every user-controlled text

A text is first normalised (edge/guard/normalise.py: invisible characters,
homoglyphs, leetspeak, split letters, base64/hex). It is then cut into
SEGMENTS: the whole text, each sentence and each pair of neighbouring
sentences. Every segment is embedded by the multilingual encoder
(edge/guard/encoder.py), which shares the work of a sentence between the
segments that hold it, and scored by a small numpy head (edge/guard/head.py)
plus a hashed word-gram logit (edge/guard/lexical.py); the most unsafe
segment decides, so benign filler around a request does not dilute it.
Work is linear in the text's length up to MAX_CHARS characters (about 3,000
words); past that only the head and tail are scored and the verdict says
`truncated`. Any input is accepted; empty text is safe.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import GuardBlocked, InvalidOption
from .labels import CATEGORIES, DEFAULT_THRESHOLD, DESCRIPTIONS, SAFE, SELF_HARM, SUPPORT, UNSAFE

__all__ = ["Guard", "Verdict", "CATEGORIES", "SAFE", "UNSAFE", "refusal", "screen_messages",
           "screened_texts", "segments", "EXIT_BLOCKED"]

MAX_CHARS = 20_000  # the cap: longer text keeps its first 3/4 and last 1/4 of this
SHORT_WORDS = 64  # the longest pair of neighbouring sentences scored as one segment
SEGMENT_WORDS = 48  # longer sentences are cut into pieces of this many words
SEGMENT_CHARS = 320  # ... or of this many characters (scripts without spaces)
EXIT_BLOCKED = 3  # exit status of `edge guard` and `edge run` when the guard blocks the text
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])|\n+")


@dataclass
class Verdict:
    """What the guard decided about one text (or all the texts of a conversation)."""

    unsafe: bool
    category: str | None  # one of CATEGORIES when unsafe, else None
    score: float  # probability that the most unsafe segment is unsafe
    latency_ms: float
    threshold: float
    windows: int = 1  # segments scored
    truncated: bool = False  # part of a very long text was not scored
    disguises: list[str] = field(default_factory=list)  # disguises undone before scoring
    segment: str = ""  # the most unsafe segment (first 200 characters)

    @property
    def label(self) -> str:
        return UNSAFE if self.unsafe else SAFE

    @property
    def refusal(self) -> str:
        return refusal(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["label"] = self.label
        if self.unsafe:
            d["refusal"] = self.refusal
        return d


def refusal(verdict: Verdict) -> str:
    """The short reply that replaces the model's answer to a blocked prompt.

    Self-harm gets a supportive reply that points to crisis help instead.
    """
    if verdict.category == SELF_HARM:
        return SUPPORT
    what = DESCRIPTIONS.get(verdict.category, "unsafe content")
    return f"I can't help with that: the prompt guard flagged it as {what} ({verdict.category})."


def clean(text) -> str:
    """Any input as text: bytes decoded (bad UTF-8 replaced), control characters removed."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = "" if text is None else str(text)
    return _CONTROL.sub(" ", text).strip()


def shorten(text: str) -> tuple[str, bool]:
    """The text that is scored, and whether part of it was dropped (the MAX_CHARS cap)."""
    if len(text) <= MAX_CHARS:
        return text, False
    return text[: MAX_CHARS * 3 // 4] + "\n" + text[-MAX_CHARS // 4:], True


def _pieces(sentence: str) -> list[str]:
    words = sentence.split()
    if len(words) > SEGMENT_WORDS:
        return [" ".join(words[i: i + SEGMENT_WORDS]) for i in range(0, len(words), SEGMENT_WORDS)]
    if len(sentence) > SEGMENT_CHARS * 2:
        return [sentence[i: i + SEGMENT_CHARS] for i in range(0, len(sentence), SEGMENT_CHARS)]
    return [sentence]


def _substantial(s: str) -> bool:
    """Enough text to mean something on its own: three words, or six characters of a script without spaces."""
    return len(s.split()) >= 3 or sum(ord(c) > 0x2E80 for c in s) >= 6


def units(text: str) -> list[str]:
    """The text's sentences, long ones cut into pieces of SEGMENT_WORDS words (or SEGMENT_CHARS characters)."""
    return [p for s in _SENTENCE.split(text) if s.strip() for p in _pieces(s.strip())]


def segments(text: str) -> list[tuple[str, ...]]:
    """What is scored for one (normalised, shortened) text: groups of its sentences, without duplicates.

    The whole text, each sentence that says something on its own, and each
    pair of neighbouring sentences (a framing sentence with the request after
    it) up to SHORT_WORDS words. The encoder embeds a group for the price of
    its sentences (edge/guard/encoder.py), so the extra segments cost little.
    """
    us = units(text)
    if not us:
        return []
    out = [tuple(us)]
    if len(us) > 1:
        out += [(u,) for u in us if _substantial(u)]
        out += [(a, b) for a, b in zip(us, us[1:])
                if len(a.split()) + len(b.split()) <= SHORT_WORDS and len(a) + len(b) <= SEGMENT_CHARS * 2]
    return list(dict.fromkeys(out))


def prepare(text) -> tuple[list[tuple[str, ...]], bool, list[str]]:
    """(segments to score, truncated, disguises found) for one text."""
    from .normalise import normalise

    text = clean(text)
    if not text:
        return [], False, []
    text, truncated = shorten(text)
    text, disguises = normalise(text)
    return segments(text), truncated, disguises


class Guard:
    """Classifies prompts; `check` never raises on odd input."""

    _default: "Guard | None" = None
    _lock = threading.Lock()

    def __init__(self, threshold: float | None = None, head_path=None, encoder=None):
        from .encoder import GuardEncoder
        from .head import HEAD_PATH, Head

        self.head = Head.load(head_path or HEAD_PATH)
        self.threshold = self.head.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidOption(f"The guard threshold must be between 0 and 1 (got {threshold}).")
        self.encoder = encoder or GuardEncoder.default()
        self.checked = 0
        self.blocked: dict[str, int] = {}

    @classmethod
    def default(cls) -> "Guard":
        """The process-wide guard with the shipped head and default threshold."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def score_segments(self, segs: list[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """(unsafe probability, category probabilities) per segment (a group of sentences)."""
        x = self.encoder.encode_groups([list(g) for g in segs])
        limited = getattr(self.encoder, "limited", None)
        with limited() if limited else _Nothing():
            return self.head(x, [" ".join(g) for g in segs])

    def check_all(self, texts, threshold: float | None = None) -> Verdict:
        """One verdict over several texts (str or bytes): the most unsafe segment of any of them decides."""
        t0 = time.perf_counter()
        thr = self.threshold if threshold is None else float(threshold)
        segs, truncated, disguises = [], False, []
        for text in texts:
            s, t, d = prepare(text)
            segs += s
            truncated |= t
            disguises += d
        segs = list(dict.fromkeys(segs))
        if not segs:
            v = Verdict(False, None, 0.0, (time.perf_counter() - t0) * 1e3, thr, 0, False)
        else:
            p_unsafe, p_cat = self.score_segments(segs)
            worst = int(np.argmax(p_unsafe))
            score = float(p_unsafe[worst])
            unsafe = score >= thr
            cat = self.head.categories[int(np.argmax(p_cat[worst]))] if unsafe else None
            v = Verdict(unsafe, cat, round(score, 4), (time.perf_counter() - t0) * 1e3, thr, len(segs),
                        truncated, list(dict.fromkeys(disguises)), " ".join(segs[worst])[:200])
        self.checked += 1
        if v.unsafe:
            self.blocked[v.category] = self.blocked.get(v.category, 0) + 1
        return v

    def check(self, text, threshold: float | None = None) -> Verdict:
        """Score one text (str or bytes)."""
        return self.check_all([text], threshold)

    def scores(self, texts: list[str]) -> np.ndarray:
        """What `check` scores for each text, batched (evaluation): unsafe probability per text."""
        prepared = [prepare(t)[0] for t in texts]
        flat = [s for segs in prepared for s in segs]
        p = self.score_segments(flat)[0] if flat else np.zeros(0)
        out, i = np.zeros(len(texts)), 0
        for k, segs in enumerate(prepared):
            out[k] = float(p[i: i + len(segs)].max()) if segs else 0.0
            i += len(segs)
        return out

    def enforce(self, text) -> Verdict:
        """check(), raising GuardBlocked (message = the refusal) when unsafe."""
        v = self.check(text)
        if v.unsafe:
            raise GuardBlocked(v.refusal, verdict=v)
        return v


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _content_text(content) -> list[str]:
    if content is None:
        return []
    if isinstance(content, (str, bytes)):
        return [content]
    if isinstance(content, list):  # OpenAI content parts
        return [p.get("text", "") if isinstance(p, dict) else str(p) for p in content
                if not isinstance(p, dict) or p.get("type", "text") == "text"]
    return [str(content)]


def screened_texts(messages: list[dict] | None = None, system: str | None = None, prompt=None) -> list[str]:
    """Every piece of user-controlled text that reaches the model: THE rule of what the guard screens.

    All messages whatever their role (system, user, assistant turns a client
    wrote, tool messages and results), tool-call arguments, a system prompt
    the caller gave, and a raw completion prompt. Only text edge adds itself
    (a catalog's default system prompt, the chat template) is not screened.
    """
    out = []
    if system:
        out.append(system)
    for m in messages or []:
        if not isinstance(m, dict):
            out.append(str(m))
            continue
        out += _content_text(m.get("content"))
        for call in m.get("tool_calls") or []:
            fn = call.get("function", call) if isinstance(call, dict) else {}
            args = fn.get("arguments") if isinstance(fn, dict) else None
            if args:
                out.append(args if isinstance(args, str) else str(args))
    if prompt is not None:
        out += [prompt] if isinstance(prompt, (str, bytes)) else [str(p) for p in prompt]
    return [t for t in out if t]


def screen_messages(guard, messages: list[dict] | None = None, system: str | None = None, prompt=None):
    """The guard's verdict over `screened_texts(...)`: one call used by the CLI, API, server and assistant.

    `guard` is a Guard, or any object with `check(text)` (checked text by
    text, the most unsafe verdict kept). Returns None when there is no text.
    """
    texts = screened_texts(messages, system, prompt)
    if not texts:
        return None
    if hasattr(guard, "check_all"):
        return guard.check_all(texts)
    verdicts = [guard.check(t) for t in texts]
    blocked = [v for v in verdicts if _flagged(v)]
    return blocked[0] if blocked else verdicts[-1]


def _flagged(v) -> bool:
    """Whether a verdict (a Verdict, or a dict/object from a stand-in guard) blocks."""
    if isinstance(v, dict):
        return bool(v.get("unsafe", v.get("blocked")))
    return bool(getattr(v, "unsafe", getattr(v, "blocked", False)))
