"""Parse and check OpenAI request bodies before they reach the model.

Each endpoint's fields are one table: name -> (accepted JSON types, range
check, what the check wants). A field that is missing, of the wrong type or
out of range raises a 400 naming the field (`param`), as OpenAI does. Fields
OpenAI defines but a local model cannot honour are accepted at their neutral
value and refused otherwise, so no request is silently misread; unknown
fields are ignored, as other local servers do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import APIError, bad

NUM = "number"
INT = "integer"
STR = "string"
BOOL = "boolean"
ARR = "array"
OBJ = "object"
NULL = "null"

_PY = {STR: (str,), BOOL: (bool,), ARR: (list,), OBJ: (dict,), NULL: (type(None),)}


def _is(value, kind: str) -> bool:
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _PY[kind])


Spec = tuple[tuple[str, ...], Callable[[Any], bool] | None, str]

# Sampling fields shared by chat and text completions.
SAMPLING: dict[str, Spec] = {
    "max_tokens": ((INT, NULL), lambda v: v >= 1, "at least 1"),
    "temperature": ((NUM, NULL), lambda v: 0 <= v <= 2, "between 0 and 2"),
    "top_p": ((NUM, NULL), lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k": ((INT, NULL), lambda v: v >= 0, "0 or more"),
    "repeat_penalty": ((NUM, NULL), lambda v: v > 0, "above 0"),
    "seed": ((INT, NULL), None, ""),
    "stop": ((STR, ARR, NULL), lambda v: isinstance(v, str) or (len(v) <= 4 and all(isinstance(s, str) and s for s in v)),
             "a string or a list of at most 4 non-empty strings"),
    "stream": ((BOOL, NULL), None, ""),
    "stream_options": ((OBJ, NULL), lambda v: isinstance(v.get("include_usage", False), bool),
                       "an object whose include_usage is a boolean"),
    "n": ((INT, NULL), lambda v: v == 1, "1 (one choice per request)"),
    "presence_penalty": ((NUM, NULL), lambda v: -2 <= v <= 2, "between -2 and 2"),
    "frequency_penalty": ((NUM, NULL), lambda v: -2 <= v <= 2, "between -2 and 2"),
    "logprobs": ((BOOL, INT, NULL), lambda v: not v, "false (log probabilities are not returned)"),
    "logit_bias": ((OBJ, NULL), lambda v: not v, "empty (logit_bias is not supported)"),
    "user": ((STR, NULL), None, ""),
}

CHAT: dict[str, Spec] = {
    **SAMPLING,
    "model": ((STR,), lambda v: bool(v), "a model id from GET /v1/models"),
    "messages": ((ARR,), lambda v: len(v) > 0, "a non-empty list of messages"),
    "max_completion_tokens": ((INT, NULL), lambda v: v >= 1, "at least 1"),
    "tools": ((ARR, NULL), None, ""),
    "tool_choice": ((STR, OBJ, NULL), None, ""),
    "parallel_tool_calls": ((BOOL, NULL), None, ""),
    "response_format": ((OBJ, NULL), None, ""),
    "top_logprobs": ((INT, NULL), lambda v: v == 0, "0"),
}

COMPLETION: dict[str, Spec] = {
    **SAMPLING,
    "model": ((STR,), lambda v: bool(v), "a model id from GET /v1/models"),
    "prompt": ((STR, ARR), None, ""),
    "echo": ((BOOL, NULL), lambda v: not v, "false (echo is not supported)"),
    "best_of": ((INT, NULL), lambda v: v == 1, "1"),
    "suffix": ((STR, NULL), lambda v: not v, "empty (suffix is not supported)"),
}

EMBEDDING: dict[str, Spec] = {
    "model": ((STR,), lambda v: bool(v), "a model id from GET /v1/models"),
    "input": ((STR, ARR), None, ""),
    "encoding_format": ((STR, NULL), lambda v: v in ("float", "base64"), "'float' or 'base64'"),
    "dimensions": ((INT, NULL), None, ""),
    "user": ((STR, NULL), None, ""),
}

REQUIRED = {"chat": ("model", "messages"), "completion": ("model", "prompt"), "embedding": ("model", "input")}
ROLES = ("system", "developer", "user", "assistant", "tool")


# Deepest nesting of arrays and objects a request body may have. Real requests (JSON
# schemas included) stay far below; deeper ones would exhaust the recursion of the
# validators and grammar compilers downstream.
MAX_DEPTH = 64


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"The request body is not valid JSON ({exc}). Send a JSON object.", code="invalid_json") from None
    except RecursionError:
        raise too_deep("The request body") from None
    if depth(body) > MAX_DEPTH:
        raise too_deep("The request body")
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.", code="invalid_json")
    return body


def too_deep(what: str, param: str | None = None, limit: int = MAX_DEPTH) -> APIError:
    return bad(f"{what} nests arrays and objects more than {limit} levels deep; flatten it.", param,
               "too_deeply_nested")


def depth(value, stop: int = MAX_DEPTH) -> int:
    """Nesting depth of arrays and objects in a JSON value, counted without recursion (up to stop + 1)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        deepest = max(deepest, d)
        if deepest > stop:
            return deepest
        todo.extend((c, d + 1) for c in children)
    return deepest


