"""The BFCL loader and our AST matcher, checked against BFCL's own possible answers."""
from __future__ import annotations

import pytest

from edge.eval import bfcl
from edge.tools import Registry


def _first_answer(item):
    """A call list built from the first possible value of every parameter ("" = omit)."""
    calls = []
    for ans in item.answer:
        name, params = next(iter(ans.items()))
        args = {}
        for k, vals in params.items():
            v = vals[0]
            if v == "":
                continue
            if isinstance(v, dict):  # nested possible answers: take the first of each key
                v = {dk: dv[0] for dk, dv in v.items() if dv and dv[0] != ""}
            args[k] = v
        calls.append({"name": name, "arguments": args})
    return calls


@pytest.mark.parametrize("category", ["simple", "multiple", "parallel", "live_simple", "live_multiple"])
def test_ground_truth_matches_itself(category):
    items = bfcl.load(category, limit=40)
    assert len(items) == 40 and all(it.answer for it in items)
    for it in items:
        calls = _first_answer(it)
        assert bfcl.match(it, calls) is None, (it.id, calls)
        # Every BFCL schema must load into the registry.
        assert set(Registry.from_bfcl(it.functions).names) == {f["name"] for f in it.functions}


def test_matcher_rejects_wrong_calls():
    it = bfcl.load("simple", limit=1)[0]  # calculate_triangle_area(base=10, height=5, unit optional)
    ok = {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}
    assert bfcl.match(it, [ok]) is None
    assert bfcl.match(it, [dict(ok, arguments={"base": 10, "height": 5, "unit": "Units"})]) is None  # case-insensitive
    assert bfcl.match(it, [dict(ok, arguments={"base": 10, "height": 6})]) == "wrong value for 'height': 6"
    assert bfcl.match(it, [dict(ok, arguments={"base": 10})]) == "missing required parameter 'height'"
    assert bfcl.match(it, [dict(ok, arguments={"base": 10, "height": 5, "x": 1})]) == "unexpected parameter 'x'"
    assert bfcl.match(it, [dict(ok, arguments={"base": "10", "height": 5})]) == "wrong type for 'base': str"
    assert bfcl.match(it, [dict(ok, name="area")]) == "wrong function 'area' (expected 'calculate_triangle_area')"
    assert bfcl.match(it, []) == "made 0 call(s), expected 1"
    assert bfcl.match(it, [ok, ok]) == "made 2 call(s), expected 1"


def test_parallel_any_order_and_irrelevance():
    it = bfcl.load("parallel", limit=1)[0]  # spotify.play twice
    calls = _first_answer(it)
    assert bfcl.match(it, calls[::-1]) is None
    assert bfcl.match(it, [calls[0], calls[0]]) == "wrong value for 'artist': 'Taylor Swift'"
    irr = bfcl.load("irrelevance", limit=1)[0]
    assert irr.answer is None
    assert bfcl.match(irr, []) is None
    assert bfcl.match(irr, [{"name": "determine_body_mass_index", "arguments": {}}]) == \
        "called 'determine_body_mass_index' though no tool applies"


def test_float_accepts_int_and_bool_is_not_int():
    it = bfcl.Item("x", "simple", [{"role": "user", "content": "q"}],
                   [{"name": "f", "parameters": {"type": "dict", "properties": {"r": {"type": "float"}, "b": {"type": "boolean"}},
                                                 "required": ["r"]}}],
                   [{"f": {"r": [2.0], "b": [True, ""]}}])
    assert bfcl.match(it, [{"name": "f", "arguments": {"r": 2}}]) is None
    assert bfcl.match(it, [{"name": "f", "arguments": {"r": 2, "b": 1}}]) == "wrong type for 'b': int"


def test_unknown_category_clear_error():
    from edge.errors import InvalidOption

    with pytest.raises(InvalidOption, match="Unknown BFCL category 'simpel'. Choose from: simple, multiple"):
        bfcl.load("simpel")
