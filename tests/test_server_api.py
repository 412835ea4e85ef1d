"""The OpenAI-compatible server on a tiny random model: protocol, errors, auth, queue, cancel.

The model is a byte-level random bigram built in code behind the real
`Backend` interface, so the shared generation loop, `edge.Model` and the
whole HTTP stack run for real in milliseconds. The official `openai` client
drives the happy paths; raw httpx sends what that client refuses to send.
"""
from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from edge.backends.base import Backend
from edge.model import Model
from edge.select import Choice
from edge.server.options import ServerOptions
from edge.server.run import Background, free_port
from edge.store import Artifact

IM_START, IM_END = 256, 257
SPECIALS = {"<|im_start|>": IM_START, "<|im_end|>": IM_END}


class TinyBackend(Backend):
    """A random bigram over bytes: logits depend only on the last token."""

    name = "tiny"

    def __init__(self, delay_s: float = 0.0, n_ctx: int = 128, seed: int = 0):
        super().__init__(Artifact("tiny", "gguf", "f32", None))
        self.delay_s = delay_s
        self.n_ctx = n_ctx
        self.n_vocab = 258
        self.eos_ids = frozenset({IM_END})
        self.chat_template = None  # ChatML
        rng = np.random.default_rng(seed)
        self.table = rng.standard_normal((258, 258)).astype(np.float32) * 3
        printable = np.zeros(258, bool)
        printable[ord(" "): ord("~") + 1] = True
        self.table[:, ~printable] = -1e9  # readable text only; end of sequence never sampled
        self.forwards = 0

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            tag = next((t for t in SPECIALS if special and text.startswith(t, i)), None)
            if tag:
                ids.append(SPECIALS[tag])
                i += len(tag)
            else:
                ids.extend(text[i].encode())
                i += 1
        return ids

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else next(k for k, v in SPECIALS.items() if v == token).encode()

    def detokenize(self, ids) -> str:
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", "replace")

    def _forward(self, ids):
        self.forwards += len(ids)
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.table[ids[-1]].copy()

    def _rewind(self, n: int) -> int:
        return n  # a bigram keeps no state beyond the last token

    def _reset_cache(self) -> None:
        pass


def tiny_model(**kw) -> Model:
    backend = TinyBackend(**kw)
    return Model("tiny", Choice("tiny", backend.artifact), backend, 0.0)


class KeywordGuard:
    """Blocks prompts holding a word: stands in for the trained guard in fast tests."""

    def check(self, text: str) -> dict:
        return {"blocked": "bomb" in text, "score": 0.99 if "bomb" in text else 0.01, "label": "unsafe"}


def start(model=None, **opts) -> Background:
    opts.setdefault("guard", False)
    return Background(model or tiny_model(), ServerOptions(port=free_port(), **opts)).start()


@pytest.fixture(scope="module")
def srv():
    s = start(guard=True, embeddings=False)
    s.app.state.server.guard = KeywordGuard()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


HI = [{"role": "user", "content": "Hi"}]


# -- happy paths with the official client ------------------------------------------

def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "edge"


def test_chat_returns_text_and_usage(client, srv):
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=7, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    backend = srv.app.state.server.model.backend
    prompt_ids = backend.tokenize(backend.apply_chat_template(HI))
    assert r.usage.prompt_tokens == len(prompt_ids)
    assert r.usage.completion_tokens == 7
    assert r.usage.total_tokens == len(prompt_ids) + 7
    assert len(choice.message.content.encode()) == 7  # one byte per token


def test_stream_equals_non_stream_when_greedy(client):
    full = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for ev in stream:
        if ev.usage:
            usage = ev.usage
        for c in ev.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content
    assert len([p for p in pieces if p]) > 1  # streamed in several pieces, not one block
    assert finish == "length"
    assert usage.completion_tokens == 12


def test_completions_and_token_id_prompts(client):
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 5
    same = client.completions.create(model="tiny", prompt=[97, 98, 99], max_tokens=5, temperature=0)
    assert same.choices[0].text == r.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="abc", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_stop_sequences_end_the_reply(client):
    text = client.chat.completions.create(model="tiny", messages=HI, max_tokens=40, temperature=0).choices[0].message.content
    stop = text[5:7]
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=40, temperature=0, stop=[stop])
    assert r.choices[0].message.content == text[: text.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_guard_block_is_a_flagged_refusal_not_an_error(client, http, srv):
    before = _metric(http, "edge_guard_blocks_total")
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "how to build a bomb"}])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "content_filter"
    assert msg.refusal and msg.content == msg.refusal
    assert r.model_extra["guard"]["blocked"] is True and r.model_extra["guard"]["score"] == 0.99
    assert r.usage.completion_tokens == 0
    stream = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a bomb"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == msg.refusal
    assert _metric(http, "edge_guard_blocks_total") == before + 2


# -- bad input: OpenAI error objects, and the server keeps serving ---------------------------

CHAT = {"model": "tiny", "messages": HI, "max_tokens": 3}

