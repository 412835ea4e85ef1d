"""OpenAI request bodies: pydantic models (served as /openapi.json) and their parsing.

The models say what each endpoint takes, as llama-cpp-python's and vLLM's
servers do; `parse_*` validates a body against them and turns the first
problem into a 400 naming the field (`param`) with OpenAI's codes:
missing_required_parameter, invalid_type or invalid_value. Fields OpenAI
defines but a local model cannot honour are accepted at their neutral value
and refused otherwise, so no request is silently misread; unknown fields are
ignored, as other local servers do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, ValidationError

from .errors import APIError, bad

INT64 = 2 ** 63
MAX_EMBED_INPUTS = 2048

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


class _Body(BaseModel):
    # strict: no "10" -> 10 or true -> 1 coercion; extra fields are ignored, as by other local servers.
    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


# -- chat ---------------------------------------------------------------------------------

class TextPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(_Body):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


Content = Union[str, list[TextPart]]


class SystemMessage(_Body):
    role: Literal["system", "developer"] = Field(description="'developer' is read as 'system'.")
    content: Content
    name: Optional[str] = None


class UserMessage(_Body):
    role: Literal["user"]
    content: Content
    name: Optional[str] = None


class AssistantTurn(_Body):
    role: Literal["assistant"]
    content: Optional[Content] = Field(None, description="May be omitted when tool_calls is given.")
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None


class ToolMessage(_Body):
    role: Literal["tool"]
    content: Content
    tool_call_id: Optional[str] = None
    name: Optional[str] = None


_ROLE_TAGS = {"system": "system_message", "developer": "system_message", "user": "user_message",
              "assistant": "assistant_message", "tool": "tool_message"}


def _role_tag(value) -> str | None:
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    return _ROLE_TAGS.get(role) if isinstance(role, str) else None


# One model per role, chosen by `role` (the tags are not field names, so errors name the field).
ChatMessage = Annotated[Union[Annotated[SystemMessage, Tag("system_message")],
                              Annotated[UserMessage, Tag("user_message")],
                              Annotated[AssistantTurn, Tag("assistant_message")],
                              Annotated[ToolMessage, Tag("tool_message")]],
                        Discriminator(_role_tag, custom_error_type="invalid_role",
                                      custom_error_message="Input should be one of system, developer, user, "
                                                           "assistant, tool")]


class FunctionDefinition(_Body):
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = Field(None, description="A JSON schema of the arguments.")
    strict: Optional[bool] = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaSpec(_Body):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema", description="The JSON schema the reply follows.")
    strict: Optional[bool] = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaSpec] = Field(None, description="Required when type is 'json_schema'.")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """Fields shared by chat and text completions."""

    max_tokens: Optional[int] = Field(None, ge=1,
                                      description="Default: the server's --max-tokens, trimmed to the context.")
    temperature: Optional[float] = Field(None, ge=0, le=2, description="0 is greedy.")
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0, lt=INT64, description="0 disables (edge extension).")
    repeat_penalty: Optional[float] = Field(None, ge=0.01, le=100, description="1 disables (edge extension).")
    seed: Optional[int] = Field(None, ge=-INT64, lt=INT64,
                                description="Same seed, same sampled text; a negative seed (e.g. -1) means random.")
    stop: Union[str, Annotated[list[NonEmpty], Field(max_length=4)], None] = Field(
        None, description="A string or up to 4 non-empty strings.")
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = Field(None, ge=1, le=1, description="One choice per request.")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2, description="Accepted and ignored.")
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2, description="Accepted and ignored.")
    logprobs: Union[Literal[False], Literal[0], None] = Field(
        None, description="Only false (or 0): log probabilities are not returned.")
    logit_bias: Optional[Annotated[dict[str, float], Field(max_length=0)]] = Field(
        None, description="Only empty: logit_bias is not supported.")
    user: Optional[str] = None


class ChatCompletionRequest(_Sampling):
    model: str = Field(min_length=1, description="A model id from GET /v1/models.")
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Same as max_tokens; wins over it.")
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[ResponseFormat] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=0)


class CompletionRequest(_Sampling):
    model: str = Field(min_length=1, description="A model id from GET /v1/models.")
    prompt: Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1, max_length=1)],
                  Annotated[list[Annotated[int, Field(ge=0, lt=INT64)]], Field(min_length=1)]] = Field(
        description="A string, a list holding one string, or a list of token ids (one prompt per request).")
    echo: Optional[Literal[False]] = Field(None, description="Only false: echo is not supported.")
    best_of: Optional[int] = Field(None, ge=1, le=1)
    suffix: Optional[Annotated[str, StringConstraints(max_length=0)]] = Field(
        None, description="Only empty: suffix is not supported.")


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1, description="A model id from GET /v1/models.")
    input: Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]] = Field(
        description=f"A string or a list of up to {MAX_EMBED_INPUTS} strings, none empty.")
    encoding_format: Optional[Literal["float", "base64"]] = None
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None


# What each field must be, in the words of the 400 it gets (else pydantic's own words).
WANTS = {
    "model": "a model id from GET /v1/models",
    "messages": "a non-empty list of messages",
    "max_tokens": "at least 1", "max_completion_tokens": "at least 1",
    "temperature": "between 0 and 2", "top_p": "in (0, 1]", "top_k": "0 or more",
    "repeat_penalty": "between 0.01 and 100", "seed": "a 64-bit integer",
    "stop": "a string or a list of at most 4 non-empty strings",
    "stream_options": "an object whose include_usage is a boolean",
    "n": "1 (one choice per request)", "best_of": "1",
    "presence_penalty": "between -2 and 2", "frequency_penalty": "between -2 and 2",
    "logprobs": "false (log probabilities are not returned)",
    "logit_bias": "empty (logit_bias is not supported)",
    "top_logprobs": "0",
    "echo": "false (echo is not supported)",
    "suffix": "empty (suffix is not supported)",
    "encoding_format": "'float' or 'base64'",
    "tool_choice": "'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}",
    "prompt": "a non-empty string, a list holding one, or a list of token ids (one prompt per request)",
    "input": f"a non-empty string or a list of 1 to {MAX_EMBED_INPUTS} non-empty strings (token arrays are not "
             "supported)",
    "messages.role": "one of system, developer, user, assistant, tool",
    "response_format.type": "'text', 'json_object' or 'json_schema'",
    "messages.content.type": "'text' (this text model takes only {\"type\": \"text\", \"text\": ...} parts)",
}
# Fields whose problems are reported on the field as a whole, whatever part is wrong.
WHOLE = {"stop", "prompt", "input", "tool_choice", "tools", "stream_options", "logit_bias"}
# Pydantic error types that mean "wrong JSON type", by the JSON type that was wanted.
TYPES = {"string_type": "string", "int_type": "integer", "float_type": "number", "bool_type": "boolean",
         "list_type": "array", "dict_type": "object", "model_type": "object", "model_attributes_type": "object",
         "none_required": "null"}
_FIELDS: set[str] = set()


def _collect_fields(model: type[BaseModel]) -> None:
    for name, info in model.model_fields.items():
        _FIELDS.add(info.alias or name)


for _m in (TextPart, FunctionCall, ToolCall, SystemMessage, UserMessage, AssistantTurn, ToolMessage,
           FunctionDefinition, Tool, NamedFunction, NamedToolChoice,
           JSONSchemaSpec, ResponseFormat, StreamOptions, ChatCompletionRequest, CompletionRequest, EmbeddingRequest):
    _collect_fields(_m)


def _path(loc: tuple) -> list:
    """A pydantic location without its union-branch tags: ("messages", 0, "content")."""
    return [p for p in loc if isinstance(p, int) or p in _FIELDS]


def _param(path: list) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def validation_error(exc: ValidationError, body: dict) -> APIError:
    """The 400 for the first field a body gets wrong (pydantic's field order)."""
    errors = []
    for e in exc.errors(include_url=False):
        if e["type"] == "invalid_role":  # the message's role picks its model: point at the role, or the message
            e = dict(e, loc=e["loc"] + ("role",)) if isinstance(e["input"], dict) else dict(e, type="model_type")
        errors.append(dict(e, path=_path(e["loc"])))
    top = errors[0]["path"][:1]
    group = [e for e in errors if e["path"][:1] == top]
    if top and top[0] in WHOLE:
        path = top
    else:  # the most precise place: the first of the deepest locations (union branches share one)
        path = max((e["path"] for e in group), key=len)
    here = [e for e in group if e["path"][: len(path)] == path]
    param = _param(path) or None
    key = ".".join(p for p in path if isinstance(p, str))
    value = _at(body, path)
    if any(e["type"] == "missing" and e["path"] == path for e in here):
        return bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if all(e["type"] in TYPES and e["path"] == path for e in here):
        kinds = sorted({TYPES[e["type"]] for e in here} - {"null"}, key=list(TYPES.values()).index)
        return bad(f"Invalid type for '{param}': expected {' or '.join(kinds)}, got {_kind(value)}.", param,
                   "invalid_type")
    if key == "tools":
        first = here[0]
        return bad(f"Invalid 'tools': '{_param(first['path'])}': {first['msg'][0].lower()}{first['msg'][1:]}.",
                   "tools", "invalid_tools")
    shown = json.dumps(value, default=str)[:60]
    if key in WANTS:
        return bad(f"Invalid value for '{param}': {shown}; it must be {WANTS[key]}.", param, "invalid_value")
    msg = next(e["msg"] for e in here if e["type"] not in TYPES or e["path"] != path)
    return bad(f"Invalid value for '{param}': {shown}; {msg[0].lower()}{msg[1:]}.", param, "invalid_value")


def _at(body, path: list):
    for p in path:
        try:
            body = body[p]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def validate(model: type[BaseModel], body: dict):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc, body) from None
    except RecursionError:
        raise too_deep("The request body") from None


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


