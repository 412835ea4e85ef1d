"""The BFCL loader and the scoring through BFCL's own AST checker, on BFCL's own possible answers."""
from __future__ import annotations

import json

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


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "live_simple", "live_multiple"])
def test_ground_truth_matches_itself(category):
    items = bfcl.load(category, limit=40)
    assert len(items) == 40 and all(it.answer for it in items)
    for it in items:
        calls = _first_answer(it)
        assert bfcl.match(it, calls) is None, (it.id, calls)
        # Every BFCL schema must load into the registry.
        assert set(Registry.from_bfcl(it.functions).names) == {f["name"] for f in it.functions}


def test_matcher_rejects_wrong_calls():
    """The reasons are BFCL's checker's own words (issue 23: our matcher was tested only against itself)."""
    it = bfcl.load("simple_python", limit=1)[0]  # calculate_triangle_area(base=10, height=5, unit optional)
    ok = {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}
    assert bfcl.match(it, [ok]) is None
    assert bfcl.match(it, [dict(ok, arguments={"base": 10, "height": 5, "unit": "Units"})]) is None  # case-insensitive
    assert bfcl.match(it, [dict(ok, arguments={"base": 10, "height": 6})]) == "Invalid value for parameter 'height': 6. Expected one of [5]."
    assert bfcl.match(it, [dict(ok, arguments={"base": 10})]) == "Missing required parameter: 'height'."
    assert bfcl.match(it, [dict(ok, arguments={"base": 10, "height": 5, "x": 1})]) == "Unexpected parameter: 'x'."
    assert bfcl.match(it, [dict(ok, arguments={"base": "10", "height": 5})]) == \
        "Incorrect type for parameter 'base'. Expected type integer, got str. Parameter value: '10'."
    assert bfcl.match(it, [dict(ok, name="area")]) == "Function name 'calculate_triangle_area' not found in model output."
    assert bfcl.match(it, []) == "made 0 call(s), expected 1"
    assert bfcl.match(it, [ok, ok]) == "Wrong number of functions."


def test_the_checker_is_bfcl_eval_s_own():
    checker, language = bfcl._checker()
    assert checker.__name__ == "bfcl_eval.eval_checker.ast_eval.ast_checker"
    assert language.PYTHON.value == "python"


def test_old_category_spelling_still_loads():
    assert [it.id for it in bfcl.load("simple", limit=2)] == [it.id for it in bfcl.load("simple_python", limit=2)]
    assert bfcl.load("simple", limit=1)[0].category == "simple_python"


def test_parallel_any_order_and_irrelevance():
    it = bfcl.load("parallel", limit=1)[0]  # spotify.play twice
    calls = _first_answer(it)
    assert bfcl.match(it, calls[::-1]) is None
    assert bfcl.match(it, [calls[0], calls[0]]) is not None
    irr = bfcl.load("irrelevance", limit=1)[0]
    assert irr.answer is None
    assert bfcl.match(irr, []) is None
    assert bfcl.match(irr, [{"name": "determine_body_mass_index", "arguments": {}}]) == \
        "called 'determine_body_mass_index' though no tool applies"


def test_float_accepts_int_and_bool_is_not_int():
    it = bfcl.Item("x", "simple_python", [{"role": "user", "content": "q"}],
                   [{"name": "f", "parameters": {"type": "dict", "properties": {"r": {"type": "float"}, "b": {"type": "boolean"}},
                                                 "required": ["r"]}}],
                   [{"f": {"r": [2.0], "b": [True, ""]}}])
    assert bfcl.match(it, [{"name": "f", "arguments": {"r": 2}}]) is None
    assert bfcl.match(it, [{"name": "f", "arguments": {"r": 2, "b": 1}}]) is not None


def test_unknown_category_clear_error():
    from edge.errors import InvalidOption

    with pytest.raises(InvalidOption, match="Unknown BFCL category 'simpel'. Choose from: simple_python, multiple"):
        bfcl.load("simpel")


def test_retrieval_queries_count_every_expected_function():
    names = {f["name"] for f in bfcl.pool()[0]}
    queries = bfcl.retrieval_queries(names, limit=3)
    pm = [q for q in queries if q[2] == "parallel_multiple"]
    assert len(pm) == 3 and all(len(want) >= 2 and len(set(want)) == len(want) for _, want, _ in pm)
    live = [q for q in queries if q[2] == "live_multiple"]
    item = bfcl.load("live_multiple", limit=1)[0]
    assert live[0][0] == item.messages[-1]["content"] and item.messages[-1]["role"] == "user"


def test_pool_one_tool_per_name_and_counts_reworded_names():
    fns, several = bfcl.pool()
    names = [f["name"] for f in fns]
    assert len(names) == len(set(names)) > 1800
    assert 0 < several < len(names)


def _result(rows):
    return {"model": "m", "backend": "llama.cpp", "top_k": 3, "limit": 2, "max_tokens": 64, "threads": 1,
            "baseline_ctx": 4096, "rows": rows}


