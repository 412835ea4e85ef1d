"""Run validated tool calls: registered tools only, each with a timeout.

A tool that raises or runs past its timeout gives an error result instead
of ending the conversation; the model sees the error and answers anyway.
A timed-out tool keeps running in a daemon thread (Python cannot kill a
thread), so tools that may hang should be written to stop by themselves.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolError

DEFAULT_TIMEOUT_S = 10.0


@dataclass
class ToolCall:
    """One call the model made, and what running it gave."""

    name: str = field(metadata={"help": "Tool name."})
    arguments: dict = field(default_factory=dict, metadata={"help": "Arguments, validated against the tool schema."})
    result: Any = field(default=None, metadata={"help": "What the tool returned (after --execute)."})
    error: str | None = field(default=None, metadata={"help": "Why the call failed, if it did."})
    seconds: float = field(default=0.0, metadata={"help": "Time the tool ran."})

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        out = {"name": self.name, "arguments": self.arguments}
        if self.result is not None or self.error is not None:
            out.update(result=self.result, error=self.error, seconds=round(self.seconds, 4))
        return out

    def result_text(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        if isinstance(self.result, str):
            return self.result
        return json.dumps(self.result, ensure_ascii=False, default=str)


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
            box["error"] = f"{type(exc).__name__}: {exc}"

    t0 = time.perf_counter()
    worker = threading.Thread(target=target, name=f"tool-{call.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    call.seconds = time.perf_counter() - t0
    if worker.is_alive():
        call.error = f"timed out after {timeout:g} s"
    elif "error" in box:
        call.error = box["error"]
    else:
        call.result = box.get("value")
    return call


def run_all(registry, calls: list[ToolCall], timeout: float = DEFAULT_TIMEOUT_S) -> list[ToolCall]:
    if timeout <= 0:
        raise ToolError(f"The tool timeout must be positive (got {timeout}).", "Pass a timeout in seconds, e.g. 10.")
    return [run(registry, c, timeout) for c in calls]
