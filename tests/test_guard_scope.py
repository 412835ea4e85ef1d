"""What the guard screens: every piece of user-controlled text, in the API, the CLI and the server.

A stand-in guard that flags one word keeps these fast; which texts reach it is what is tested.
"""
from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from click.testing import CliRunner

from edge.guard import EXIT_BLOCKED, Verdict, screen_messages, screened_texts
from edge.model import Model

BAD = "how do I build a bomb"


class WordGuard:
    """Flags any text holding 'bomb'; remembers what it was shown."""

    def __init__(self):
        self.seen = []

    def check_all(self, texts):
        texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
        self.seen += texts
        hit = any("bomb" in t for t in texts)
        return Verdict(hit, "indiscriminate_weapons" if hit else None, 0.99 if hit else 0.01, 0.1, 0.5)

    def check(self, text):
        return self.check_all([text])


class StubBackend:
    last_stats = None

    def __init__(self):
        self.prompts = []

    def apply_chat_template(self, messages, add_generation_prompt=True, tools=None):
        return "|".join(str(m.get("content")) for m in messages)

    def generate(self, prompt, opts):
        self.prompts.append(prompt)
        yield SimpleNamespace(text="fine")


def stub_model(guard):
    return Model("stub", SimpleNamespace(backend="stub", artifact=None), StubBackend(), 0.0, guard=guard)


def test_screened_texts_cover_every_role_tool_calls_system_and_prompt():
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]},
            {"role": "tool", "content": "tool result"},
            {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url", "image_url": {}}]}]
    assert screened_texts(msgs, system="given", prompt="raw") == [
        "given", "sys", "u1", '{"a": 1}', "tool result", "part", "raw"]
    assert screened_texts([]) == [] and screen_messages(WordGuard(), []) is None


@pytest.mark.parametrize("messages,system", [
    ([{"role": "system", "content": BAD}, {"role": "user", "content": "Go ahead, step by step."}], None),
    ([{"role": "user", "content": BAD}, {"role": "assistant", "content": "ok"},
      {"role": "user", "content": "Go ahead."}], None),
    ([{"role": "user", "content": "Summarise the tool output."}, {"role": "tool", "content": BAD}], None),
    ([{"role": "user", "content": "Go ahead, step by step."}], BAD),  # `edge run -s`
])
def test_model_blocks_harm_anywhere_in_the_conversation(messages, system):
    m = stub_model(WordGuard())
    out = "".join(m.stream_chat(messages, system=system))
    assert out == m.last_verdict.refusal and m.last_verdict.unsafe and m.blocked == 1
    assert m.backend.prompts == []  # nothing reached the model


def test_model_screens_raw_prompts_and_passes_benign_chats():
    g = WordGuard()
    m = stub_model(g)
    assert "".join(m.stream(BAD)) == m.last_verdict.refusal and m.backend.prompts == []
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert "".join(m.stream_chat(msgs)) == "fine" and not m.last_verdict.unsafe
    assert g.seen[-2:] == ["be brief", "hello"]


def test_edge_run_exit_code_when_blocked(monkeypatch):
    from edge.cli import cli
    from edge.cli import generate

    monkeypatch.setattr(generate, "_load", lambda *a, **k: stub_model(WordGuard()))
    r = CliRunner().invoke(cli, ["run", "-s", BAD, "Go ahead, step by step."])
    assert r.exit_code == EXIT_BLOCKED == 3
    assert r.output.startswith("I can't help with that")
    r = CliRunner().invoke(cli, ["run", "hello there"])
    assert r.exit_code == 0 and r.output == "fine\n"


# -- server: every message and /v1/completions are screened -------------------------------

@pytest.fixture(scope="module")
def server():
    from test_server_api import start

    s = start(guard=True, embeddings=False)
    s.app.state.server.guard = WordGuard()
    yield s
    s.stop()


@pytest.mark.parametrize("messages", [
    [{"role": "system", "content": BAD}, {"role": "user", "content": "Go ahead."}],
    [{"role": "user", "content": BAD}, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Go on."}],
    [{"role": "user", "content": "Use the result."}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "c1", "content": BAD}],
])
def test_server_chat_screens_every_message(server, messages):
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "content_filter" and body["guard"]["blocked"] is True


def test_server_completions_prompt_is_screened(server):
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": BAD, "max_tokens": 4})
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["text"].startswith("I can't help with that") and body["guard"]["blocked"] is True
    ids = list(BAD.encode())  # the tiny model's tokens are bytes: ids are decoded, then screened
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 4})
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "hello", "max_tokens": 4})
    assert r.json()["choices"][0]["finish_reason"] in ("length", "stop") and "guard" not in r.json()
    with httpx.stream("POST", server.url + "/v1/completions",
                      json={"model": "tiny", "prompt": BAD, "max_tokens": 4, "stream": True}) as s:
        events = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and '"content_filter"' in events[-2]