def test_row_scores_and_table_shows_over_context_and_unfinished():
    it = bfcl.load("simple", limit=1)[0]
    ok = [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]
    edge_row, base_row = bfcl.Row("edge", "simple"), bfcl.Row("baseline", "simple")
    edge_row.add(it, ok, {"latency": 1.0, "prompt_tokens": 100, "prompt_tokens_all": 300, "valid": True})
    edge_row.add(it, [{"name": "calculate_triangle_area", "arguments": {"base": "x"}}],
                 {"latency": 3.0, "prompt_tokens": 100, "prompt_tokens_all": 300, "valid": True})
    base_row.add(it, None, {"error": "prompt over the 4096-token context", "over_context": True, "latency": 0.0,
                            "valid": False})
    base_row.add(it, None, {"error": "unfinished after 64 tokens", "unfinished": True, "latency": 2.0, "valid": False})
    e, b = edge_row.as_dict(), base_row.as_dict()
    assert (e["accuracy"], e["schema_valid"], e["prompt_tokens"], e["prompt_tokens_all_tools"]) == (0.5, 0.5, 100, 300)
    assert edge_row.failures[0]["why"] == "Missing required parameter: 'height'."
    assert (b["accuracy"], b["over_context"], b["unfinished"]) == (0.0, 1, 1)
    lines = bfcl.table(_result([e, b])).splitlines()
    assert lines[2] == "edge      simple            2     0.500  0.500       100.0      300.0    2.00    2.00         0          0"
    assert lines[3] == "baseline  simple            2     0.000  0.000           -          -    1.00    1.00         1          1"
    assert lines[4].startswith("baseline: llama-cpp-python chatml-function-calling, all tools, context 4096")


@pytest.fixture(scope="module")
def baseline():
    from edge.store import Store

    gguf = next(a for a in Store().resolve(None).artifacts if a.format == "gguf")
    return bfcl.Baseline(gguf.main_path, 1024, 1)


@pytest.mark.slow
def test_baseline_caps_tokens_and_context(baseline):
    item = bfcl.load("simple", limit=1)[0]
    calls, info = baseline.run(item, max_tokens=3)
    assert calls is None and info["unfinished"] and info["error"] == "unfinished after 3 tokens"
    big = max(bfcl.load("live_multiple", limit=40), key=lambda it: len(json.dumps(it.functions)))
    calls, info = baseline.run(big, max_tokens=3)
    assert calls is None and info["over_context"] and info["error"] == "prompt over the 1024-token context"
    calls, info = baseline.run(item, max_tokens=96)
    assert "error" not in info and info["prompt_tokens"] > 100


def test_retrieval_cli_prints_recall_latency_and_prompt_savings():
    import re

    from click.testing import CliRunner

    from edge.cli import cli

    r = CliRunner().invoke(cli, ["eval", "bfcl", "--retrieval", "--limit", "2"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert re.fullmatch(r"pool: \d{4} tools \(\d+ unusable skipped\), \d+ queries, \d+ expected functions", lines[0])
    assert re.fullmatch(r"recall@5 per function: [01]\.\d{4} \(tuning half [01]\.\d{4}, held-out half [01]\.\d{4}\); "
                        r"all functions of a query: [01]\.\d{4}", lines[1])
    assert re.fullmatch(r"recall@5 counting equivalent tools: [01]\.\d{4} \(tuning half [01]\.\d{4}, held-out half "
                        r"[01]\.\d{4}\); equivalent: description cosine >= 0\.9 and a parameter name in common", lines[2])
    assert lines[3].startswith("latency p50 ")
    assert re.fullmatch(r"prompt tokens on live_multiple \(2 items\): all tools [\d.]+, kept tools [\d.]+: "
                        r"[\d.]+x smaller \(tuning half [\d.]+x, held-out half [\d.]+x\); expected functions kept [01]\.\d{4}",
                        lines[-1]), lines[-1]


def test_equivalent_tools_reword_one_job_and_share_a_parameter():
    from edge.tools import Tool

    def t(name, desc, *params):
        return Tool(name, desc, {"type": "object", "properties": {p: {"type": "number"} for p in params}})

    tools = [t("geometry.area_circle", "Calculate the area of a circle given the radius.", "radius", "units"),
             t("circle.area", "Calculate the area of a circle with given radius", "radius", "isDiameter"),
             t("fahrenheit_to_celsius", "Convert a temperature from Fahrenheit to Celsius.", "fahrenheit"),
             t("celsius_to_fahrenheit", "Converts a given temperature from Celsius to Fahrenheit.", "celsius"),
             t("weather_forecast_temperature", "Retrieve the temperature forecast for a location.", "location", "days"),
             t("weather_forecast_humidity", "Retrieve the humidity forecast for a location.", "location", "days"),
             t("blank", "", "radius")]
    same = bfcl.equivalence(tools)
    assert same("geometry.area_circle", "circle.area") and same("circle.area", "geometry.area_circle")
    assert same("blank", "blank")
    assert not same("fahrenheit_to_celsius", "celsius_to_fahrenheit")  # close wording, no shared parameter
    assert not same("weather_forecast_temperature", "weather_forecast_humidity")  # same parameters, other job
    assert not same("blank", "geometry.area_circle")  # no description: never equivalent
