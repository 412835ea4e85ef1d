"""Run validated tool calls: registered tools only, each with a timeout.

A tool that raises or runs past its timeout gives an error result instead
of ending the conversation; the model sees the error and answers anyway.
A timed-out tool keeps running in a daemon thread (Python cannot kill a
thread), so tools that may hang should bound their own work first (the
assistant's calculator refuses oversized operands before computing).
Results are made safe to print whatever they hold (`bounded`, `clip`).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import EdgeError, ToolError

DEFAULT_TIMEOUT_S = 10.0
# A result is cut to this many characters before it reaches a prompt, a terminal or JSON.
MAX_RESULT_CHARS = 2000
# Integers longer than this many digits are shown in scientific notation (Python refuses
# to print ints over 4300 digits by default).
MAX_INT_DIGITS = 1000


@dataclass
class ToolCall:
    """One call the model made, and what running it gave."""

    name: str = field(metadata={"help": "Tool name."})
    arguments: dict = field(default_factory=dict, metadata={"help": "Arguments, validated against the tool schema."})
    result: Any = field(default=None, metadata={"help": "What the tool returned (after --execute)."})
    error: str | None = field(default=None, metadata={"help": "Why the call failed, if it did."})
    hint: str | None = field(default=None, metadata={"help": "What the tool says to do about its error, if anything."})
    seconds: float = field(default=0.0, metadata={"help": "Time the tool ran."})

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        out = {"name": self.name, "arguments": self.arguments}
        if self.result is not None or self.error is not None:
            out.update(result=self.result, error=self.error, seconds=round(self.seconds, 4))
            if self.hint:
                out["hint"] = self.hint
        return out

    def result_text(self) -> str:
        """The result (or error) as text, safe for any value and cut to MAX_RESULT_CHARS."""
        if self.error is not None:
            return clip(f"error: {self.error}")
        if isinstance(self.result, str):
            return clip(self.result)
        try:
            return clip(json.dumps(bounded(self.result), ensure_ascii=False, default=str))
        except (TypeError, ValueError, RecursionError):
            return clip(_repr(self.result))


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a tool's odd object must not end the conversation
        return f"<{type(value).__name__}>"


def _int_text(n: int) -> str:
    """A huge int as '1.234567e+6000' (its decimal form would take seconds, or be refused)."""
    import math

    exp = math.floor(math.log10(abs(n)))
    lead = n // 10 ** max(exp - 7, 0) if exp < 50_000 else None
    if lead is None:
        return f"a {exp + 1}-digit number"
    digits = str(abs(lead))
    return f"{'-' if n < 0 else ''}{digits[0]}.{digits[1:7]}e+{exp}"


def bounded(value: Any, depth: int = 0) -> Any:
    """`value` made safe to keep and print: huge ints as text, long strings and lists cut."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= MAX_INT_DIGITS * 3.32 else _int_text(value)
    if isinstance(value, str):
        return clip(value)
    if depth > 20:
        return clip(_repr(value))
    if isinstance(value, dict):
        return {str(k): bounded(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, (list, tuple)):
        items = [bounded(v, depth + 1) for v in list(value)[:100]]
        return items + ([f"... {len(value) - 100} more"] if len(value) > 100 else [])
    return clip(_repr(value))


def validate(tool, arguments: Any) -> list[str]:
    """Schema errors of `arguments` for `tool` (empty when valid)."""
    from jsonschema import Draft202012Validator

    if not isinstance(arguments, dict):
        return [f"arguments must be an object, got {type(arguments).__name__}"]
    v = Draft202012Validator(tool.parameters)
    return [f"{'/'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in v.iter_errors(arguments)]


def run(registry, call: ToolCall, timeout: float = DEFAULT_TIMEOUT_S) -> ToolCall:
    """Run one call in place: fills result or error (never raises for tool failures)."""
    if call.name not in registry:
        call.error = f"no tool named '{call.name}'"
        return call
    tool = registry[call.name]
    if tool.fn is None:
        call.error = f"tool '{call.name}' has no Python function to run"
        return call
    errors = validate(tool, call.arguments)
    if errors:
        call.error = "invalid arguments: " + "; ".join(errors)
        return call
    box: dict = {}

    def target():
        try:
            box["value"] = tool.fn(**call.arguments)
        except BaseException as exc:  # the tool's failure becomes the model's input
            if isinstance(exc, EdgeError):
                # The hint goes to the user, not back to the model: a small model retrying
                # copies its example ("Write it like '12 * 7'") instead of the request.
                box["error"], box["hint"] = f"{type(exc).__name__}: {exc.message}", exc.hint
            else:
                box["error"] = f"{type(exc).__name__}: {exc}"

    t0 = time.perf_counter()
    worker = threading.Thread(target=target, name=f"tool-{call.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    call.seconds = time.perf_counter() - t0
    if worker.is_alive():
        call.error = f"timed out after {timeout:g} s"
    elif "error" in box:
        call.error, call.hint = box["error"], box.get("hint")
    else:
        call.result = bounded(box.get("value"))
    return call


def run_all(registry, calls: list[ToolCall], timeout: float = DEFAULT_TIMEOUT_S) -> list[ToolCall]:
    if timeout <= 0:
        raise ToolError(f"The tool timeout must be positive (got {timeout}).", "Pass a timeout in seconds, e.g. 10.")
    return [run(registry, c, timeout) for c in calls]
