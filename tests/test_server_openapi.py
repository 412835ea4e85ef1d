"""The server describes itself: /openapi.json from the pydantic models, /docs, and answers that fit them."""
from __future__ import annotations

import json

import httpx
import pytest

from edge.server import protocol
from test_server_api import CHAT, start


@pytest.fixture(scope="module")
def srv():
    s = start(api_key="k", embeddings=False)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.url, timeout=30, headers={"Authorization": "Bearer k"}) as c:
        yield c


def test_openapi_json_describes_every_route_with_the_request_models(srv):
    spec = httpx.get(srv.url + "/openapi.json").json()  # open without the API key
    assert spec["openapi"].startswith("3.1")
    bodies = {path: spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
              for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")}
    assert bodies == {"/v1/chat/completions": "#/components/schemas/ChatCompletionRequest",
                      "/v1/completions": "#/components/schemas/CompletionRequest",
                      "/v1/embeddings": "#/components/schemas/EmbeddingRequest"}
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"]
    assert chat["properties"]["model"]["enum"] == ["tiny"]
    assert chat["properties"]["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0.0, "maximum": 2.0}
    ok = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert ok["200"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ChatCompletion"
    assert ok["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorResponse"
    for name in ("ChatCompletion", "ChatCompletionChunk", "Completion", "EmbeddingList", "ErrorResponse", "ModelList"):
        assert name in spec["components"]["schemas"], name


def test_docs_page_is_served_without_the_key(srv):
    r = httpx.get(srv.url + "/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower() and "/openapi.json" in r.text
    assert httpx.get(srv.url + "/v1/models").status_code == 401


def test_answers_fit_the_response_models(http):
    protocol.ModelList.model_validate(http.get("/v1/models").json())
    protocol.Health.model_validate(http.get("/health").json())
    greedy = {**CHAT, "temperature": 0}
    chat = protocol.ChatCompletion.model_validate(http.post("/v1/chat/completions", json=greedy).json())
    assert chat.usage.completion_tokens == CHAT["max_tokens"]
    text = protocol.Completion.model_validate(
        http.post("/v1/completions", json={"model": "tiny", "prompt": "ab", "max_tokens": 2}).json())
    assert text.choices[0].finish_reason == "length"
    with http.stream("POST", "/v1/chat/completions", json={**greedy, "stream": True}) as r:
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [protocol.ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat.choices[0].message.content
    err = http.post("/v1/chat/completions", json={**CHAT, "n": 3})
    assert protocol.ErrorResponse.model_validate(err.json()).error.param == "n"
