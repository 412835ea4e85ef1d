"""Continuous batching: several generations share one model, one decode step at a time.

An `Engine` owns a backend that can batch (`backend.can_batch`) and its
sequence slots. Each step is one `decode_batch` over every active slot: the
next token of each generating sequence, then prompt chunks of the sequences
still prefilling (capped so running streams keep their pace). Requests join
between steps; each has its own `Decoding` (sampler, logits hook, stop
strings), so its tokens are the ones it would get alone. A slot keeps the
tokens of its last request in the KV cache, and a new request goes to the
free slot sharing the longest prefix with it (llama.cpp server's slot reuse),
or takes a copy of a busier slot's cache when that one shares much more.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .backends.base import Chunk, Decoding, Stats
from .config import GenerationOptions

# Prompt tokens a prefilling request may add to a step while other sequences are
# generating: bounds how long a running stream waits for one step.
PREFILL_CHUNK = 128
# A free slot takes another slot's cache (a whole-stream copy) when that one shares
# at least this many more prompt tokens: copying is cheaper than reading them again.
COPY_MIN_TOKENS = 16


@dataclass
class Request:
    """One generation in the engine; its callbacks run on the thread that calls `step`."""

    prompt: str | list[int]
    opts: GenerationOptions
    on_chunk: Callable[[Chunk], None] = lambda c: None
    on_done: Callable[[Stats], None] = lambda s: None
    on_error: Callable[[BaseException], None] = lambda e: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Another event that also stops this request (the server job's: its client left).
    also_cancelled: threading.Event | None = None
    decoding: Decoding | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set() or (self.also_cancelled is not None and self.also_cancelled.is_set())


@dataclass
class Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens of this sequence in the KV cache
    req: Request | None = None
    pending: list[int] = field(default_factory=list)  # tokens to evaluate next
    prefilled: bool = False  # the prompt is evaluated: `pending` is the last sampled token
    used: float = 0.0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Engine:
    """Batched generation on one backend; `add` from any thread, `step` from one."""

    def __init__(self, backend, prefill_chunk: int = PREFILL_CHUNK):
        if not getattr(backend, "can_batch", False):
            from .errors import BackendUnavailable

            raise BackendUnavailable(f"The {backend.name} backend decodes one sequence at a time.",
                                     "Use the llama.cpp backend (a GGUF artifact) to batch requests.")
        self.backend = backend
        self.slots = [Slot(i) for i in range(backend.n_seq)]
        self.prefill_chunk = max(1, prefill_chunk)
        self._inbox: deque[Request] = deque()
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        # The backend's single-sequence path (Backend.generate) uses sequence 0 too.
        backend.reset()

    # -- queue -------------------------------------------------------------------
    def add(self, req: Request) -> Request:
        with self._lock:
            self._inbox.append(req)
        self.wakeup.set()
        return req

    @property
    def active(self) -> int:
        return sum(s.req is not None for s in self.slots)

    @property
    def waiting(self) -> int:
        return len(self._inbox)

    def busy(self) -> bool:
        return bool(self._inbox) or any(s.req is not None for s in self.slots)

    # -- one step ------------------------------------------------------------------
    def step(self) -> bool:
        """Admit waiting requests, run one decode over all active slots; False when idle."""
        self._drop_cancelled()
        self._admit()
        active = [s for s in self.slots if s.req is not None]
        if not active:
            return False
        b = self.backend
        items, owners = [], []
        generating = [s for s in active if s.prefilled]
        prefilling = [s for s in active if not s.prefilled]
        for s in generating:
            items.append((s.seq, s.pending, len(s.cached), True))
            owners.append(s)
        room = b.n_batch - len(items)
        if generating:
            room = min(room, self.prefill_chunk)
        for s in sorted(prefilling, key=lambda s: s.used):
            if room <= 0:
                break
            take = s.pending[:room]
            if b.split_last and len(take) == len(s.pending) and len(take) > 1:
                take = take[:-1]  # the last prompt token goes alone (see Backend.prefill)
            whole = len(take) == len(s.pending)
            items.append((s.seq, take, len(s.cached), whole))
            owners.append(s)
            room -= len(take)
        try:
            rows = b.decode_batch(items)
        except Exception as exc:  # the whole step failed: every request in it gets the error
            for s in owners:
                self._fail(s, exc)
            return True
        rows = iter(rows)
        for (seq, toks, pos0, want), s in zip(items, owners):
            s.cached.extend(toks)
            s.pending = s.pending[len(toks):]
            if want:
                self._advance(s, next(rows))
        return True

    def run(self, stop: threading.Event | None = None, idle_s: float = 0.05) -> None:
        """Step until `stop` is set, sleeping while there is nothing to do."""
        while stop is None or not stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # a bug must not leave every waiting client hanging
                for s in self.slots:
                    if s.req is not None:
                        self._fail(s, exc)
                continue
            if not busy:
                self.wakeup.wait(idle_s)
                self.wakeup.clear()

    # -- slots -----------------------------------------------------------------------
    def _admit(self) -> None:
        while True:
            free = [s for s in self.slots if s.req is None]
            with self._lock:
                if not free or not self._inbox:
                    return
                req = self._inbox.popleft()
            if req.is_cancelled():
                req.on_done(Stats(finish_reason="cancelled"))
                continue
            try:
                d = req.decoding = Decoding(self.backend, req.prompt, req.opts)
            except Exception as exc:
                req.on_error(exc)
                continue
            ids = d.ids
            slot = max(free, key=lambda s: (common_prefix(s.cached, ids), -s.used))
            common = common_prefix(slot.cached, ids)
            donor = max(self.slots, key=lambda s: common_prefix(s.cached, ids))
            shared = common_prefix(donor.cached, ids)
            if donor is not slot and shared >= common + COPY_MIN_TOKENS and hasattr(self.backend, "seq_copy"):
                self.backend.seq_copy(donor.seq, slot.seq)
                slot.cached, common = donor.cached[:shared], shared
            if common == len(ids):
                common -= 1  # at least one token must be evaluated to get logits
            common = self.backend.seq_keep(slot.seq, common)
            slot.cached = ids[:common]
            slot.pending = ids[common:]
            slot.req = req
            slot.used = time.monotonic()
            slot.prefilled = False
            d.stats.cached_tokens = common
            d.start()

    def _advance(self, s: Slot, logits) -> None:
        req, d = s.req, s.req.decoding
        try:
            chunks, tok = d.step(logits)
            for c in chunks:
                req.on_chunk(c)
            if tok is None:
                self._finish(s)
            else:
                s.pending = [tok]
                s.prefilled = True
        except Exception as exc:  # a logits hook or a callback failed: only this request ends
            self._fail(s, exc)

    def _finish(self, s: Slot) -> None:
        req, d = s.req, s.req.decoding
        s.req, s.pending = None, []
        try:
            for c in d.finish():
                req.on_chunk(c)
            req.on_done(d.stats)
        except Exception as exc:
            req.on_error(exc)

    def _fail(self, s: Slot, exc: BaseException) -> None:
        req = s.req
        s.req, s.pending = None, []
        # What the failed step left in this sequence's cache is unknown: forget it.
        self.backend.seq_keep(s.seq, 0)
        s.cached = []
        req.on_error(exc)

    def _drop_cancelled(self) -> None:
        for s in self.slots:
            if s.req is not None and s.req.is_cancelled():
                req, d = s.req, s.req.decoding
                s.req, s.pending = None, []
                d.stats.finish_reason = "cancelled"
                d.stats.completion_tokens = len(d.generated)
                try:
                    req.on_done(d.stats)  # whoever waits on it stops waiting
                except Exception:
                    pass
