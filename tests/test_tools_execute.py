"""Execution of calls (errors, timeouts), the `edge call` CLI, and end-to-end calls on SmolLM2."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.errors import ToolError
from edge.tools import Registry, ToolCall, tool
from edge.tools.execute import run, run_all


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot do {reason}")


@tool
def sleepy(seconds: float) -> str:
    """Sleeps."""
    time.sleep(seconds)
    return "awake"


REG = Registry([add, explode, sleepy])


def test_run_ok():
    c = run(REG, ToolCall("add", {"a": 2, "b": 40}))
    assert c.ok and c.result == 42 and c.result_text() == "42"
    assert c.to_dict()["result"] == 42


def test_tool_that_raises_gives_error_result():
    c = run(REG, ToolCall("explode", {"reason": "this"}))
    assert not c.ok and c.error == "ValueError: cannot do this"
    assert c.result_text() == "error: ValueError: cannot do this"


def test_tool_that_times_out():
    t0 = time.perf_counter()
    c = run(REG, ToolCall("sleepy", {"seconds": 5}), timeout=0.2)
    assert time.perf_counter() - t0 < 2
    assert c.error == "timed out after 0.2 s" and c.result is None


def test_only_registered_tools_with_valid_arguments_run():
    calls = run_all(REG, [ToolCall("rm_rf", {}), ToolCall("add", {"a": "2", "b": 3}), ToolCall("add", {"a": 1})])
    assert calls[0].error == "no tool named 'rm_rf'"
    assert calls[1].error == "invalid arguments: a: '2' is not of type 'integer'"
    assert calls[2].error == "invalid arguments: arguments: 'b' is a required property"
    schema_only = Registry.from_openai([{"name": "remote", "parameters": {"type": "object", "properties": {}}}])
    assert run(schema_only, ToolCall("remote", {})).error == "tool 'remote' has no Python function to run"
    with pytest.raises(ToolError, match="The tool timeout must be positive"):
        run_all(REG, [], timeout=0)


# -- CLI ---------------------------------------------------------------------------
def test_cli_bad_tools_file_exact_error(tmp_path):
    bad = tmp_path / "tools.json"
    bad.write_text('[{"name": "f",')
    result = CliRunner().invoke(cli, ["call", "hello", "--tools", str(bad)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {bad} is not valid JSON: Expecting property name enclosed in double quotes: "
                             "line 1 column 15 (char 14). Fix the file or pass a .py module of tools.\n")


def test_cli_invalid_schema_exact_error(tmp_path):
    f = tmp_path / "tools.json"
    f.write_text(json.dumps([{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "text"}}}}]))
    result = CliRunner().invoke(cli, ["call", "hello", "--tools", str(f)])
    assert result.exit_code == 1
    assert result.output == ("Error: Tool 'f' uses unknown type 'text'. "
                             "Use one of: array, boolean, integer, null, number, object, string.\n")


# -- the real model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    import edge

    m = edge.load(n_ctx=2048)
    yield m
    m.close()


WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}]


@pytest.mark.slow
def test_smollm2_call_execute_and_answer(smol):
    from edge.tools import call

    calls_seen = []

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls_seen.append(city)
        return f"It is 21 C and sunny in {city}."

    res = call(smol, "What is the weather in Paris?", Registry([get_weather, add, explode]), execute=True, max_tokens=64)
    assert res.valid and [c.name for c in res.calls] == ["get_weather"]
    assert calls_seen == [res.calls[0].arguments["city"]]
    assert res.calls[0].result.startswith("It is 21 C")
    # The answer uses the result and is prose, not a repeated call.
    assert "sunny" in res.answer.lower() and res.answer[0] not in "{[", res.answer
    assert res.prompt_tokens > 0 and res.completion_tokens > 0


@pytest.mark.slow
def test_smollm2_failing_tool_conversation_continues(smol):
    from edge.tools import call

    res = call(smol, "Explode because of testing.", Registry([explode]), tool_choice="required", execute=True, max_tokens=64)
    assert res.calls and res.calls[0].name == "explode"
    assert res.calls[0].error.startswith("ValueError: cannot do")
    # Retried once with the error as feedback, then reported plainly (not a made-up answer).
    assert len(res.retried) == 1 and res.retried[0].startswith("explode: ValueError: cannot do")
    assert res.answer == f"I could not run explode: {res.calls[0].error}" and res.grounded is False
    # The conversation continues: the same model makes the next call and answers it.
    nxt = call(smol, "What is 17 plus 25?", Registry([add]), tool_choice="required", execute=True)
    assert nxt.calls[0].result == 42 and "42" in nxt.answer and nxt.retried == []


@pytest.mark.slow
def test_smollm2_budget_too_small_clear_error(smol):
    from edge.tools import call

    with pytest.raises(ToolError) as err:
        call(smol, "Weather in Paris?", Registry.from_openai(WEATHER), tool_choice="required", max_tokens=3)
    assert str(err.value) == "The model did not finish a valid call within 3 tokens. Raise --max-tokens, or keep fewer tools with --top-k."


@pytest.mark.slow
def test_cli_call_json(tmp_path):
    f = tmp_path / "tools.json"
    f.write_text(json.dumps(WEATHER))
    result = CliRunner().invoke(cli, ["call", "What is the weather in Oslo?", "--tools", str(f), "--json", "--choice", "required"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["valid"] and out["calls"][0]["name"] == "get_weather"
    assert set(out["calls"][0]["arguments"]) == {"city"}


WEATHER_WITH_DEFAULTS = {"type": "function", "function": {"name": "get_current_weather", "description": "Weather now.", "parameters": {
    "type": "object", "required": ["location"], "properties": {
        "location": {"type": "string", "default": "Paris, FR"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "fahrenheit"},
        "days": {"type": "integer", "default": 1},
        "detail": {"type": "string"}}}}}


def test_ungrounded_optional_defaults_are_dropped():
    from edge.tools.call import grounded

    t = Registry.from_openai([WEATHER_WITH_DEFAULTS])["get_current_weather"]
    args = {"location": "Oslo, NO", "unit": "celsius", "days": 3, "detail": "hourly"}
    # "celsius" is optional, has a default and is not in the request: the default applies.
    assert grounded(t, args, "weather in Oslo, in fahr please") == {"location": "Oslo, NO", "days": 3, "detail": "hourly"}
    # Mentioned (any case) it stays; required, default-less and non-string values always stay.
    assert grounded(t, args, "Oslo weather in Celsius") == args
    assert grounded(t, {"location": "Rome", "unit": "fahrenheit"}, "weather") == {"location": "Rome", "unit": "fahrenheit"}


def test_call_grounds_defaults_unless_turned_off(smol):
    from edge.eval import bfcl
    from edge.tools import CallOptions

    item = next(it for it in bfcl.load("live_simple", 10) if it.id == "live_simple_8-3-4")  # "...London, UK in fahr"
    off, _ = bfcl.run_edge(smol, item, CallOptions(max_tokens=96, ground_defaults=False))
    on, _ = bfcl.run_edge(smol, item, CallOptions(max_tokens=96))
    assert off[0]["arguments"]["unit"] == "celsius" and bfcl.match(item, off) is not None
    assert "unit" not in on[0]["arguments"] and bfcl.match(item, on) is None
