"""Batched decoding on llama.cpp: several sequences in one context, one decode step for all.

Greedy replies from concurrent requests must equal each request run alone,
through `Model.batch` and through the server (official `openai` client); the
engine keeps per-request stop strings, logits hooks and limits, reuses a
slot's cached prefix, and frees a slot when its client leaves. Fast tests run
on the tiny random llama GGUF; the SmolLM2 ones are slow.
"""
from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import openai
import pytest

import edge
from edge.batching import Engine, Request
from edge.config import GenerationOptions
from edge.errors import BackendUnavailable, InvalidOption
from edge.server.options import ServerOptions
from edge.server.run import Background, free_port

from tiny_models import tiny

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is",
    "def add(a, b):\n    return",
    "Once upon a time there was a small model",
    "Water boils at 100 degrees",
]


@pytest.fixture(scope="module")
def tiny_gguf():
    return tiny("llama", {"gguf": "f16"})[("gguf", "f16")]


def load(art, parallel: int, n_ctx: int = 256):
    # One thread: tiny models gain nothing from more on a shared, busy machine.
    return edge.load(str(art.main_path), backend="llama.cpp", threads=1, n_ctx=n_ctx, parallel=parallel)


@pytest.fixture(scope="module")
def tiny4(tiny_gguf):
    m = load(tiny_gguf, 4)
    yield m
    m.close()


def test_context_holds_parallel_sequences_each_with_its_own_context(tiny4):
    b = tiny4.backend
    assert b.can_batch and b.n_seq == 4 and b.n_ctx == 256


def test_batch_equals_each_prompt_alone(tiny4):
    solo = [tiny4.generate(p, max_tokens=24, temperature=0, ignore_eos=True) for p in PROMPTS]
    # Five prompts on four slots: the fifth joins when the first slot frees up.
    assert tiny4.batch(PROMPTS, max_tokens=24, temperature=0, ignore_eos=True) == solo
    assert len(set(solo)) > 1
    # And the single-sequence path still works after the engine used every sequence.
    assert tiny4.generate(PROMPTS[0], max_tokens=24, temperature=0, ignore_eos=True) == solo[0]


def test_batch_runs_one_by_one_without_parallel_sequences(tiny_gguf):
    m = load(tiny_gguf, 1)
    try:
        assert m.batch(PROMPTS[:2], max_tokens=8, temperature=0) == [m.generate(p, max_tokens=8, temperature=0)
                                                                     for p in PROMPTS[:2]]
    finally:
        m.close()


def test_batch_of_chats_matches_chat(tiny4):
    chats = [[{"role": "user", "content": p}] for p in PROMPTS[:3]]
    assert tiny4.batch(chats, max_tokens=12, temperature=0) == [tiny4.chat(c, max_tokens=12, temperature=0)
                                                                 for c in chats]


def test_sequences_join_between_steps_and_keep_their_own_options(tiny4):
    b = tiny4.backend
    solo_stop = tiny4.generate(PROMPTS[1], max_tokens=30, temperature=0, ignore_eos=True)
    stop = solo_stop[5:8]
    want = [tiny4.generate(PROMPTS[0], max_tokens=20, temperature=0, ignore_eos=True),
            tiny4.generate(PROMPTS[1], max_tokens=30, temperature=0, ignore_eos=True, stop=[stop]),
            tiny4.generate(PROMPTS[2], max_tokens=7, temperature=0, ignore_eos=True)]
    banned = []

    def hook(ids, logits):  # masks the solo run's favourite first token, for this request only
        banned.append(len(ids))
        logits[int(np.argmax(logits))] = -np.inf

    hooked = tiny4.generate(PROMPTS[3], max_tokens=10, temperature=0, ignore_eos=True, logits_hook=hook)
    banned.clear()
    engine = Engine(b)
    out = {i: [] for i in range(4)}
    done = {}
    opts = [GenerationOptions(max_tokens=20, temperature=0, ignore_eos=True),
            GenerationOptions(max_tokens=30, temperature=0, ignore_eos=True, stop=[stop]),
            GenerationOptions(max_tokens=7, temperature=0, ignore_eos=True),
            GenerationOptions(max_tokens=10, temperature=0, ignore_eos=True, logits_hook=hook)]

    def add(i):
        engine.add(Request(PROMPTS[i], opts[i], on_chunk=lambda c: out[i].append(c.text),
                           on_done=lambda s: done.__setitem__(i, s)))

    add(0)
    steps = 0
    while engine.busy() or len(done) < 4:
        engine.step()
        steps += 1
        if steps == 3:
            add(1)
        if steps == 5:
            add(2)
            add(3)
    assert ["".join(out[i]) for i in range(3)] == want
    assert "".join(out[3]) == hooked
    assert [done[i].completion_tokens for i in (0, 2, 3)] == [20, 7, 10]
    assert done[1].finish_reason == "stop" and stop not in "".join(out[1])
    assert banned == list(range(10))  # the hook saw only its own request's tokens
    b.reset()


