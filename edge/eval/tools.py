"""`edge eval tools`: the assistant's tool calls and answers on requests with known results.

A built-in set of assistant requests (arithmetic, unit conversion, time and
date, timers and reminders, notes), each with the tool it needs and a check of
the call. Every request runs through the assistant (guard off, data in a
temporary folder) on each backend, and the report gives per backend:
call accuracy (the right tool, and the arguments or result the request implies),
answer-states-result (the answer contains what the call returned; a call to the
wrong tool that ran still counts, so "both" gives the share with the right call
and its result stated), the share of
answers that state the expected value, and the share the model wrote itself
(the rest are templates: failed calls, lists, unfinished answers).
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InvalidOption

# km -> mi and the like, written out here so the expected values do not come from the tool itself.
_FACTORS = {("km", "mi"): 1 / 1.609344, ("mi", "km"): 1.609344, ("kg", "lb"): 1 / 0.45359237,
            ("lb", "kg"): 0.45359237, ("l", "gal"): 1 / 3.785411784, ("m", "ft"): 1 / 0.3048,
            ("in", "cm"): 2.54, ("h", "min"): 60.0}
_UNIT_WORDS = {"km": "km", "mi": "miles", "kg": "kg", "lb": "pounds", "l": "liters", "gal": "gallons", "m": "meters",
               "ft": "feet", "in": "inches", "cm": "cm", "h": "hours", "min": "minutes"}


def _named(unit: str) -> tuple:
    """A unit as a call may name it: its symbol, or the word the request used (either number)."""
    word = _UNIT_WORDS[unit]
    return (unit, word, {"feet": "foot"}.get(word, word[:-1] if word.endswith("s") else word))


@dataclass
class Case:
    """One request, the tool it needs and how to check the call."""

    request: str
    tool: str
    kind: str
    result: Any = None                                   # expected result (numbers compared to 1e-6 relative)
    arguments: dict = field(default_factory=dict)        # expected argument values (numbers by value, text contained;
                                                         # a tuple of texts: any of them)

    def expected_text(self) -> str | None:
        """The value a correct answer states, when the request fixes one."""
        if isinstance(self.result, (int, float)) and not isinstance(self.result, bool):
            r = self.result
            return str(int(r)) if float(r).is_integer() else None
        return None


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def cases() -> list[Case]:
    """The built-in set: 104 requests."""
    out: list[Case] = []
    pairs = [(12, 7), (17, 25), (9, 8), (144, 12), (23, 4), (15, 15), (250, 4), (81, 9), (36, 6), (1000, 8)]
    for a, b in pairs:
        out.append(Case(f"what is {a} times {b}", "calculate", "arithmetic", a * b))
        out.append(Case(f"what is {a} plus {b}", "calculate", "arithmetic", a + b))
        out.append(Case(f"what is {a} minus {b}", "calculate", "arithmetic", a - b))
    for a, b in [(144, 12), (81, 9), (1000, 8), (250, 4), (36, 6)]:
        out.append(Case(f"what is {a} divided by {b}", "calculate", "arithmetic", a / b))
    for n in (16, 81, 144, 625, 49):
        out.append(Case(f"what is the square root of {n}", "calculate", "arithmetic", math.isqrt(n)))
    for (u, v), factor in _FACTORS.items():
        for value in (10, 3, 42):
            out.append(Case(f"convert {value} {_UNIT_WORDS[u]} to {_UNIT_WORDS[v]}", "convert_units", "units",
                            round(value * factor, 6), {"value": value, "from_unit": _named(u), "to_unit": _named(v)}))
    for c in (0, 100, 37):
        out.append(Case(f"convert {c} celsius to fahrenheit", "convert_units", "units", round(c * 9 / 5 + 32, 6),
                        {"value": c, "from_unit": "c", "to_unit": "f"}))
    for q in ("what time is it", "what is the time now", "tell me the time", "what is the date today",
              "what day is it today", "what is today's date", "what time is it right now", "which day of the week is it",
              "do you know what time it is", "what's the date"):
        out.append(Case(q, "get_time", "time"))
    for n, label in ((5, "tea"), (10, "pasta"), (3, "eggs"), (25, "laundry"), (45, "bread"), (15, "nap")):
        out.append(Case(f"set a timer for {n} minutes for {label}", "set_timer", "timers", None, {"minutes": n}))
    for q in ("what timers do I have?", "list my timers", "which reminders are set", "show my timers and reminders"):
        out.append(Case(q, "list_reminders", "timers"))
    for what, n in (("call Ana", 10), ("check the oven", 20), ("water the plants", 30)):
        out.append(Case(f"remind me to {what} in {n} minutes", "add_reminder", "timers", None, {"text": what.split()[-1]}))
    for note in ("buy milk", "book the dentist", "pay the rent", "call the plumber", "return the library books",
                 "renew the passport", "order printer ink"):
        out.append(Case(f"take a note: {note}", "add_note", "notes", None, {"text": note.split()[-1]}))
    for q in ("show my notes", "list my notes", "what notes do I have"):
        out.append(Case(q, "list_notes", "notes"))
    return out


def check_call(case: Case, calls: list[dict], results: list[dict]) -> bool:
    """True when the first call is the expected tool with the expected arguments or result."""
    if not calls or calls[0]["name"] != case.tool or results[0].get("error") is not None:
        return False
    args, result = calls[0]["arguments"], results[0].get("result")
    for k, v in case.arguments.items():
        got = args.get(k)
        if isinstance(v, (str, tuple)):
            alts = (v,) if isinstance(v, str) else v
            if not isinstance(got, str) or not any(a.lower() in got.lower() for a in alts):
                return False
        elif not _close(got, v):
            return False
    if case.result is not None:
        value = result.get("result") if isinstance(result, dict) else result
        return _close(value, case.result)
    return True


def states_result(registry, calls, answer: str) -> bool:
    """True when the answer holds what every call returned (its stated text, else its template)."""
    from ..tools.answer import stated, template

    if not calls or any(c.error is not None for c in calls):
        return False
    for c in calls:
        tool = registry[c.name] if c.name in registry else None
        wants = [stated(tool, c), template(tool, c)]
        if getattr(tool, "states", None) is None:
            wants.append(stated(None, c))  # the bare value, which the tool's sentence holds
        if not any(w and w in answer for w in wants):
            return False
    return True


@dataclass
class Row:
    backend: str
    n: int = 0
    call_ok: int = 0
    states: int = 0
    both: int = 0
    expected: int = 0
    expected_n: int = 0
    model_answers: int = 0
    seconds: list = field(default_factory=list)
    by_kind: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def as_dict(self) -> dict:
        r = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
        return {"backend": self.backend, "n": self.n, "call_accuracy": r(self.call_ok, self.n),
                "answer_states_result": r(self.states, self.n),
                "right_call_and_result": r(self.both, self.n),
                "answer_states_expected": r(self.expected, self.expected_n),
                "model_answers": r(self.model_answers, self.n),
                "seconds_median": round(statistics.median(self.seconds), 2) if self.seconds else None,
                "by_kind": {k: {"n": v[0], "call_accuracy": r(v[1], v[0]), "answer_states_result": r(v[2], v[0])}
                            for k, v in self.by_kind.items()}}


def sample(items: list[Case], limit: int | None) -> list[Case]:
    """`limit` items spread evenly over the set, so a short run still covers every kind of request."""
    if not limit or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def run(backends: list[str], model: str | None = None, limit: int | None = None, threads: int | None = None,
        progress: Callable | None = None) -> dict:
    """Run the set through the assistant on each backend; returns the figures per backend."""
    import edge
    from edge.apps.assistant import local_tools
    from edge.apps.assistant.loop import Assistant, AssistantOptions

    if not backends:
        raise InvalidOption("No backend to evaluate.", "Pass --backend llama.cpp,onnx.")
    items = sample(cases(), limit)
    rows = []
    for b in backends:
        load = {"n_ctx": 2048} if threads is None else {"n_ctx": 2048, "threads": threads}
        with edge.load(model, backend=b, **load) as m, tempfile.TemporaryDirectory(prefix="edge-eval-tools-") as data:
            a = Assistant(AssistantOptions(guard=False, data_dir=data), model=m)
            row = Row(b)
            for i, case in enumerate(items):
                t0 = time.perf_counter()
                turn = a.ask(case.request)
                row.seconds.append(time.perf_counter() - t0)
                calls = _calls(turn)
                ok = check_call(case, turn.tool_calls, turn.tool_results)
                said = states_result(a.registry, calls, turn.answer)
                want = case.expected_text()
                row.n += 1
                row.call_ok += ok
                row.states += said
                row.both += ok and said
                row.model_answers += bool(turn.grounded)
                if want is not None:
                    row.expected_n += 1
                    row.expected += want in turn.answer
                k = row.by_kind.setdefault(case.kind, [0, 0, 0])
                k[0] += 1
                k[1] += ok
                k[2] += said
                if not (ok and said):
                    row.failures.append({"request": case.request, "calls": turn.tool_calls,
                                         "results": turn.tool_results, "answer": turn.answer,
                                         "why": "wrong call" if not ok else "answer lacks the result"})
                if progress is not None:
                    progress(b, i + 1, len(items))
            local_tools.configure()
        rows.append(row)
    return {"model": model or "default", "items": len(items), "rows": [r.as_dict() for r in rows],
            "failures": {r.backend: r.failures for r in rows}}


def _calls(turn):
    from ..tools.execute import ToolCall

    return [ToolCall(c["name"], c["arguments"], r.get("result"), r.get("error"))
            for c, r in zip(turn.tool_calls, turn.tool_results)]


def table(out: dict) -> str:
    head = (f"{'backend':<12}{'n':>5}{'call acc':>10}{'states result':>15}{'both':>7}{'states expected':>17}"
            f"{'model answers':>15}{'s/item':>8}")
    lines = [head]
    for r in out["rows"]:
        fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(f"{r['backend']:<12}{r['n']:>5}{fmt(r['call_accuracy']):>10}{fmt(r['answer_states_result']):>15}"
                     f"{fmt(r['right_call_and_result']):>7}{fmt(r['answer_states_expected']):>17}{fmt(r['model_answers']):>15}"
                     f"{(r['seconds_median'] or 0):>8.2f}")
        for kind, k in r["by_kind"].items():
            lines.append(f"  {kind:<10}{k['n']:>5}{fmt(k['call_accuracy']):>10}{fmt(k['answer_states_result']):>15}")
    return "\n".join(lines)
