"""`edge eval tools`: the built-in request set, its known results and the scoring."""
from __future__ import annotations

import collections

import pytest

from edge.apps.assistant import local_tools as t
from edge.eval import tools as ev
from edge.tools import Registry, ToolCall


def test_the_set_has_100_requests_of_every_kind():
    cases = ev.cases()
    assert len(cases) >= 100
    assert collections.Counter(c.kind for c in cases) == {"arithmetic": 40, "units": 27, "timers": 13, "time": 10,
                                                            "notes": 10}
    assert len({c.request for c in cases}) == len(cases)


def test_known_results_agree_with_the_tools():
    """The expected values are written independently of the tools; the tools must give them."""
    for c in ev.cases():
        if c.tool == "convert_units":
            args = {k: v[0] if isinstance(v, tuple) else v for k, v in c.arguments.items()}
            got = t.convert_units(**args)
            assert got["result"] == pytest.approx(c.result, rel=1e-5), c.request
            assert ev.check_call(c, [{"name": c.tool, "arguments": args}], [{"result": got, "error": None}])
        elif c.tool == "calculate":
            got = t.calculate(c.request.removeprefix("what is ").removeprefix("the "))
            assert got == pytest.approx(c.result), c.request


def test_check_call_and_states_result():
    case = ev.Case("what is 12 times 7", "calculate", "arithmetic", 84)
    call = [{"name": "calculate", "arguments": {"expression": "12 * 7"}}]
    assert ev.check_call(case, call, [{"result": 84, "error": None}])
    assert not ev.check_call(case, call, [{"result": 78, "error": None}])
    assert not ev.check_call(case, [{"name": "convert_units", "arguments": {}}], [{"result": 84, "error": None}])
    assert not ev.check_call(case, call, [{"result": None, "error": "boom"}])
    timer = ev.Case("set a timer for 5 minutes for tea", "set_timer", "timers", None, {"minutes": 5})
    assert ev.check_call(timer, [{"name": "set_timer", "arguments": {"minutes": 5.0}}], [{"result": {}, "error": None}])
    assert not ev.check_call(timer, [{"name": "set_timer", "arguments": {"minutes": 10}}], [{"result": {}, "error": None}])

    # A unit is right by its symbol or by the word the request used, never the other unit.
    units = next(c for c in ev.cases() if c.request == "convert 10 pounds to kg")
    for name in ("lb", "pounds", "pound"):
        got = {"value": 10, "from_unit": name, "to_unit": "kg"}
        assert ev.check_call(units, [{"name": "convert_units", "arguments": got}], [{"result": t.convert_units(**got),
                                                                                     "error": None}])
    wrong = {"value": 10, "from_unit": "kg", "to_unit": "pounds"}
    assert not ev.check_call(units, [{"name": "convert_units", "arguments": wrong}],
                             [{"result": t.convert_units(**wrong), "error": None}])

    reg = Registry(t.TOOLS)
    done = [ToolCall("calculate", {"expression": "12 * 7"}, 84)]
    assert ev.states_result(reg, done, "The answer is 84.")
    assert not ev.states_result(reg, done, "The answer is 78.")
    listed = [ToolCall("list_notes", {}, [])]
    assert ev.states_result(reg, listed, "You have no notes.")
    assert not ev.states_result(reg, [ToolCall("calculate", {}, None, "boom")], "I could not run calculate: boom")
    assert not ev.states_result(reg, [], "84")


def test_limit_spreads_over_every_kind():
    items = ev.cases()
    some = ev.sample(items, 12)
    assert len(some) == 12 and len(set(map(id, some))) == 12
    assert {c.kind for c in some} == {"arithmetic", "units", "time", "timers", "notes"}
    assert ev.sample(items, 0) == items and ev.sample(items, 1000) == items


def test_table_rows_per_backend_and_kind():
    out = {"rows": [{"backend": "llama.cpp", "n": 2, "call_accuracy": 0.5, "answer_states_result": 1.0,
                     "right_call_and_result": 0.5, "answer_states_expected": 0.5, "model_answers": 0.5, "seconds_median": 1.25,
                     "by_kind": {"arithmetic": {"n": 2, "call_accuracy": 0.5, "answer_states_result": 1.0}}}]}
    assert ev.table(out).splitlines() == [
        "backend         n  call acc  states result   both  states expected  model answers  s/item",
        "llama.cpp       2     0.500          1.000  0.500            0.500          0.500    1.25",
        "  arithmetic    2     0.500          1.000"]