def test_a_new_request_reuses_the_slot_with_the_longest_cached_prefix(tiny4):
    engine = Engine(tiny4.backend)
    done = {}
    opts = GenerationOptions(max_tokens=4, temperature=0, ignore_eos=True)
    for i, p in enumerate(PROMPTS[:2]):
        engine.add(Request(p, opts, on_done=lambda s, i=i: done.__setitem__(i, s)))
    while engine.busy():
        engine.step()
    again = {}
    engine.add(Request(PROMPTS[1] + " and more", opts, on_done=lambda s: again.__setitem__(0, s)))
    while engine.busy():
        engine.step()
    assert again[0].cached_tokens == len(tiny4.tokenize(PROMPTS[1]))
    tiny4.backend.reset()


def test_a_new_request_copies_a_busy_slots_prefix_and_still_equals_solo(tiny4):
    long = " ".join(PROMPTS)  # over COPY_MIN_TOKENS shared tokens
    first, second = long + " One", long + " Two"
    want = [tiny4.generate(p, max_tokens=12, temperature=0, ignore_eos=True) for p in (first, second)]
    engine = Engine(tiny4.backend)
    out, done = {0: [], 1: []}, {}
    opts = GenerationOptions(max_tokens=12, temperature=0, ignore_eos=True)
    engine.add(Request(first, opts, on_chunk=lambda c: out[0].append(c.text), on_done=lambda s: done.__setitem__(0, s)))
    for _ in range(3):
        engine.step()
    engine.add(Request(second, opts, on_chunk=lambda c: out[1].append(c.text), on_done=lambda s: done.__setitem__(1, s)))
    while engine.busy():
        engine.step()
    shared = len(tiny4.tokenize(long))
    assert done[1].cached_tokens >= shared - 1 and done[0].cached_tokens == 0
    assert ["".join(out[0]), "".join(out[1])] == want
    tiny4.backend.reset()


def test_cancelled_request_frees_its_slot_at_the_next_step(tiny4):
    engine = Engine(tiny4.backend)
    seen = []
    req = engine.add(Request(PROMPTS[0], GenerationOptions(max_tokens=200, temperature=0, ignore_eos=True),
                             on_chunk=lambda c: seen.append(c)))
    for _ in range(4):
        engine.step()
    req.cancel()
    n = len(seen)
    engine.step()
    assert engine.active == 0 and not engine.busy() and len(seen) == n
    tiny4.backend.reset()


def test_a_failing_request_does_not_stop_the_others(tiny4):
    engine = Engine(tiny4.backend)
    errors, ok = [], []

    def boom(ids, logits):
        raise ValueError("hook failed")

    engine.add(Request(PROMPTS[0], GenerationOptions(max_tokens=5, temperature=0, logits_hook=boom),
                       on_error=errors.append))
    engine.add(Request(PROMPTS[1], GenerationOptions(max_tokens=5, temperature=0, ignore_eos=True),
                       on_done=ok.append, on_error=errors.append))
    while engine.busy():
        engine.step()
    assert [str(e) for e in errors] == ["hook failed"] and ok[0].completion_tokens == 5
    tiny4.backend.reset()


def test_engine_needs_a_backend_that_batches():
    from edge.backends.base import Backend

    with pytest.raises(BackendUnavailable, match="one sequence at a time"):
        Engine(Backend(None))


