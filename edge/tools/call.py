"""Make a tool call: retrieve the relevant tools, decode a schema-valid call, run it.

    from edge.tools import Registry, call
    reg = Registry.from_module(my_tools)
    out = call(model, "weather in Paris?", reg, execute=True)
    out.calls[0].name, out.calls[0].arguments, out.answer

The prompt lists only the kept tools; the output is constrained to a call
of one of them (or a list of calls, or plain text when none applies);
arguments are checked again with jsonschema; execution feeds the results
back to the model for a final answer.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

from ..errors import ToolError
from .constrain import Constraint, call_grammar, ground_schema
from .execute import DEFAULT_TIMEOUT_S, ToolCall, run_all, validate
from .retrieval import DEFAULT_K, DEFAULT_MARGIN, DEFAULT_RELEVANCE, DEFAULT_THRESHOLD

CHOICES = ("auto", "required", "none")
_WORD = re.compile(r"[^\W_]{3,}")
_DIGITS = re.compile(r"\d")
_NUMBER = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
                     r"forty|fifty|sixty|hundred|thousand|half|quarter|dozen)\b", re.I)
# Logit added to opening a call over a plain answer when auto leaves the choice to the
# model: below the relevance gate SmolLM2 otherwise answers in text where a call is
# needed. Logit added to argument-value tokens that copy the user's request
# (constrain.Copy), and to closing a copied value where the request's phrase ends
# (constrain.SPAN_END), equal to the copy bias so that bias alone does not carry the
# value on. Chosen on BFCL items; figures in docs/experiments.md, "tools: call biases".
DEFAULT_CALL_BIAS = 3.0
DEFAULT_COPY_BIAS = 2.0
DEFAULT_END_BIAS = DEFAULT_COPY_BIAS
# Retrieval similarity (cosine) over which the name prior takes off `name_bias`.
SIMILARITY_STEP = 0.1
# How the error of a call refused before it ran begins.
NOT_RUN = "not run: "

SYSTEM = (
    "You are a function-calling assistant. Available tools:\n{tools}\n"
    'To use a tool, reply only with JSON: {{"name": "<tool>", "arguments": {{...}}}}; '
    "for several calls, a JSON list of them. Take argument values from the user's request. "
    "If no tool fits the request, reply in plain text."
)
# The final answer is asked in a fresh conversation without the tool list: shown the
# tools and its own call, a small model repeats the call instead of answering. Results
# as "Context" before the question are what SmolLM2 quotes from (docs/experiments.md).
ANSWER_SYSTEM = "You are a helpful AI assistant."
ANSWER = "Context:\n{results}\n\nQuestion: {query}\nAnswer in one short sentence from the context."
RETRY = "That did not work: {error}. Reply with a corrected call."

@dataclass
class CallOptions:
    """How `call` picks tools and decodes."""

    top_k: int = field(default=DEFAULT_K, metadata={"help": "Tools kept for the prompt (plus any above the threshold)."})
    threshold: float | None = field(default=DEFAULT_THRESHOLD, metadata={"help": "Also keep tools at least this similar to the query (None: only top-k)."})
    margin: float | None = field(default=DEFAULT_MARGIN, metadata={"help": "Of the top-k, keep only tools scoring within this of the best (None: all top-k)."})
    retrieve: bool = field(default=True, metadata={"help": "Shrink the prompt to the retrieved tools; False keeps all."})
    parallel: bool = field(default=True, metadata={"help": "Allow a JSON list of several calls."})
    tool_choice: str = field(default="auto", metadata={"help": "auto: call when the best tool is similar enough to the query (relevance), else let the model choose; required: always call; none: never call."})
    relevance: float = field(default=DEFAULT_RELEVANCE, metadata={"help": "Similarity of the best tool above which auto forces a call."})
    call_bias: float = field(default=DEFAULT_CALL_BIAS, metadata={"help": "Logit added to opening a call over a plain answer when auto leaves the choice to the model."})
    copy_bias: float = field(default=DEFAULT_COPY_BIAS, metadata={"help": "Logit added to argument-value tokens that copy the user's request (0: off)."})
    end_bias: float = field(default=DEFAULT_END_BIAS, metadata={"help": "Logit added to closing a copied value where the request's phrase ends (before \"in\", \"as\", \"?\", ...; 0: off)."})
    max_tokens: int = field(default=256, metadata={"help": "Token budget of the call."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the call (0: greedy)."})
    execute: bool = field(default=False, metadata={"help": "Run the call and generate a final answer."})
    timeout: float = field(default=DEFAULT_TIMEOUT_S, metadata={"help": "Seconds each tool may run."})
    answer_tokens: int = field(default=128, metadata={"help": "Token budget of the final answer."})
    retries: int = field(default=1, metadata={"help": "With execute: tries after a malformed call or a tool error, with the error as feedback."})
    ground_numbers: bool = field(default=False, metadata={"help": "Drop kept tools with a required number parameter when the request holds no number (digits or number words), unless that drops them all."})
    ground_strings: bool = field(default=False, metadata={"help": "Treat a required free-text argument with no word of the request as an invalid call (it was copied from the schema or made up), so it is retried."})
    guard: object = field(default=None, metadata={"help": "Guard that screens each tool result before the answer sees it (default: the model's own, if it has one)."})
    order_bias: float = field(default=0.0, metadata={"help": "Logit added, at the start of an argument value, to the nearest word of the request after the call's previous value (arguments said in order; 0: off; needs copy_bias)."})
    name_bias: float = field(default=0.0, metadata={"help": "Prior of the retrieval ranking over the tool name: logit taken off a tool's name, while the call is written, per 0.1 of similarity below the best kept tool (0: off)."})
    copy_spans: bool = field(default=False, metadata={"help": "A required free-text argument may only be a run of whole words of the request (that fits its pattern), when one fits."})
    ground_enums: bool = field(default=False, metadata={"help": "A required enum argument may only take the values the request names, when it names any; tools with a required enum the request names no value of are dropped, unless that drops them all."})
    ground_defaults: bool = field(default=True, metadata={"help": "Drop an optional string argument that has a schema default when none of its words is in the request, so the tool's default applies."})


@dataclass
class CallResult:
    """What `call` did: kept tools, the call(s) or text, and the figures."""

    query: str
    kept: list[tuple[str, float | None]]
    calls: list[ToolCall] = field(default_factory=list)
    text: str | None = None
    raw: str = ""
    prompt_tokens: int = 0
    prompt_tokens_all: int = 0
    completion_tokens: int = 0
    retrieval_s: float = 0.0
    call_s: float = 0.0
    answer: str | None = None
    errors: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # the problem that caused each retry
    avoid: dict = field(default_factory=dict)  # tool -> argument -> values a failed try gave (not offered again)
    failed: set = field(default_factory=set)  # tools whose call failed on a try (last in the name prior)
    grounded: bool | None = None  # True: the model's answer, held to state every result; False: a template
    answer_s: float = 0.0

    @property
    def valid(self) -> bool:
        """True when every call names a kept tool with schema-valid arguments."""
        return not self.errors

    @property
    def tokens_saved(self) -> int:
        return self.prompt_tokens_all - self.prompt_tokens

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "tools": [{"name": n, "score": None if s is None else round(s, 4)} for n, s in self.kept],
            "calls": [c.to_dict() for c in self.calls],
            "text": self.text, "answer": self.answer, "valid": self.valid, "errors": self.errors,
            "retried": self.retried, "grounded": self.grounded,
            "prompt_tokens": self.prompt_tokens, "prompt_tokens_all_tools": self.prompt_tokens_all,
            "tokens_saved": self.tokens_saved, "completion_tokens": self.completion_tokens,
            "retrieval_ms": round(self.retrieval_s * 1000, 2), "call_s": round(self.call_s, 3),
        }


def tools_prompt(tools) -> str:
    return "\n".join(json.dumps(t.spec(), ensure_ascii=False, separators=(",", ":")) for t in tools)


def messages_for(query: str, tools, history: list[dict] | None = None) -> list[dict]:
    system = {"role": "system", "content": SYSTEM.format(tools=tools_prompt(tools))}
    return [system] + list(history or []) + [{"role": "user", "content": query}]


def prompt_tokens(model, query: str, tools, history=None) -> int:
    return len(model.tokenize(model.apply_chat_template(messages_for(query, tools, history))))


def parse(raw: str) -> tuple[list[dict] | None, str | None]:
    """(calls, text): calls when the output is JSON, else the plain-text answer."""
    s = raw.strip()
    if not s or s[0] not in "[{":
        return None, s
    data = json.loads(s)
    items = data if isinstance(data, list) else [data]
    return [i for i in items if isinstance(i, dict)], None


def grounded(tool, arguments: dict, request: str) -> dict:
    """`arguments` less the optional string values the request never mentions that the schema has a default for.

    A small model fills optional parameters it was not asked about, often
    with the first enum value ("celsius" when the user wrote "in fahr"); the
    default the tool's author declared is the better guess. A value counts as
    mentioned when one of its words (3+ letters or digits) is a word of the
    request, case-insensitively.
    """
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    props = params.get("properties") or {}
    required = set(params.get("required") or [])
    said = {w.lower() for w in _WORD.findall(request)}
    out = {}
    for k, v in arguments.items():
        spec = props.get(k) if isinstance(props.get(k), dict) else {}
        if (k not in required and "default" in spec and isinstance(v, str) and v != spec["default"]
                and not {w.lower() for w in _WORD.findall(v)} & said):
            continue
        out[k] = v
    return out


def without_numbers(query: str, kept: list, registry) -> list:
    """`kept` less the tools that do not fit the numbers of `query`.

    Without a number in the request, tools with a required number parameter go:
    a small model fills a number it was not given ("what timers do I have?" ->
    set_timer(minutes=10)). With a number (digits), tools that take no
    arguments go: they cannot use what the user gave ("what is 17 times 25" ->
    get_time()). Nothing is dropped when it would drop every tool.
    """
    if not _NUMBER.search(query):
        return [(n, sc) for n, sc in kept if not _needs_number(registry[n])] or kept
    if _DIGITS.search(query):
        return [(n, sc) for n, sc in kept if _properties(registry[n])] or kept
    return kept


def without_unnamed_enums(query: str, kept: list, registry) -> list:
    """`kept` less the tools with a required enum argument none of whose values `query` names.

    The user picks such a value ("km", "celsius"); a request that names none is
    not for that tool ("what is 12 times 7" -> convert_units). Nothing is
    dropped when it would drop every tool.
    """
    from .constrain import _said

    def fits(tool) -> bool:
        params = tool.parameters if isinstance(tool.parameters, dict) else {}
        props = _properties(tool)
        for k in params.get("required") or []:
            values = props.get(k, {}).get("enum") if isinstance(props.get(k), dict) else None
            if (isinstance(values, list) and values and all(isinstance(v, str) for v in values)
                    and not any(_said(v, query) for v in values)):
                return False
        return True

    return [(n, sc) for n, sc in kept if fits(registry[n])] or kept


def _properties(tool) -> dict:
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    props = params.get("properties")
    return props if isinstance(props, dict) else {}


def _needs_number(tool) -> bool:
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    props = params.get("properties") or {}
    return any(isinstance(props.get(k), dict) and props[k].get("type") in ("integer", "number")
               for k in params.get("required") or [])


_COMMON = frozenset("the and for with you your user users from this that what which are was were has have had "
                    "not but all any can its it's his her their them they our out one".split())


def _content_words(text: str) -> set[str]:
    return {w for w in (x.lower() for x in _WORD.findall(text)) if w not in _COMMON} | set(re.findall(r"\d+", text))


def ungrounded(tool, arguments: dict, request: str) -> list[str]:
    """Required free-text arguments (no enum, pattern or const) most of whose words are not in the request.

    A small model fills them from the schema's own description ("The note, in the
    user's words.") or from memory; such a call is not what the user asked for.
    """
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    props = params.get("properties") or {}
    said = _content_words(request)
    out = []
    for k in params.get("required") or []:
        v, spec = arguments.get(k), props.get(k) if isinstance(props.get(k), dict) else {}
        if not isinstance(v, str) or "enum" in spec or "pattern" in spec or "const" in spec:
            continue
        words = _content_words(v)
        if not v.strip() or words and 2 * len(words & said) <= len(words):
            out.append(f"{k}: {v[:60]!r} is not from the request; copy the words the user wrote")
    return out


def name_prior(kept: list, bias: float, failed: set[str] = frozenset()) -> dict[str, float]:
    """Tool name -> logit for the call's name: `bias` off per SIMILARITY_STEP of retrieval
    similarity below the best kept tool, so a near tie leaves the choice to the model; the
    tools whose call `failed` on this request go `bias` below the rest (nothing when the
    tools were not ranked)."""
    if not bias or len(kept) < 2 or any(sc is None for _, sc in kept):
        return {}
    live = [(n, sc) for n, sc in kept if n not in failed]
    best = max((sc for _, sc in live), default=0.0)
    out = {n: bias * (sc - best) / SIMILARITY_STEP for n, sc in live}
    low = min(out.values(), default=0.0) - bias
    out.update({n: low for n, _ in kept if n in failed})
    return out


def repeated(tool, arguments: dict) -> list[tuple[str, str]]:
    """(argument, problem) for each required free-text argument whose value a later one repeats.

    The user says each thing once: a reminder's text and time that are both
    "10 minutes" mean the text is missing. The earlier argument is the one to redo.
    """
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    props = params.get("properties") or {}
    keys = [k for k in params.get("required") or [] if isinstance(arguments.get(k), str)
            and isinstance(props.get(k), dict) and not any(x in props[k] for x in ("enum", "const", "format"))]
    out = []
    for i, k in enumerate(keys):
        later = next((k2 for k2 in keys[i + 1:] if arguments[k2].strip().lower() == arguments[k].strip().lower()), None)
        if later is not None and arguments[k].strip():
            out.append((k, f"{k} repeats {later} ({arguments[k][:40]!r}); give each its own words from the request"))
    return out


def _exhausted(tool, query: str, avoid: dict) -> bool:
    """True when an argument has no phrase of the request left to offer but the ones a failed try gave."""
    params = ground_schema(tool.parameters, query, True, False, avoid)
    props = params.get("properties") or {} if isinstance(params, dict) else {}
    return any(set((props.get(k) or {}).get("enum") or ()) & set(values) for k, values in avoid.items())


def fitting(query: str, registry, o: CallOptions) -> set[str] | None:
    """Names of the tools that fit `query` (ground_numbers, ground_enums), or None when no filter is on."""
    if not (o.ground_numbers or o.ground_enums):
        return None
    kept = [(t.name, None) for t in registry]
    if o.ground_numbers:
        kept = without_numbers(query, kept, registry)
    if o.ground_enums:
        kept = without_unnamed_enums(query, kept, registry)
    return {n for n, _ in kept}


def select(query: str, registry, o: CallOptions) -> list[tuple[str, float | None]]:
    """(name, similarity or None) of the tools the prompt will list, best first.

    The tools that do not fit the request (`fitting`) are left out before the
    top-k is taken, so a better-fitting tool further down the ranking takes their place.
    """
    only = fitting(query, registry, o)
    if o.retrieve and (len(registry) > o.top_k or (o.margin is not None and len(registry) > 1)):
        return registry.retriever.search(query, k=o.top_k, threshold=o.threshold, margin=o.margin, only=only)
    if o.tool_choice == "auto":
        # Scores of every tool, for the relevance gate.
        return registry.retriever.search(query, k=len(registry), threshold=None, only=only)
    return [(t.name, None) for t in registry if only is None or t.name in only]


def call(model, query: str, registry, options: CallOptions | None = None, history: list[dict] | None = None,
         on_text: Callable[[str], None] | None = None, answer_history: list[dict] | None = None,
         **overrides) -> CallResult:
    """Pick tools for `query`, decode a constrained call with `model`, optionally run it and answer.

    With execution, a malformed call or a tool error is tried once more with the
    error as feedback, then reported plainly; `on_text` receives the answer as
    it streams; `answer_history` (default: `history`) is the conversation the
    answer sees.
    """
    o = options or CallOptions()
    for k, v in overrides.items():
        if not hasattr(o, k):
            raise ToolError(f"Unknown call option '{k}'.", f"Valid options: {', '.join(o.__dataclass_fields__)}.")
        setattr(o, k, v)
    if not str(query).strip():
        raise ToolError("The query is empty.", "Pass what you want done, e.g. \"weather in Paris\".")
    if len(registry) == 0:
        raise ToolError("No tools are registered.", "Pass --tools with a .json or .py file of tools.")

    if o.tool_choice not in CHOICES:
        raise ToolError(f"Unknown tool_choice '{o.tool_choice}'.", f"Choose one of: {', '.join(CHOICES)}.")

    t0 = time.perf_counter()
    kept = select(query, registry, o)
    t_ret = time.perf_counter() - t0
    tools = registry.subset(n for n, _ in kept)
    if o.tool_choice == "none":
        force, tools = False, []
    elif o.tool_choice == "required":
        force = True
    else:
        force = kept[0][1] is not None and kept[0][1] >= o.relevance
    res = CallResult(query=query, kept=kept, retrieval_s=t_ret)

    msgs = messages_for(query, tools, history)
    # The guard screens the conversation and the request; the system prompt (tool
    # definitions) and retry feedback are ours, and a tool schema reads like an injection.
    user = msgs[1:]
    res.prompt_tokens = len(model.tokenize(model.apply_chat_template(msgs)))
    res.prompt_tokens_all = (prompt_tokens(model, query, list(registry), history)
                             if len(tools) < len(registry) else res.prompt_tokens)
    feedback: list[dict] = []
    attempts = 1 + (max(0, o.retries) if o.execute else 0)
    for attempt in range(attempts):
        problem = _decode(model, res, registry, tools, msgs + feedback, user, force, o)
        if problem is None and o.execute and res.calls:
            run_all(registry, res.calls, o.timeout)
            problem = "; ".join(f"{c.name}: {c.error}" for c in res.calls if c.error is not None) or None
        if problem is None or attempt == attempts - 1:
            break
        # One more try with the error as feedback: a small model often fixes a call it is told about.
        res.retried.append(problem)
        # A tool that ran and failed is less likely the right one; a call refused before it
        # ran (bad or ungrounded arguments) is the arguments' fault, which the retry fixes.
        res.failed.update(c.name for c in res.calls if c.error is not None and not c.error.startswith(NOT_RUN))
        res.failed.update(n for n in res.avoid if n in registry and o.copy_spans and _exhausted(registry[n], query, res.avoid[n]))
        feedback = [{"role": "assistant", "content": res.raw}, {"role": "user", "content": RETRY.format(error=problem)}]
    if o.execute:
        _execute(model, res, registry, (answer_history if answer_history is not None else msgs[1:-1]), o, on_text)
    return res


def _decode(model, res: CallResult, registry, tools, msgs: list[dict], user: list[dict], force: bool,
            o: CallOptions) -> str | None:
    """Decode one constrained call into `res`; None when it is well-formed and valid, else what is wrong.

    Without execution a call that is not JSON raises (the caller sees the error);
    with execution it is returned, for one retry and then a plain report.
    """
    query = res.query
    if o.copy_spans or o.ground_enums:
        # Only the grammar sees the narrowed schemas; validation keeps the tools' own.
        tools = [SimpleNamespace(name=t.name, parameters=ground_schema(t.parameters, query, o.copy_spans,
                                                                      o.ground_enums, res.avoid.get(t.name)))
                 for t in tools]
    hook = Constraint.for_tools(model.backend, tools, parallel=o.parallel, text=not force, call_bias=o.call_bias,
                                request=query, copy_bias=o.copy_bias, budget=o.max_tokens, end_bias=o.end_bias,
                                names=name_prior(res.kept, o.name_bias, res.failed), order_bias=o.order_bias)
    t1 = time.perf_counter()
    res.raw = model.chat(msgs, max_tokens=o.max_tokens, temperature=o.temperature, logits_hook=hook, screen_only=user)
    res.call_s += time.perf_counter() - t1
    stats = model.stats
    res.completion_tokens += stats.completion_tokens
    res.calls, res.errors, res.text = [], [], None
    try:
        calls, res.text = parse(res.raw)
    except json.JSONDecodeError:
        if stats.finish_reason == "length":
            err = ToolError(f"The model did not finish a valid call within {o.max_tokens} tokens.",
                            "Raise --max-tokens, or keep fewer tools with --top-k.")
        else:
            err = ToolError(f"The model's call is not valid JSON: {res.raw[:80]!r}.",
                            "Report this as a bug with the tools you used.")
        if not o.execute:
            raise err from None
        res.errors.append(err.message)
        return res.errors[-1]
    kept_names = {t.name for t in tools}
    # The constraint closes a list at the first repeated call; the repeat itself goes.
    calls = [c for i, c in enumerate(calls or []) if c not in calls[:i]]
    for c in calls:
        tc = ToolCall(str(c.get("name")), c.get("arguments") if isinstance(c.get("arguments"), dict) else {})
        if o.ground_defaults and tc.name in kept_names and isinstance(c.get("arguments"), dict):
            tc.arguments = c["arguments"] = grounded(registry[tc.name], tc.arguments, query)
        if tc.name not in kept_names:
            res.errors.append(f"{tc.name}: not one of the offered tools")
        else:
            res.errors.extend(f"{tc.name}: {e}" for e in validate(registry[tc.name], c.get("arguments")))
            if o.ground_strings:
                res.errors.extend(f"{tc.name}: {e}" for e in ungrounded(registry[tc.name], tc.arguments, query))
                for k, e in repeated(registry[tc.name], tc.arguments):
                    res.errors.append(f"{tc.name}: {e}")
                    res.avoid.setdefault(tc.name, {}).setdefault(k, set()).add(tc.arguments[k])
        res.calls.append(tc)
    if res.errors:
        # Never run a call that failed validation; say why instead.
        for c in res.calls:
            c.error = NOT_RUN + "; ".join(res.errors)
        return "; ".join(res.errors)
    return None


def _execute(model, res: CallResult, registry, history: list[dict], o: CallOptions, on_text=None) -> None:
    """The final answer: the model's grounded answer to the results, a template, or a plain report."""
    from .answer import respond

    emit = on_text or (lambda s: None)
    if not res.calls:
        if res.errors:  # no call came out of the retries: say so plainly
            res.answer = f"I could not make a valid tool call: {res.errors[-1]}"
            res.grounded = False
        else:
            res.answer = res.text
        emit(res.answer or "")
        return
    follow, _ = answer_prompt(model, res.query, res.calls, history, registry, guard=o.guard)
    t0 = time.perf_counter()
    res.answer, res.grounded = respond(model, follow, res.calls, registry, o.answer_tokens, o.temperature, emit)
    res.answer_s = time.perf_counter() - t0


