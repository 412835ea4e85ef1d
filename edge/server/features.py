"""Where the server meets the guard, the tool engine and the encoder.

Each request is turned into a `Plan`: how to render its prompt, whether
generation is constrained (tool calls, JSON schema) and how the generated
text becomes an OpenAI message. Plain chat streams text as it comes; a
constrained answer is parsed once complete and sent as one delta. A JSON
schema is bounded in size (SchemaLimits) and its grammar compiled once up
front under llguidance limits and a timeout (check_grammar), so a schema too
big or too costly is a 400 before anything waits for the worker.
"""
from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import bad
from .protocol import ParsedChat


# -- guard -----------------------------------------------------------------------

class Guard:
    """edge's prompt guard (edge.guard), loaded at `load()` or the first check."""

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold
        self._guard = None

    def load(self):
        if self._guard is None:
            from ..guard import Guard as _Guard

            self._guard = _Guard.default() if self.threshold is None else _Guard(self.threshold)
        return self._guard

    def check(self, text: str):
        return self.load().check(text)


def _blocked(verdict) -> bool:
    if isinstance(verdict, dict):
        return bool(verdict.get("blocked", verdict.get("unsafe")))
    return bool(getattr(verdict, "blocked", getattr(verdict, "unsafe", False)))


def verdict_dict(verdict) -> dict:
    """The verdict's public fields, for the `guard` flag of a blocked response."""
    if isinstance(verdict, dict):
        raw = verdict
    elif hasattr(verdict, "to_dict"):
        raw = verdict.to_dict()
    else:
        raw = {k: v for k, v in vars(verdict).items() if not k.startswith("_")}
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in raw.items()
            if (v is None or isinstance(v, (str, int, float, bool, np.floating))) and k != "blocked"}


def refusal_text(verdict, default: str) -> str:
    """The guard's own refusal for this verdict when it has one."""
    text = verdict.get("refusal") if isinstance(verdict, dict) else getattr(verdict, "refusal", None)
    return text if isinstance(text, str) and text else default


async def screen(guard, messages: list[dict] | None = None, prompt=None, model=None):
    """The guard's verdict when it blocks, else None.

    edge.guard.screen_messages decides what is screened: every message
    whatever its role (system, user, assistant, tool) and a completion prompt
    (token ids are decoded with the model's tokenizer first).
    """
    from starlette.concurrency import run_in_threadpool

    from ..guard import screen_messages

    if isinstance(prompt, list):  # token ids: screen what they spell
        try:
            prompt = model.backend.detokenize(prompt)
        except Exception:  # noqa: BLE001 - ids the tokenizer rejects reach no model either
            prompt = None
    verdict = await run_in_threadpool(screen_messages, _checker(guard), messages, None, prompt)
    return verdict if verdict is not None and _blocked(verdict) else None


def _checker(guard):
    """The object whose check/check_all scores text: edge's Guard behind the lazy wrapper, or a test's fake."""
    return guard.load() if isinstance(guard, Guard) else guard


# -- embeddings ---------------------------------------------------------------------

def encoder():
    from ..embed import Encoder

    return Encoder.default()


def embed(enc, texts: list[str]) -> tuple[np.ndarray, int]:
    """Embeddings of texts and the number of tokens they took."""
    vectors = enc.encode(texts)
    n_tokens = int(enc.tokenize(texts)[1].sum()) if hasattr(enc, "tokenize") else 0
    return vectors, n_tokens


def encode_vector(v: np.ndarray, as_base64: bool):
    if as_base64:
        return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")
    return [float(x) for x in v]


# -- chat plans ------------------------------------------------------------------------

