"""Requests that used to crash the server (issue 25, "Server 500s"): each now gets a 4xx, and
a client that leaves logs no traceback. Same tiny random model as test_server_api.py."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest

from edge.server import features
from test_server_api import CHAT, start, tiny_model


@pytest.fixture(scope="module")
def srv():
    s = start(tiny_model(n_ctx=1024), embeddings=False)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def nested_schema(levels: int) -> dict:
    schema = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def json_schema(schema: dict) -> dict:
    return {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


def error(r: httpx.Response) -> tuple[int, str | None, str | None]:
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    return r.status_code, err["param"], err["code"]


@pytest.mark.parametrize("seed", [-1, -(2 ** 63)])
def test_negative_seed_means_random_not_a_500(http, seed):
    r = http.post("/v1/chat/completions", json={**CHAT, "seed": seed, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 4
    r = http.post("/v1/completions", json={"model": "tiny", "prompt": "ab", "seed": seed, "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_same_non_negative_seed_same_text(http):
    body = {**CHAT, "seed": 7, "temperature": 1.0, "max_tokens": 12}
    texts = {http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] for _ in range(2)}
    assert len(texts) == 1


@pytest.mark.parametrize("levels", [100, 5000, 100_000])
def test_deeply_nested_body_is_400(http, levels):
    raw = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * levels + "]" * levels + "}"
    r = http.post("/v1/chat/completions", content=raw.encode(), headers={"content-type": "application/json"})
    assert error(r) == (400, None, "too_deeply_nested")


@pytest.mark.parametrize("levels", [100, 400])
def test_deeply_nested_json_schema_is_400(http, levels):
    r = http.post("/v1/chat/completions", json=json_schema(nested_schema(levels)))
    assert error(r) == (400, None, "too_deeply_nested")
    r = http.post("/v1/chat/completions", json={**CHAT, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"a": nested_schema(levels)}}}}]})
    assert error(r) == (400, None, "too_deeply_nested")


def test_shallow_json_schema_still_runs(http):
    r = http.post("/v1/chat/completions", json={**json_schema({"enum": ["yes", "no"]}), "max_tokens": 20})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["choices"][0]["message"]["content"]) in ("yes", "no")


def test_schema_with_a_200_value_enum_is_400_before_the_model_runs(http, srv):
    backend = srv.app.state.server.model.backend
    before = backend.forwards
    r = http.post("/v1/chat/completions", json=json_schema({"enum": [f"value number {i}" for i in range(200)]}))
    assert error(r) == (400, "response_format.json_schema.schema", "schema_too_large")
    assert "200 enum values" in r.json()["error"]["message"]
    big = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "x" * 100}
                                            for i in range(100)}}
    r = http.post("/v1/chat/completions", json=json_schema(big))
    assert error(r) == (400, "response_format.json_schema.schema", "schema_too_large")
    r = http.post("/v1/chat/completions", json={**CHAT, "tools": [{"type": "function", "function": {
        "name": "pick", "parameters": {"type": "object", "properties": {"v": {"enum": list(range(500))}}}}}]})
    assert error(r) == (400, "tools[0].function.parameters", "schema_too_large")
    assert backend.forwards == before  # refused up front: the worker never ran


def test_grammar_over_llguidance_limits_is_400(http, monkeypatch):
    monkeypatch.setitem(features.GRAMMAR_LIMITS, "max_grammar_size", 5)
    r = http.post("/v1/chat/completions", json=json_schema({"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}}}))
    assert error(r) == (400, "response_format", "schema_too_complex")


def test_grammar_compile_past_the_timeout_is_400_and_frees_the_request(srv, monkeypatch):
    release = threading.Event()

    def slow_compile(backend, grammar):
        release.wait(30)
        return None

    monkeypatch.setattr(features, "_compile", slow_compile)
    srv.options.grammar_timeout_s = 0.2
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.post("/v1/chat/completions", json=json_schema({"type": "object"}))
            assert error(r) == (400, "response_format", "schema_too_complex")
            assert "takes over 0.2 s" in r.json()["error"]["message"]
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200  # still serving
    finally:
        release.set()
        srv.options.grammar_timeout_s = 2.0


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("stream,queued", [(False, True), (True, True), (True, False), (False, False)],
                         ids=["waiting", "waiting-stream", "mid-stream", "mid-generation"])
def test_client_disconnect_logs_no_traceback(stream, queued):
    model = tiny_model(delay_s=0.02)
    records = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "edge.server", "")]
    try:
        with start(model) as s:
            for lg in loggers:  # after start: uvicorn's logging set-up replaces its loggers' handlers
                lg.addHandler(records)
            # queued: one long job holds the worker, so the second waits in the queue and leaves from there;
            # else the second is generating when it leaves.
            busy = threading.Thread(target=lambda: queued and httpx.post(
                s.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 60}, timeout=60))
            busy.start()
            time.sleep(0.2)
            body = json.dumps({**CHAT, "max_tokens": 50, "stream": stream}).encode()
            sock = socket.create_connection(("127.0.0.1", s.options.port))
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            time.sleep(0.3)
            sock.close()
            busy.join()
            deadline = time.monotonic() + 5
            while "edge_cancelled_total 1" not in httpx.get(s.url + "/metrics").text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "edge_cancelled_total 1" in httpx.get(s.url + "/metrics").text
    finally:
        for lg in loggers:
            lg.removeHandler(records)
    noisy = [r for r in records.records if r.exc_info or "Traceback" in r.getMessage()
             or "CancelledError" in r.getMessage() or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]