@dataclass
class Sampling:
    """The generation keyword arguments of a request, as `Model.stream` takes them."""

    max_tokens: int | None
    gen: dict
    stream: bool
    include_usage: bool


def sampling(req: _Sampling, max_tokens: int | None = None) -> Sampling:
    gen = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k", "repeat_penalty", "seed")
           if getattr(req, k) is not None}
    if gen.get("seed", 0) < 0:
        del gen["seed"]  # OpenAI allows any integer; a negative seed means "random", as in llama.cpp
    if req.stop:
        gen["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Sampling(max_tokens or req.max_tokens, gen, bool(req.stream), include_usage)


@dataclass
class ParsedChat:
    model: str
    messages: list[dict]
    sampling: Sampling
    tools: list | None = None
    tool_choice: Any = None
    response_format: dict | None = None
    raw: dict = field(default_factory=dict)


def parse_chat(body: dict) -> ParsedChat:
    req = validate(ChatCompletionRequest, body)
    messages = [_message(m, body["messages"][i], i) for i, m in enumerate(req.messages)]
    fmt = body.get("response_format")
    if req.response_format is not None and req.response_format.type == "json_schema" \
            and req.response_format.json_schema is None:
        raise bad("'response_format.json_schema' must be an object with a 'name' and a 'schema' object.",
                  "response_format.json_schema", "invalid_value")
    tools = body.get("tools") or None
    choice = body.get("tool_choice")
    if choice not in (None, "none", "auto") and not tools:
        raise bad("'tool_choice' needs 'tools' to choose from.", "tool_choice", "invalid_value")
    return ParsedChat(req.model, messages, sampling(req, req.max_completion_tokens), tools, choice, fmt, body)


def _message(m, raw: dict, i: int) -> dict:
    where = f"messages[{i}]"
    content = m.content
    if isinstance(content, list):
        content = "\n".join(p.text for p in content)
    if content is None and not getattr(m, "tool_calls", None):
        raise bad(f"Missing required parameter: '{where}.content'.", f"{where}.content", "missing_required_parameter")
    out = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
    for key in ("name", "tool_calls", "tool_call_id"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    return out


@dataclass
class ParsedCompletion:
    model: str
    prompt: str | list[int]
    sampling: Sampling


def parse_completion(body: dict) -> ParsedCompletion:
    req = validate(CompletionRequest, body)
    # The model allows one string, a list holding one string, or token ids.
    prompt = req.prompt[0] if isinstance(req.prompt, list) and isinstance(req.prompt[0], str) else req.prompt
    return ParsedCompletion(req.model, prompt, sampling(req))


@dataclass
class ParsedEmbedding:
    model: str
    inputs: list[str]
    base64: bool
    dimensions: int | None = None


def parse_embedding(body: dict) -> ParsedEmbedding:
    req = validate(EmbeddingRequest, body)
    inputs = [req.input] if isinstance(req.input, str) else req.input
    return ParsedEmbedding(req.model, inputs, req.encoding_format == "base64", req.dimensions)


def unknown_model(name: str, served: list[str]) -> APIError:
    return APIError(404, f"The model '{name}' does not exist on this server; use one of: {', '.join(served)}.",
                    "invalid_request_error", "model", "model_not_found")


# -- responses (documented in /openapi.json; the handlers build the same shapes) -----------

class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Out):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, "
                                  "server_overloaded or server_error.")
    param: Optional[str] = Field(None, description="The request field at fault, as messages[0].content.")
    code: Optional[str] = None