@dataclass
class Plan:
    """How one chat request runs and how its text becomes a message."""

    prompt: Callable | None     # model -> prompt text
    post: Callable | None = None  # (model, ids, gen) -> pieces, for constrained decoding
    run: Callable | None = None   # (model, sampling, max_tokens) -> pieces, for a whole tool call
    streams_text: bool = True
    parse: Callable | None = None  # full text -> (message, finish_reason)
    buffer: list = field(default_factory=list)
    grammar: str | None = None  # the constraint's grammar, compiled once up front (check_grammar)

    def message(self, text: str, finish: str) -> tuple[dict, str]:
        if self.parse is None:
            return {"role": "assistant", "content": text}, finish
        return self.parse(text, finish)

    @staticmethod
    def delta(message: dict) -> dict:
        out = {k: v for k, v in message.items() if k != "role"}
        if out.get("tool_calls"):
            out["tool_calls"] = [{"index": i, **c} for i, c in enumerate(out["tool_calls"])]
        return out


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as a chat template can render them: tool calls written out as JSON text."""
    out = []
    for m in messages:
        content = m["content"]
        if m["role"] == "assistant" and m.get("tool_calls") and not content:
            calls = [c.get("function", c) for c in m["tool_calls"] if isinstance(c, dict)]
            content = json.dumps([{"name": c.get("name"), "arguments": _loads(c.get("arguments"))} for c in calls])
        if m["role"] == "tool":  # most small-model templates know no tool role
            out.append({"role": "user", "content": f"Tool result: {content}"})
            continue
        out.append({"role": m["role"], "content": content})
    return out


def _loads(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


@dataclass
class SchemaLimits:
    """How big a JSON schema a request may bring (ServerOptions' schema_max_* fields)."""

    max_bytes: int = 8192
    max_enum: int = 64

    @classmethod
    def of(cls, options) -> "SchemaLimits":
        return cls(options.schema_max_bytes, options.schema_max_enum)


def plan(req: ParsedChat, limits: SchemaLimits | None = None) -> Plan:
    limits = limits or SchemaLimits()
    messages = template_messages(req.messages)
    fmt = (req.response_format or {}).get("type", "text")
    if req.tools and req.tool_choice != "none" and req.messages[-1]["role"] == "user":
        return tool_plan(req, messages, limits)
    if fmt in ("json_schema", "json_object"):
        return json_plan(req, messages, limits)
    return Plan(lambda model: model.apply_chat_template(messages))


def json_plan(req: ParsedChat, messages: list[dict], limits: SchemaLimits | None = None) -> Plan:
    """response_format: the reply is constrained to JSON valid against the schema."""
    spec = req.response_format
    schema = (spec.get("json_schema") or {}).get("schema") if spec["type"] == "json_schema" else {"type": "object"}
    schema = schema or {"type": "object"}
    _check_schema(schema, "response_format.json_schema.schema", limits or SchemaLimits())
    # Constraint guarantees the shape; saying so in the prompt lets the model fill it sensibly.
    messages = with_system(messages, f"Reply only with JSON matching this schema: {json.dumps(schema)}")

    from ..tools.constrain import json_grammar

    grammar = json_grammar(schema)

    def post(model, ids, gen):
        from ..tools.constrain import Constraint

        hook = Constraint(model.backend, grammar)
        return model.stream(ids, **gen, logits_hook=hook)

    return Plan(lambda model: model.apply_chat_template(messages), post, grammar=grammar)


def with_system(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n{text}"}] + messages[1:]
    return [{"role": "system", "content": text}] + messages


def _check_schema(schema, param: str, limits: SchemaLimits) -> None:
    if not isinstance(schema, dict):
        raise bad(f"'{param}' must be a JSON schema object.", param, "invalid_schema")
    _check_size(schema, param, limits)
    try:
        import jsonschema

        jsonschema.validators.validator_for(schema).check_schema(schema)
    except ImportError:  # pragma: no cover - jsonschema comes with the tools extra
        return
    except jsonschema.SchemaError as exc:
        raise bad(f"'{param}' is not a valid JSON schema: {exc.message}.", param, "invalid_schema") from None
    except RecursionError:  # $ref cycles and the like; plain nesting is bounded by protocol.MAX_DEPTH
        raise bad(f"'{param}' is too deeply nested or recursive to check; simplify it.", param,
                  "schema_too_complex") from None


def _check_size(schema, param: str, limits: SchemaLimits) -> None:
    """Refuse schemas too big to put in a prompt or to compile quickly, before any work is queued."""
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_bytes:
        raise bad(f"'{param}' is {size} bytes of JSON; this server takes schemas up to {limits.max_bytes} bytes. "
                  "Send a smaller schema.", param, "schema_too_large")
    n_enum, todo = 0, [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("enum"), list):
                n_enum += len(node["enum"])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    if n_enum > limits.max_enum:
        raise bad(f"'{param}' lists {n_enum} enum values; this server takes up to {limits.max_enum}. "
                  "Use fewer choices (or a string with a pattern).", param, "schema_too_large")


# Bounds on the work llguidance may do on a request's grammar (see LLParserLimits):
# a grammar past them fails to compile instead of holding the generation worker.
GRAMMAR_LIMITS = {"max_grammar_size": 50_000, "initial_lexer_fuel": 200_000, "step_lexer_fuel": 100_000,
                  "max_lexer_states": 50_000}


def _compile(backend, grammar: str) -> str | None:
    """Compile a grammar for the backend's tokenizer and compute its first mask; the error, or None."""
    from ..errors import require
    from ..tools.constrain import lltokenizer

    llg = require("llguidance", "tools", "response_format")
    matcher = llg.LLMatcher(lltokenizer(backend), llg.LLMatcher.grammar_from_lark(grammar), log_level=0,
                            limits=llg.LLParserLimits(**GRAMMAR_LIMITS, verbose_errors=False))
    if not matcher.is_error():
        matcher.compute_bitmask()  # a lexer that is costly per token shows here, at the first step
    return matcher.get_error() if matcher.is_error() else None


async def check_grammar(backend, grammar: str, timeout_s: float, param: str) -> None:
    """400 unless the grammar compiles within llguidance's limits and timeout_s, before the request is queued."""
    loop = asyncio.get_running_loop()
    # run_in_executor, not Starlette's threadpool: a timed-out compile is left to finish on its own
    # (bounded by GRAMMAR_LIMITS) instead of holding this request.
    try:
        error = await asyncio.wait_for(loop.run_in_executor(None, _compile, backend, grammar), timeout_s)
    except asyncio.TimeoutError:
        raise bad(f"'{param}' takes over {timeout_s:g} s to compile into a grammar; simplify the schema.",
                  param, "schema_too_complex") from None
    if error:
        raise bad(f"'{param}' cannot be enforced as a grammar: {error.splitlines()[0][:300]}", param,
                  "schema_too_complex")


def tool_plan(req: ParsedChat, messages: list[dict], limits: SchemaLimits | None = None) -> Plan:
    """tools: edge.tools.call retrieves the relevant tools and decodes a schema-valid call (or text)."""
    from ..errors import ToolError
    from ..tools import CallOptions, Registry, call

    for i, t in enumerate(req.tools):
        params = (t.get("function") or {}).get("parameters") if isinstance(t, dict) else None
        if isinstance(params, dict):
            _check_size(params, f"tools[{i}].function.parameters", limits or SchemaLimits())
    try:
        registry = Registry.from_openai(req.tools)
    except ToolError as exc:
        raise bad(f"Invalid 'tools': {exc}", "tools", "invalid_tools") from None
    choice = req.tool_choice
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        if name not in registry:
            raise bad(f"tool_choice names '{name}', which is not among 'tools'.", "tool_choice", "invalid_value")
        registry = Registry([registry[name]])
    query = messages[-1]["content"]
    history = messages[:-1]

    def run(model, sampling, max_tokens: int):
        required = choice not in (None, "auto")  # "required" or one named function
        how = ({"tool_choice": "required" if required else "auto"} if "tool_choice" in CallOptions.__dataclass_fields__
               else {"allow_text": not required})
        opts = CallOptions(parallel=bool(req.raw.get("parallel_tool_calls", True)), max_tokens=max_tokens,
                           temperature=sampling.gen.get("temperature", 0.0), **how)
        res = call(model, query, registry, opts, history=history)
        if res.calls:
            yield json.dumps([c.to_dict() for c in res.calls], ensure_ascii=False)
        else:
            yield res.text or ""

    def parse(text: str, finish: str):
        calls = _calls(text)
        if calls is None:
            return {"role": "assistant", "content": text}, finish
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}), ensure_ascii=False)}}
            for c in calls]}, "tool_calls"

    return Plan(None, run=run, streams_text=False, parse=parse)


def _calls(text: str) -> list[dict] | None:
    """Tool calls in the constrained output (one call object or a list), or None for text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    value = value if isinstance(value, list) else [value]
    if value and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in value):
        return value
    return None