def test_parallel_option_is_checked_and_defaults_from_the_device():
    from edge.config import LoadOptions
    from edge.device import load_profile
    from edge.select import match_rule, parallel_for

    with pytest.raises(InvalidOption, match="parallel must be 0"):
        LoadOptions(parallel=-1)
    pi, laptop = load_profile("pi-zero-2w"), load_profile("laptop-x86-16gb")
    assert parallel_for(match_rule(pi), pi)[0] == 1
    assert parallel_for(match_rule(laptop), laptop)[0] == 4


# -- the server --------------------------------------------------------------------------

def serve(model, **kw):
    return Background(model, ServerOptions(port=free_port(), guard=False, embeddings=False, **kw))


def stream_text(client, model, prompt, max_tokens):
    s = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True)
    return "".join(ch.choices[0].text for ch in s if ch.choices)


def test_concurrent_streams_equal_solo_through_openai(tiny_gguf):
    m = load(tiny_gguf, 4)
    solo = [m.generate(p, max_tokens=20, temperature=0) for p in PROMPTS[:4]]
    with serve(m) as srv:
        assert type(srv.app.state.server.worker).__name__ == "Scheduler"
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
        out = [None] * 4
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, stream_text(client, m.name, PROMPTS[i], 20)))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out == solo
        chat = client.chat.completions.create(model=m.name, messages=[{"role": "user", "content": PROMPTS[0]}],
                                              max_tokens=8, temperature=0)
        assert chat.usage.completion_tokens <= 8 and chat.choices[0].finish_reason in ("stop", "length")
    m.close()


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def test_tool_calls_and_json_schema_run_per_slot_concurrently(tiny_gguf):
    import json

    m = load(tiny_gguf, 4, n_ctx=512)  # the tool prompt is long
    with serve(m) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
        out = {}

        def tool(i):
            out[("tool", i)] = client.chat.completions.create(
                model=m.name, messages=[{"role": "user", "content": f"Weather in city {i}?"}], tools=[WEATHER],
                tool_choice="required", max_tokens=40, temperature=0)

        def schema(i):
            out[("json", i)] = client.chat.completions.create(
                model=m.name, messages=[{"role": "user", "content": f"Person {i}"}], max_tokens=40, temperature=0,
                response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})

        threads = [threading.Thread(target=f, args=(i,)) for i in range(2) for f in (tool, schema)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    m.close()
    for i in range(2):
        call = out[("tool", i)].choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
        r = out[("json", i)]
        if r.choices[0].finish_reason == "stop":  # a reply cut by max_tokens need not be complete JSON
            assert set(json.loads(r.choices[0].message.content)) == {"name", "age"}


def test_client_that_leaves_frees_its_slot_and_queue_limit_answers_503(tiny_gguf):
    m = load(tiny_gguf, 2)
    # The tiny model can finish 200 tokens before the client reads its first line: a slowed
    # step keeps the request running until the client leaves.
    decode_batch = m.backend.decode_batch
    m.backend.decode_batch = lambda items: (time.sleep(0.02), decode_batch(items))[1]
    with serve(m, queue_size=1) as srv:
        sched = srv.app.state.server.worker
        body = {"model": m.name, "prompt": PROMPTS[0], "max_tokens": 200, "temperature": 0, "stream": True,
                "ignore_eos": True}
        with httpx.Client(timeout=30) as c:
            with c.stream("POST", srv.url + "/v1/completions", json=body) as r:
                assert r.status_code == 200
                next(r.iter_lines())
                assert sched.engine.active == 1
            deadline = time.monotonic() + 10
            while (sched.engine.active or sched.active) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sched.engine.active == 0 and sched.active == 0
        # Two slots busy and one request waiting: the next one is turned away.
        hold = threading.Event()

        def slow(model):
            hold.wait(10)
            return iter(())

        import asyncio
        from edge.server.worker import Job

        loop = asyncio.new_event_loop()
        for want_running in (1, 2, 2):
            sched.submit(Job(slow, loop))
            deadline = time.monotonic() + 10
            while sched.active < want_running and time.monotonic() < deadline:
                time.sleep(0.01)
        assert sched.active == 2 and sched.depth == 1
        r = httpx.post(srv.url + "/v1/completions", json={**body, "stream": False, "max_tokens": 2})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        hold.set()
        loop.close()
    m.close()


# -- SmolLM2 --------------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_four_concurrent_chats_equal_solo():
    from edge.server.run import load_model

    m = load_model(threads=1, n_ctx=512, parallel=4)
    questions = ["What is the capital of France?", "Write a poem about the sea.", "Explain gravity to a child.",
                 "List three fruits and their colours."]
    msgs = [[{"role": "user", "content": q}] for q in questions]
    solo = [m.chat(x, max_tokens=48, temperature=0) for x in msgs]
    assert m.batch(msgs, max_tokens=48, temperature=0) == solo
    with serve(m) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
        out = [None] * 4

        def ask(i):
            s = client.chat.completions.create(model=m.name, messages=msgs[i], max_tokens=48, temperature=0,
                                               stream=True)
            out[i] = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out == solo
    m.close()


# -- the server benchmark ----------------------------------------------------------------------

def test_bench_server_rejects_bad_client_counts():
    from click.testing import CliRunner

    from edge.cli import cli

    r = CliRunner().invoke(cli, ["bench", "--server", "--clients", "1,two"])
    assert r.exit_code != 0
    assert "--clients must be numbers separated by commas (got '1,two')." in r.output


def test_bench_server_table_and_plot(tmp_path, monkeypatch):
    from edge.bench import server_load

    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-server anywhere
    assert server_load.llama_server_binary() is None
    rows = [server_load.SweepRow("edge", c, 2 * c, 192 * c, 10.0, 19.2 * c * f, 9.0, 100.0 * c, 120.0 * c)
            for c, f in ((1, 1.0), (4, 0.75))]
    result = {"model": "m:gguf-q4_1", "threads": 2, "parallel": 4, "max_tokens": 96, "requests_per_client": 2,
              "rows": [server_load.asdict(r) for r in rows], "skipped": ["llama-server: not built"]}
    lines = server_load.table(result).splitlines()
    assert lines[1] == server_load.HEADER
    assert lines[2].split() == ["edge", "1", "19.2", "9.0", "100ms", "120ms", "0", "x1.00"]
    assert lines[3].split() == ["edge", "4", "57.6", "9.0", "400ms", "480ms", "0", "x3.00"]
    assert lines[4] == "skipped llama-server: not built"
    pytest.importorskip("matplotlib")
    out = server_load.plot(result, str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000 and out.endswith("s.png")


def test_sliding_window_model_takes_a_busy_slots_prefix_only_while_its_window_holds_it():
    """Gemma's local layers keep only their window of KV (llama.cpp's windowed cache): a slot takes
    the prefix a busier slot holds while the window before its end is still there, and reads the
    prompt itself once the busier slot has moved past it; every reply equals its solo run."""
    art = tiny("gemma3", {"gguf": "f16"})[("gguf", "f16")]
    # A 16-token batch keeps the window cache (window + batch, rounded up to 256 cells) under the text.
    m = edge.load(str(art.main_path), backend="llama.cpp", threads=1, n_ctx=512, parallel=2, batch_size=16)
    try:
        long = " ".join(PROMPTS * 2)
        first, second = long + " One", long + " Two"
        shared = len(m.tokenize(long))
        for ahead, reused in ((4, True), (300, False)):  # tokens the first reply is past its prompt
            opts = [GenerationOptions(max_tokens=n, temperature=0, ignore_eos=True) for n in (ahead + 8, 8)]
            want = [m.generate(p, **vars(o)) for p, o in zip((first, second), opts)]
            engine = Engine(m.backend)
            out, done = {0: [], 1: []}, {}
            engine.add(Request(first, opts[0], on_chunk=lambda c: out[0].append(c.text),
                               on_done=lambda s: done.__setitem__(0, s)))
            while len(engine.slots[0].cached) < shared + ahead:
                engine.step()
            engine.add(Request(second, opts[1], on_chunk=lambda c: out[1].append(c.text),
                               on_done=lambda s: done.__setitem__(1, s)))
            while engine.busy():
                engine.step()
            assert (done[1].cached_tokens >= shared - 1) if reused else (done[1].cached_tokens == 0), ahead
            assert ["".join(out[0]), "".join(out[1])] == want, ahead
            m.backend.reset()
            for s in range(2):
                m.backend.seq_keep(s, 0)
    finally:
        m.close()
