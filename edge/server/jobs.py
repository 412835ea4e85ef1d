"""What a request handler does with a job: read the body, budget tokens, run it on the worker, collect or stream.

Shared by the chat and completion handlers in app.py.
"""
from __future__ import annotations

import asyncio
import json
import uuid

from ..errors import ContextTooLong
from . import protocol
from .errors import APIError, bad, from_edge
from .worker import DONE, ERROR, Job

# How often a non-streaming handler checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


async def read_json(request, limit: int) -> dict:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise APIError(413, f"The request body has {length} bytes; the limit is {limit}. Send a smaller request.",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"The request body is over the limit of {limit} bytes. Send a smaller request.",
                           code="request_too_large")
        chunks.append(chunk)
    return protocol.parse_json(b"".join(chunks))


def budget(model, ids: list[int], asked: int | None, default: int) -> int:
    """max_tokens for a prompt: the asked value must fit the context; the default is trimmed to fit."""
    n_ctx = model.backend.n_ctx
    room = n_ctx - len(ids)
    if room <= 0:
        raise ContextTooLong(f"The prompt has {len(ids)} tokens; this model's context holds {n_ctx}.",
                             "Shorten the messages.")
    if asked is None:
        return min(default, room)
    if asked > room:
        raise ContextTooLong(
            f"max_tokens is {asked} but the prompt has {len(ids)} tokens and the context holds {n_ctx}, "
            f"leaving room for {room}.", f"Ask for max_tokens <= {room} or shorten the messages.")
    return asked


def generation(server, prompt_fn, sampling: protocol.Sampling, post=None, run=None):
    """A worker `start` function: render + tokenize, check the budget, stream, record stats.

    `prompt_fn(model)` returns the prompt text or ids; `post(model, ids, gen)`
    may replace plain streaming (constrained decoding); `run(model, sampling,
    max_tokens)` replaces all of it (a whole tool call).
    """
    def start(model):
        if run is not None:
            max_tokens = sampling.max_tokens or server.options.max_tokens
            return _recorded(server, model, run(model, sampling, max_tokens), start.stats)
        prompt = prompt_fn(model)
        ids = model.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise bad("The prompt is empty; send some text.", "prompt", "invalid_value")
        if any(t >= model.backend.n_vocab for t in ids):
            raise bad(f"The prompt holds token ids outside the vocabulary (0..{model.backend.n_vocab - 1}).",
                      "prompt", "invalid_value")
        gen = dict(sampling.gen, max_tokens=budget(model, ids, sampling.max_tokens, server.options.max_tokens))
        return _recorded(server, model, post(model, ids, gen) if post else model.stream(ids, **gen), start.stats)

    start.stats = {}
    return start


def _recorded(server, model, pieces, stats: dict):
    yield from pieces
    s = model.stats
    stats.update(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens,
                 finish_reason=s.finish_reason, ttft_s=s.ttft_s, decode_tok_s=s.decode_tok_s)
    server.metrics.generation(s.prompt_tokens, s.completion_tokens, s.ttft_s, s.decode_tok_s)


async def first_event(job: Job, request) -> tuple[str, object]:
    """Wait for the job's first event, cancelling it if the client leaves meanwhile."""
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise asyncio.CancelledError from None


async def collect(job: Job, request, first) -> str:
    """All pieces of a non-streaming job joined; raises its error."""
    parts = []
    kind, value = first
    while True:
        if kind == ERROR:
            raise from_edge(value)
        if kind == DONE:
            return "".join(parts)
        parts.append(value)
        kind, value = await first_event(job, request)


def usage(stats: dict) -> dict:
    p, c = stats.get("prompt_tokens", 0), stats.get("completion_tokens", 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
