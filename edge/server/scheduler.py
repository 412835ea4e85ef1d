"""Many requests at once on a backend that batches: one engine thread, one thread per running job.

The engine thread (edge.batching.Engine) owns the model and runs one decode
step at a time over every active sequence; requests join between steps.
Each job runs on its own runner thread against a `SlotModel`, a stand-in for
the model whose `stream` puts a request into the engine and yields its text
as the steps produce it; everything else (chat template, tokenizer, the
tool-call engine, JSON-schema constraints) is the model's own code, so a job
runs exactly as it would on the single-sequence worker. At most one job per
sequence slot runs; the rest wait in a bounded FIFO queue (503 + Retry-After
past it), and a job whose client left is dropped before or within one step.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator

from ..batching import Engine, Request
from ..config import GenerationOptions
from ..model import Model
from .worker import Job, Worker, run_job


_END = object()


class SlotModel:
    """The model as one job sees it: generation goes through the shared engine."""

    def __init__(self, model, engine: Engine, job: Job):
        self._model = model
        self._engine = engine
        self._job = job
        self._stats = None

    def __getattr__(self, name):  # name, backend, tokenize, apply_chat_template, guard, ...
        return getattr(self._model, name)

    @property
    def stats(self):
        return self._stats if self._stats is not None else self._model.stats

    # The model's own chat and convenience methods, running against this stand-in.
    generate = Model.generate
    stream_chat = Model.stream_chat
    chat = Model.chat
    with_system = Model.with_system
    apply_chat_template = Model.apply_chat_template
    screen = Model.screen
    _refuse = Model._refuse

    def stream(self, prompt: str | list[int], *, _screened: bool = False, **gen) -> Iterator[str]:
        from ..errors import InvalidOption

        if isinstance(prompt, str) and not prompt.strip() and not gen.pop("allow_empty", False):
            raise InvalidOption("The prompt is empty.", "Pass some text to generate from.")
        opts = GenerationOptions.from_kwargs(**gen)
        if isinstance(prompt, str) and not _screened:
            v = self._model.screen(prompt)
            if v is not None and v.unsafe:
                from ..backends.base import Stats

                self._stats = Stats(finish_reason="guard")
                yield v.refusal
                return
        out: queue.Queue = queue.Queue()
        req = Request(prompt, opts, on_chunk=lambda c: out.put(c.text), on_done=lambda s: out.put((_END, s)),
                      on_error=lambda e: out.put((_END, e)))
        # A job whose client left stops its request at the next step.
        req.also_cancelled = self._job.cancelled
        self._stats = None
        self._engine.add(req)
        ended = False
        try:
            while True:
                item = out.get()
                if isinstance(item, tuple) and item[0] is _END:
                    ended = True
                    if isinstance(item[1], BaseException):
                        raise item[1]
                    self._stats = item[1]
                    return
                if item:
                    yield item
        finally:
            if not ended:
                req.cancel()  # closed early (client gone, or the caller stopped reading): free the slot
                if req.decoding is not None:
                    self._stats = req.decoding.stats


class Scheduler(Worker):
    """The server's worker for a backend that batches: one runner per sequence slot, one engine thread."""

    def __init__(self, model, metrics, queue_size: int, prefill_chunk: int | None = None):
        kw = {"prefill_chunk": prefill_chunk} if prefill_chunk else {}
        self.engine = Engine(model.backend, **kw)
        self.slots = len(self.engine.slots)
        self._stop = threading.Event()
        self._engine_thread = threading.Thread(target=self.engine.run, args=(self._stop,), name="edge-engine",
                                               daemon=True)
        self._engine_thread.start()
        super().__init__(model, metrics, queue_size, lanes=self.slots)

    def stop(self) -> None:
        self._stop.set()
        self.engine.wakeup.set()
        super().stop()

    def _serve(self, job: Job) -> None:
        run_job(job, SlotModel(self.model, self.engine, job), self.metrics)


def for_model(model, metrics, queue_size: int):
    """The worker that fits the model: batched when its backend can batch several sequences."""
    if getattr(model.backend, "can_batch", False) and getattr(model.backend, "n_seq", 1) > 1:
        return Scheduler(model, metrics, queue_size)
    return Worker(model, metrics, queue_size)
