"""The answer after tool calls: it states what the tools returned.

A small model shown a result still answers from memory ("12 * 7 = 78" next to
a result of 84). So the answer is decoded under a grammar that makes it
contain each result's stated text, copied whole (`stated`), with free words
before and after that hold no other digits, which could contradict it. Where
the model is not trusted, the answer is a template built from the call and its
result instead: a failed call (reported plainly), a result with nothing short
to state (lists, records), or an answer that did not reach the result within
its token budget.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from .execute import ToolCall, clip

# A stated text longer than this is not forced into the answer; the template answers.
MAX_STATED = 120
# Free characters the model may write before and after each stated text: a short
# sentence around the result, not room to wander off.
PREFIX_CHARS = 48
SUFFIX_CHARS = 32
SENTENCE_PREFIX_CHARS = 24
# Keys of a dict result that hold its main value, in order of preference.
VALUE_KEYS = ("result", "value", "answer")


def _number(x: Any) -> str | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return json.dumps(int(x) if x.is_integer() and abs(x) < 1e15 else x)
    return None


def stated(tool, call: ToolCall) -> str | None:
    """The text an answer to `call` must contain, or None when it has none (then the template answers).

    The tool's own `states` hook decides when it has one, else its template
    sentence; otherwise a number is its text, a short one-line string itself,
    and a dict its "result", "value" or "answer" entry.
    """
    if call.error is not None:
        return None
    hook = getattr(tool, "states", None)
    if hook is not None:
        text = hook(call.arguments, call.result)
    else:
        value = call.result
        if isinstance(value, dict):
            value = next((value[k] for k in VALUE_KEYS if k in value), None)
        text = value if isinstance(value, str) else _number(value)
        sentence = getattr(tool, "template", None)
        if isinstance(text, str) and sentence is not None:
            # A single value is stated in the tool's own sentence, whole: a bare number leaves
            # a small model free to misplace it ("6.2 km to miles" for 10 km).
            try:
                text = str(sentence(call.arguments, call.result)).rstrip(".")
            except Exception:  # noqa: BLE001 - no sentence: the value alone
                pass
    if not isinstance(text, str):
        return None
    text = text.strip()
    return text if text and len(text) <= MAX_STATED and "\n" not in text else None


def template(tool, call: ToolCall) -> str:
    """A plain one-sentence answer built from the call and its result (or its error)."""
    if call.error is not None:
        hint = f" {call.hint}" if getattr(call, "hint", None) else ""
        return f"I could not run {call.name}: {clip(call.error, 300)}{hint}"
    hook = getattr(tool, "template", None)
    if hook is not None:
        try:
            return clip(str(hook(call.arguments, call.result)), 1000)
        except Exception:  # noqa: BLE001 - a template must never end the turn
            pass
    text = stated(tool, call) or call.result_text()
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items())
    return clip(f"{call.name}({args}) returned {text}.", 1000)


def _literal(text: str) -> str:
    """`text` as a regex that matches it exactly (every non-alphanumeric character as \\x{..})."""
    return "".join(c if c.isascii() and (c.isalnum() or c == " ") else "\\x{%x}" % ord(c) for c in text)


def answer_grammar(values: list[str], prefix: int = PREFIX_CHARS, suffix: int = SUFFIX_CHARS) -> str:
    """Lark grammar of a one-line answer holding each of `values`, in order.

    Around them go up to `prefix` / `suffix` characters of free text with no digits
    (a number beside the result could contradict it) and no line break; the
    answer starts with neither a blank nor JSON.
    """
    free = "[^0-9\\n]"
    # Free words before a result end in a blank, so the result is not glued to a word.
    parts = [f"([^0-9\\s\\[{{]{free}{{0,{prefix - 2}}} )?"]
    for i, v in enumerate(values):
        if i:
            parts.append(f"( {free}{{0,{prefix - 2}}} |, )")
        parts.append(_literal(v))
    parts.append(f"[^0-9\\n.!?]{{0,{suffix}}}[.!]?")
    return "start: /" + "".join(parts) + "/"


def respond(model, messages: list[dict], calls: list[ToolCall], registry, max_tokens: int, temperature: float,
            on_text: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """(answer, from_model): the grounded model answer, or the template where the model is not trusted."""
    from .constrain import Constraint

    emit = on_text or (lambda s: None)
    tools = [registry[c.name] if c.name in registry else None for c in calls]
    values = [stated(t, c) for t, c in zip(tools, calls)]
    templates = [template(t, c) for t, c in zip(tools, calls)]
    if any(v is None for v in values):
        text = " ".join(templates)
        emit(text)
        return text, False
    # A result stated as the tool's whole sentence needs only a short lead-in and no tail.
    sentences = all(t is not None and getattr(t, "states", None) is None and getattr(t, "template", None) is not None
                    for t in tools)
    grammar = answer_grammar(values, SENTENCE_PREFIX_CHARS, 0) if sentences else answer_grammar(values)
    hook = Constraint(model.backend, grammar)
    pieces = []
    # The request was screened with the call and each result before it went in; the rest is ours.
    for piece in model.stream_chat(messages, max_tokens=max_tokens, temperature=temperature, logits_hook=hook,
                                   screen_only=[]):
        pieces.append(piece)
        emit(piece)
    text = "".join(pieces).strip()
    if not _states_all(text, values):
        # The budget ended before every result was given: say them plainly after what was said.
        tail = " ".join(templates)
        emit(" " + tail if text else tail)
        return (text + " " + tail).strip(), False
    return text, True


def _states_all(text: str, values: list[str]) -> bool:
    pos = 0
    for v in values:
        pos = text.find(v, pos)
        if pos < 0:
            return False
        pos += len(v)
    return True