BAD = [
    (b"{not json", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_json"),
    ({"messages": HI}, 400, "model", "missing_required_parameter"),
    ({"model": "tiny"}, 400, "messages", "missing_required_parameter"),
    ({**CHAT, "model": "gpt-4"}, 404, "model", "model_not_found"),
    ({**CHAT, "messages": "hi"}, 400, "messages", "invalid_type"),
    ({**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role", "invalid_value"),
    ({**CHAT, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "invalid_type"),
    ({**CHAT, "max_tokens": "ten"}, 400, "max_tokens", "invalid_type"),
    ({**CHAT, "max_tokens": True}, 400, "max_tokens", "invalid_type"),
    ({**CHAT, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ({**CHAT, "max_tokens": 500}, 400, None, "context_length_exceeded"),
    ({**CHAT, "messages": [{"role": "user", "content": "x" * 300}]}, 400, None, "context_length_exceeded"),
    ({**CHAT, "temperature": 3}, 400, "temperature", "invalid_value"),
    ({**CHAT, "n": 2}, 400, "n", "invalid_value"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
    ({**CHAT, "response_format": {"type": "yaml"}}, 400, "response_format.type", "invalid_value"),
    ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}},
     400, "response_format.json_schema.schema", "invalid_schema"),
    ({**CHAT, "tools": [{"type": "function", "function": {"description": "no name"}}]}, 400, "tools", "invalid_tools"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                        "properties": 7}}}]},
     400, "tools", "invalid_tools"),
    ({**CHAT, "tool_choice": "required"}, 400, "tool_choice", "invalid_value"),
]


@pytest.mark.parametrize("body,status,param,code", BAD, ids=[f"{i}-{c}" for i, (_, _, _, c) in enumerate(BAD)])
def test_bad_chat_requests_get_openai_errors(http, body, status, param, code):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, code)
    assert err["type"] in ("invalid_request_error", "not_found_error") and err["message"]
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # still serving


def test_bad_completion_and_embedding_requests(http):
    cases = [
        ("/v1/completions", {"model": "tiny"}, 400, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": [1, "a"]}, 400, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": [999]}, 400, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": "a", "echo": True}, 400, "echo"),
        ("/v1/embeddings", {"model": "tiny", "input": "a"}, 404, "model"),  # embeddings are off on this server
    ]
    for path, body, status, param in cases:
        r = http.post(path, json=body)
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), (path, body, r.text)


def test_oversized_body_is_413(srv):
    limit = srv.options.max_body_bytes
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * limit}]})
    with httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: the limit holds while streaming the body in
            for _ in range(limit // 65536 + 2):
                yield b"x" * 65536

        r = c.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/health").json()["status"] == "ok"


def test_unknown_route_and_method(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = http.get("/v1/chat/completions")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]["message"]


def test_metrics_count_requests_and_tokens(http):
    before = _metric(http, "edge_completion_tokens_total")
    reqs = _metric(http, 'edge_requests_total{endpoint="/v1/chat/completions",status="200"}')
    http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 9})
    text = http.get("/metrics").text
    assert "# TYPE edge_queue_depth gauge" in text and "edge_decode_tokens_per_second " in text
    assert _metric(http, "edge_completion_tokens_total") == before + 9
    assert _metric(http, 'edge_requests_total{endpoint="/v1/chat/completions",status="200"}') == reqs + 1


def _metric(http, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# -- auth and CORS -------------------------------------------------------------------------

def test_api_key_is_required_when_set():
    with start(api_key="s3cret") as s:
        ok = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.chat.completions.create(model="tiny", messages=HI, max_tokens=2).usage.completion_tokens == 2
        wrong = openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as exc:
            wrong.models.list()
        assert exc.value.body["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/v1/models").status_code == 401
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200


def test_cors_is_off_unless_asked(http):
    r = http.options("/v1/chat/completions", headers={"Origin": "http://app.example",
                                                      "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    with start(cors=["http://app.example"]) as s:
        r = httpx.options(s.url + "/v1/chat/completions", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"


# -- one model, many clients --------------------------------------------------------------------

def test_full_queue_answers_503_with_retry_after():
    with start(tiny_model(delay_s=0.02), queue_size=1) as s:
        results = []

        def one():
            r = httpx.post(s.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 40}, timeout=60)
            results.append((r.status_code, r.headers.get("retry-after"), r.json()))

        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.05)  # arrival order: one running, one waiting, the rest refused
        for t in threads:
            t.join()
        codes = sorted(code for code, _, _ in results)
        assert codes == [200, 200, 503, 503, 503], results
        for code, retry, body in results:
            if code == 503:
                assert int(retry) >= 1 and body["error"]["code"] == "queue_full"
        assert httpx.post(s.url + "/v1/chat/completions", json=CHAT).status_code == 200


def test_client_disconnect_cancels_generation_within_two_tokens():
    model = tiny_model(delay_s=0.02)
    with start(model) as s:
        backend = model.backend
        with httpx.Client(base_url=s.url, timeout=30) as c:
            with c.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 100, "stream": True}) as r:
                got = 0
                for line in r.iter_lines():
                    if '"content": "' in line and '"content": ""' not in line:
                        got += 1
                    if got == 3:
                        break
                at_close = backend.forwards
        deadline = time.monotonic() + 5
        while httpx.get(s.url + "/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert backend.forwards - at_close <= 2, (at_close, backend.forwards)
        text = httpx.get(s.url + "/metrics").text
        assert "edge_cancelled_total 1" in text
        # The model is free at once for the next client.
        t0 = time.monotonic()
        assert httpx.post(s.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}).status_code == 200
        assert time.monotonic() - t0 < 2


def test_concurrent_streams_are_all_served_in_full(client):
    out = {}

    def one(i):
        s = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"n{i}"}],
                                           max_tokens=10, temperature=0, stream=True)
        out[i] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(8)) and all(len(v.encode()) == 10 for v in out.values())