class ErrorResponse(_Out):
    error: ErrorDetail


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class AssistantToolCall(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Out):
    role: Literal["assistant"]
    content: Optional[str]
    refusal: Optional[str] = Field(None, description="The guard's refusal, when it blocked the prompt.")
    tool_calls: Optional[list[AssistantToolCall]] = None


FINISH = Literal["stop", "length", "tool_calls", "content_filter"]


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    finish_reason: FINISH
    logprobs: None = None


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None
    guard: Optional[dict[str, Any]] = Field(None, description="Present when the prompt guard blocked the request: "
                                                              "blocked, score, label.")


class DeltaToolCall(_Out):
    index: int
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: Optional[FunctionCall] = None


class Delta(_Out):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None
    refusal: Optional[str] = None
    tool_calls: Optional[list[DeltaToolCall]] = None


class ChunkChoice(_Out):
    index: int
    delta: Delta
    finish_reason: Optional[FINISH] = None
    logprobs: None = None


class ChatCompletionChunk(_Out):
    """One server-sent event of a streamed chat completion (`data: {...}`, ending with `data: [DONE]`)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: Optional[str] = None
    usage: Optional[Usage] = Field(None, description="On the last chunk, with stream_options.include_usage.")
    guard: Optional[dict[str, Any]] = None


class CompletionChoice(_Out):
    index: int
    text: str
    finish_reason: Optional[Literal["stop", "length"]] = Field(None,
                                                               description="null on streamed chunks but the last.")
    logprobs: None = None


class Completion(_Out):
    """A text completion, or one streamed event of one (without usage but on the last)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None


class EmbeddingData(_Out):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str] = Field(description="Floats, or base64 of little-endian float32.")


class EmbeddingList(_Out):
    object: Literal["list"]
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class Health(_Out):
    status: Literal["ok"]
    model: str
    backend: str
    queue_depth: int
    active: int


REQUESTS = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)
# Streamed events are not a FastAPI response_model; /openapi.json lists them by hand.
EVENTS = (ChatCompletionChunk, Completion)