def answer_prompt(model, query: str, calls: list[ToolCall], history: list[dict] = (),
                  registry=None, guard=None) -> tuple[list[dict], Constraint]:
    """Messages and logits hook that ask for the answer once `calls` have run.

    Each result passes the prompt guard first (indirect prompt injection); the
    hook holds decoding to plain text, so the answer cannot be another call.
    """
    lines = "\n".join(_context_line(model, c, registry, guard) for c in calls)
    msgs = [{"role": "system", "content": ANSWER_SYSTEM}, *history,
            {"role": "user", "content": ANSWER.format(query=query, results=lines)}]
    return msgs, Constraint(model.backend, call_grammar([], text=True))


def _context_line(model, c: ToolCall, registry=None, guard=None) -> str:
    """One result for the answer prompt: the tool's template sentence when it has one
    ("12 * 7 = 84."), else a bare value with the call that made it."""
    tool = registry[c.name] if registry is not None and c.name in registry else None
    if c.error is None and getattr(tool, "template", None) is not None:
        from .answer import template

        return _screened(model, template(tool, c), guard)
    text = _screened(model, c.result_text(), guard)
    if isinstance(c.result, str) and c.error is None:
        return text
    return f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)}) returned {text}"


def _screened(model, text: str, guard=None) -> str:
    """A tool result as the model may see it: withheld when the guard flags it (indirect injection)."""
    if guard is not None:
        from ..guard import screen_messages

        verdict = screen_messages(guard, [{"role": "tool", "content": text}])
    else:
        screen = getattr(model, "screen", None)
        verdict = screen(text) if screen is not None else None
    if verdict is not None and verdict.unsafe:
        return f"[result withheld: the prompt guard flagged it as {verdict.category}]"
    return text