def check(body: dict, table: dict[str, Spec], required: tuple[str, ...]) -> None:
    for name in required:
        if name not in body:
            raise bad(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    for name, (kinds, ok, wants) in table.items():
        if name not in body:
            continue
        value = body[name]
        if not any(_is(value, k) for k in kinds):
            names = " or ".join(k for k in kinds if k != NULL)
            raise bad(f"Invalid type for '{name}': expected {names}, got {_kind(value)}.", name, "invalid_type")
        if value is not None and ok is not None and not ok(value):
            raise bad(f"Invalid value for '{name}': {json.dumps(value)[:60]}; it must be {wants}.", name, "invalid_value")


def _kind(value) -> str:
    for k in (BOOL, INT, NUM, STR, ARR, OBJ, NULL):
        if _is(value, k):
            return k
    return type(value).__name__


@dataclass
class Sampling:
    """The generation keyword arguments of a request, as `Model.stream` takes them."""

    max_tokens: int | None
    gen: dict
    stream: bool
    include_usage: bool


def sampling(body: dict, max_tokens_key: str = "max_tokens") -> Sampling:
    max_tokens = body.get(max_tokens_key) or body.get("max_tokens")
    gen = {k: body[k] for k in ("temperature", "top_p", "top_k", "repeat_penalty", "seed") if body.get(k) is not None}
    if gen.get("seed", 0) < 0:
        del gen["seed"]  # OpenAI allows any integer; a negative seed means "random", as in llama.cpp
    if body.get("stop"):
        gen["stop"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
    opts = body.get("stream_options") or {}
    return Sampling(max_tokens, gen, bool(body.get("stream")), bool(opts.get("include_usage")))


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    sampling: Sampling
    tools: list | None = None
    tool_choice: Any = None
    response_format: dict | None = None
    raw: dict = field(default_factory=dict)


def parse_chat(body: dict) -> ChatRequest:
    check(body, CHAT, REQUIRED["chat"])
    messages = [_message(m, i) for i, m in enumerate(body["messages"])]
    fmt = body.get("response_format")
    if fmt is not None:
        _check_response_format(fmt)
    tools = body.get("tools") or None
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        raise bad(f"Invalid value for 'tool_choice': '{choice}'; use 'none', 'auto', 'required' or "
                  "{\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice", "invalid_value")
    if isinstance(choice, dict) and not isinstance((choice.get("function") or {}).get("name"), str):
        raise bad("Invalid 'tool_choice': an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                  "tool_choice", "invalid_value")
    if choice not in (None, "none", "auto") and not tools:
        raise bad("'tool_choice' needs 'tools' to choose from.", "tool_choice", "invalid_value")
    return ChatRequest(body["model"], messages, sampling(body, "max_completion_tokens"), tools, choice, fmt, body)


def _message(m, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise bad(f"Invalid type for '{where}': expected object, got {_kind(m)}.", where, "invalid_type")
    role = m.get("role")
    if role not in ROLES:
        raise bad(f"Invalid value for '{where}.role': {json.dumps(role)}; use one of {', '.join(ROLES)}.",
                  f"{where}.role", "invalid_value")
    content = m.get("content")
    if isinstance(content, list):
        content = _text_parts(content, where)
    if content is None and not (role == "assistant" and m.get("tool_calls")):
        raise bad(f"Missing required parameter: '{where}.content'.", f"{where}.content", "missing_required_parameter")
    if content is not None and not isinstance(content, str):
        raise bad(f"Invalid type for '{where}.content': expected string or array of text parts, got {_kind(content)}.",
                  f"{where}.content", "invalid_type")
    out = {"role": "system" if role == "developer" else role, "content": content or ""}
    for key in ("name", "tool_calls", "tool_call_id"):
        if m.get(key) is not None:
            out[key] = m[key]
    return out


def _text_parts(parts: list, where: str) -> str:
    texts = []
    for j, p in enumerate(parts):
        if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise bad(f"Invalid content part '{where}.content[{j}]': only {{\"type\": \"text\", \"text\": ...}} "
                      "parts are supported by this text model.", f"{where}.content", "invalid_value")
        texts.append(p["text"])
    return "\n".join(texts)


def _check_response_format(fmt: dict) -> None:
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise bad(f"Invalid value for 'response_format.type': {json.dumps(kind)}; use 'text', 'json_object' "
                  "or 'json_schema'.", "response_format.type", "invalid_value")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict) or not spec.get("name"):
            raise bad("'response_format.json_schema' must be an object with a 'name' and a 'schema' object.",
                      "response_format.json_schema", "invalid_value")


@dataclass
class CompletionRequest:
    model: str
    prompt: str | list[int]
    sampling: Sampling


def parse_completion(body: dict) -> CompletionRequest:
    check(body, COMPLETION, REQUIRED["completion"])
    prompt = body["prompt"]
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        elif prompt and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
            prompt = list(prompt)
        else:
            raise bad("'prompt' must be a string, a list holding one string, or a list of token ids "
                      "(one prompt per request).", "prompt", "invalid_value")
    if isinstance(prompt, str) and not prompt:
        raise bad("'prompt' is empty; send some text to complete.", "prompt", "invalid_value")
    return CompletionRequest(body["model"], prompt, sampling(body))


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list[str]
    base64: bool
    dimensions: int | None = None


MAX_EMBED_INPUTS = 2048


def parse_embedding(body: dict) -> EmbeddingRequest:
    check(body, EMBEDDING, REQUIRED["embedding"])
    inputs = body["input"]
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not inputs or not all(isinstance(t, str) for t in inputs):
        raise bad("'input' must be a string or a non-empty list of strings (token arrays are not supported).",
                  "input", "invalid_value")
    if len(inputs) > MAX_EMBED_INPUTS:
        raise bad(f"'input' holds {len(inputs)} texts; send at most {MAX_EMBED_INPUTS} per request.",
                  "input", "invalid_value")
    if any(not t for t in inputs):
        raise bad("'input' contains an empty string; every text must be non-empty.", "input", "invalid_value")
    return EmbeddingRequest(body["model"], inputs, body.get("encoding_format") == "base64", body.get("dimensions"))


def unknown_model(name: str, served: list[str]) -> APIError:
    return APIError(404, f"The model '{name}' does not exist on this server; use one of: {', '.join(served)}.",
                    "invalid_request_error", "model", "model_not_found")
