"""One model, many clients: a bounded FIFO queue and the generation thread(s) that own the model.

A loaded model is not thread-safe and holds one KV cache, so exactly one
thread ever touches it. Requests wait in arrival order (bounded: past the
bound `submit` raises `QueueFull`, answered as 503 with Retry-After). Each
job streams its pieces back to the event loop that submitted it; a job whose
client went away is skipped if still waiting, and stopped after the token in
flight if running, so the next client is served at once.

Interleaving streams token by token would make every switch re-prefill the
other prompt into the single cache, which costs more than it buys on a CPU;
FIFO with fast cancellation is the fair order here. A backend that holds
several sequences and decodes them together gets scheduler.Scheduler instead.
"""
from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

log = logging.getLogger("edge.server")

# Event kinds sent from the worker to the waiting request handler.
PIECE, DONE, ERROR = "piece", "done", "error"


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"The request queue is full; retry after {retry_after} s.")
        self.retry_after = retry_after


@dataclass
class Job:
    """A unit of work: `start(model)` runs on the worker and returns text pieces."""

    start: Callable[[Any], Iterator[str]]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    stats: dict = field(default_factory=dict)

    def cancel(self) -> None:
        self.cancelled.set()

    def _emit(self, kind: str, value=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone: the server is shutting down
            self.cancel()


def call_job(fn: Callable[[Any], Any], loop: asyncio.AbstractEventLoop) -> Job:
    """A job that runs `fn(model)` once (e.g. tokenization); its result is the DONE value."""
    def start(model):
        job.stats["result"] = fn(model)
        return iter(())

    job = Job(start, loop)
    return job


def run_job(job: Job, model, metrics, on_error: Callable[[Exception], None] | None = None) -> None:
    """Stream one job's pieces to its client, then DONE, or ERROR when it fails."""
    pieces = None
    try:
        pieces = job.start(model)
        for piece in pieces:
            # Checked after every token: a client that left frees the model within one.
            if job.cancelled.is_set():
                metrics.add("cancelled")
                return
            if piece:
                job._emit(PIECE, piece)
    except Exception as exc:  # answered to the client; the worker keeps serving
        if not isinstance(exc, _expected()):
            log.exception("generation failed")
        job._emit(ERROR, exc)
        if on_error is not None:
            on_error(exc)
        return
    finally:
        if pieces is not None and hasattr(pieces, "close"):
            pieces.close()
    job._emit(DONE, job.stats)


class Worker:
    """The threads that own the model: `lanes` runners take jobs from one bounded FIFO queue
    (one lane here; the batching scheduler runs one per sequence slot)."""

    def __init__(self, model, metrics, queue_size: int, lanes: int = 1):
        self.model = model
        self.metrics = metrics
        self.queue_size = queue_size
        self.lanes = lanes
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._avg_job_s = 2.0  # running estimate of a job's duration, for Retry-After
        self._threads = [threading.Thread(target=self._run, name=f"edge-generation-{i}", daemon=True)
                         for i in range(lanes)]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Jobs waiting for the model (not counting the ones running)."""
        return self._waiting

    @property
    def active(self) -> int:
        """Jobs running now."""
        return self._running

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._waiting >= self.queue_size:
                # Jobs ahead of this one share `lanes` runners.
                raise QueueFull(max(1, math.ceil(self._avg_job_s * (self._waiting + 1) / self.lanes)))
            self._waiting += 1
        self._q.put(job)

    def stop(self) -> None:
        for _ in self._threads:
            self._q.put(None)

    def call(self, fn: Callable[[Any], Any], loop: asyncio.AbstractEventLoop) -> Job:
        """Queue a one-shot call on the model (e.g. tokenization); its result is the DONE value."""
        job = call_job(fn, loop)
        self.submit(job)
        return job

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
            if job.cancelled.is_set():
                self.metrics.add("cancelled")
                continue
            with self._lock:
                self._running += 1
            t0 = time.perf_counter()
            try:
                self._serve(job)
            finally:
                with self._lock:
                    self._running -= 1
                    self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (time.perf_counter() - t0)

    def _serve(self, job: Job) -> None:
        run_job(job, self.model, self.metrics, self._after_error)


    def _after_error(self, exc: Exception) -> None:
        """A model split across RPC workers that lost one reloads here, or refuses from now on."""
        from ..errors import WorkerLost

        if isinstance(exc, WorkerLost) and hasattr(self.model, "recover"):
            self.metrics.add("rpc_workers_lost")
            log.warning("%s", self.model.recover())


def _expected() -> tuple[type, ...]:
    from ..errors import EdgeError
    from .errors import APIError

    return (EdgeError, APIError)
