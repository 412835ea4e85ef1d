"""Answers after tool calls state the tools' results; failed calls are retried once, then reported.

Fast tests decode with the tiny random model of test_tools_constrain (the grammar
alone must put the result in the answer) or script a model's replies (retries,
templates); slow tests run SmolLM2-135M.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

import numpy as np
import pytest

from edge.config import GenerationOptions
from edge.tools import Registry, ToolCall, call, tool
from edge.tools.answer import answer_grammar, respond, stated, template
from edge.tools.call import CallOptions, name_prior, repeated, select, without_numbers, without_unnamed_enums
from edge.tools.constrain import Constraint
from test_tools_constrain import TinyRandom


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot do {reason}")


@tool(template=lambda a, r: f"{len(r)} items: {', '.join(r)}.")
def items(kind: str) -> list:
    """List items of a kind."""
    return ["a", "b"]


@tool
def wait(minutes: float) -> str:
    """Wait some minutes."""
    return "ok"


class Stats:
    finish_reason = "stop"
    completion_tokens = 5


class Scripted:
    """A model whose replies are given in advance; it records the messages it was sent."""

    def __init__(self, *replies: str):
        self.replies = list(replies)
        self.sent: list[list[dict]] = []
        self.backend = TinyRandom()
        self.stats = Stats()

    def tokenize(self, text: str) -> list[int]:
        return self.backend.tokenize(text)

    def apply_chat_template(self, messages, **kw) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def chat(self, messages, **gen) -> str:
        self.sent.append(messages)
        return self.replies.pop(0)

    def stream_chat(self, messages, **gen):
        text = self.chat(messages, **gen)
        yield from re.findall(r"\S+\s*", text)


REG = Registry([add, explode, items, wait])


# -- the grammar ----------------------------------------------------------------------
@pytest.mark.parametrize("values", [["84"], ["6.213712"], ["14:05"], ["buy milk", "42"]])
def test_answer_grammar_puts_the_result_in_every_finished_answer(values):
    """Issue 26.1: on random logits the answer still states the result, and no other number."""
    model = TinyRandom()
    finished = 0
    for seed in range(8):
        model.seed = seed
        hook = Constraint(model, answer_grammar(values))
        opts = GenerationOptions(max_tokens=160, temperature=1.0, top_k=0, top_p=1.0, seed=seed, logits_hook=hook)
        out = "".join(c.text for c in model.generate(model.tokenize("answer: "), opts))
        if model.last_stats.finish_reason != "stop":
            continue
        finished += 1
        pos = 0
        for v in values:
            pos = out.find(v, pos)
            assert pos >= 0, (values, out)
            pos += len(v)
        rest = out
        for v in values:
            rest = rest.replace(v, "", 1)
        assert not re.search(r"\d", rest), out
        assert "\n" not in out and not out[:1].isspace(), out
    assert finished >= 6


def test_stated_and_template():
    assert stated(REG["add"], ToolCall("add", {"a": 17, "b": 25}, 42)) == "42"
    assert stated(None, ToolCall("x", {}, {"value": 10, "result": 6.213712})) == "6.213712"
    assert stated(None, ToolCall("x", {}, 3.0)) == "3"
    assert stated(None, ToolCall("x", {}, "line one\nline two")) is None
    assert stated(REG["items"], ToolCall("items", {"kind": "k"}, ["a", "b"])) is None
    assert stated(REG["add"], ToolCall("add", {}, None, "boom")) is None
    assert template(REG["add"], ToolCall("add", {"a": 17, "b": 25}, 42)) == "add(a=17, b=25) returned 42."
    assert template(REG["items"], ToolCall("items", {"kind": "k"}, ["a", "b"])) == "2 items: a, b."
    assert template(REG["add"], ToolCall("add", {}, None, "ValueError: no")) == "I could not run add: ValueError: no"


# -- respond ----------------------------------------------------------------------------
def test_model_answer_that_misses_the_result_gets_the_template():
    """Issue 26.1: "17 + 25 = 32." next to a result of 42 never stands alone."""
    m = Scripted("17 + 25 = 32.")
    said = []
    text, from_model = respond(m, [], [ToolCall("add", {"a": 17, "b": 25}, 42)], REG, 64, 0.0, said.append)
    assert text == "17 + 25 = 32. add(a=17, b=25) returned 42."
    assert from_model is False and "".join(said) == text


def test_lists_and_errors_are_answered_by_template_without_the_model():
    m = Scripted()
    text, from_model = respond(m, [], [ToolCall("items", {"kind": "k"}, ["a", "b"])], REG, 64, 0.0)
    assert (text, from_model, m.sent) == ("2 items: a, b.", False, [])
    text, _ = respond(m, [], [ToolCall("explode", {"reason": "x"}, None, "ValueError: cannot do x")], REG, 64, 0.0)
    assert text == "I could not run explode: ValueError: cannot do x"


# -- retries ------------------------------------------------------------------------------
def test_tool_error_is_retried_once_with_the_error_then_reported():
    m = Scripted('{"name": "explode", "arguments": {"reason": "x"}}', '{"name": "explode", "arguments": {"reason": "y"}}')
    res = call(m, "Explode because of testing.", REG, tool_choice="required", execute=True, retrieve=False)
    assert res.retried == ["explode: ValueError: cannot do x"]
    assert m.sent[1][-2:] == [
        {"role": "assistant", "content": '{"name": "explode", "arguments": {"reason": "x"}}'},
        {"role": "user", "content": "That did not work: explode: ValueError: cannot do x. Reply with a corrected call."}]
    assert res.answer == "I could not run explode: ValueError: cannot do y"
    assert res.grounded is False


def test_malformed_call_is_retried_and_the_fixed_call_answers():
    m = Scripted('{"name": "add", "arguments": {"a": "17"}}', '{"name": "add", "arguments": {"a": 17, "b": 25}}',
                 "The answer is 42.")
    res = call(m, "What is 17 plus 25?", REG, tool_choice="required", execute=True, retrieve=False)
    assert len(res.retried) == 1 and res.retried[0].startswith("add: ")
    assert res.calls[0].result == 42 and res.answer == "The answer is 42." and res.grounded is True


def test_unfinished_call_is_retried_then_reported_plainly():
    m = Scripted('{"name": "add", "argu', '{"name": "ad')
    m.stats.finish_reason = "length"
    res = call(m, "What is 17 plus 25?", REG, tool_choice="required", execute=True, retrieve=False, max_tokens=8)
    assert res.calls == [] and len(res.retried) == 1
    assert res.answer == "I could not make a valid tool call: The model did not finish a valid call within 8 tokens."


def test_without_execute_a_malformed_call_still_raises():
    from edge.errors import ToolError

    m = Scripted('{"name": "add", "argu')
    m.stats.finish_reason = "length"
    with pytest.raises(ToolError, match="did not finish a valid call within 8 tokens"):
        call(m, "What is 17 plus 25?", REG, tool_choice="required", retrieve=False, max_tokens=8)


def test_tools_needing_a_number_are_dropped_for_requests_without_one():
    """Issue 26.7: "what timers do I have?" made set_timer(minutes=10)."""
    kept = [("items", 0.57), ("wait", 0.45)]
    assert without_numbers("what timers do I have?", kept, REG) == [("items", 0.57)]
    assert without_numbers("wait five minutes", kept, REG) == kept
    assert without_numbers("wait 5 minutes", kept, REG) == kept
    assert without_numbers("wait a bit", [("wait", 0.5)], REG) == [("wait", 0.5)]


@tool
def clock() -> str:
    """Tell the time."""
    return "12:00"


@tool
def convert(value: float, unit: Literal["km", "mi"]) -> float:
    """Convert a distance."""
    return value


def test_tools_that_cannot_use_the_request_are_dropped():
    """A request with digits drops tools that take no arguments; one naming no value of a
    required enum drops that tool ("what is 17 times 25" -> get_time, convert_units)."""
    reg = Registry([clock, wait, convert])
    kept = [("clock", 0.5), ("wait", 0.4), ("convert", 0.3)]
    assert without_numbers("what is 17 times 25", kept, reg) == [("wait", 0.4), ("convert", 0.3)]
    assert without_numbers("what time is it", kept, reg) == [("clock", 0.5)]
    assert without_numbers("clock 5", [("clock", 0.5)], reg) == [("clock", 0.5)]  # never drops them all
    assert without_unnamed_enums("what is 17 times 25", kept, reg) == [("clock", 0.5), ("wait", 0.4)]
    assert without_unnamed_enums("convert 3 KM", kept, reg) == kept
    assert without_unnamed_enums("what", [("convert", 0.3)], reg) == [("convert", 0.3)]


@tool
def remind(text: str, when: str, unit: Literal["min", "h"] = "min") -> str:
    """Remind later."""
    return "ok"


def test_an_argument_that_repeats_a_later_one_is_redone():
    assert repeated(Registry([remind])["remind"], {"text": "10 minutes", "when": "10 Minutes "}) == [
        ("text", "text repeats when ('10 minutes'); give each its own words from the request")]
    assert repeated(Registry([remind])["remind"], {"text": "call Ana", "when": "10 minutes"}) == []
    assert repeated(Registry([remind])["remind"], {"text": "", "when": ""}) == []


def test_a_repeated_value_is_retried_and_kept_out_of_the_retry():
    """The call is retried, and the value that repeated another argument is recorded for the retry's grammar."""
    m = Scripted('{"name": "remind", "arguments": {"text": "10 minutes", "when": "10 minutes"}}',
                 '{"name": "remind", "arguments": {"text": "call Ana", "when": "10 minutes"}}', "Done.")
    res = call(m, "remind me to call Ana in 10 minutes", Registry([remind]), tool_choice="required", retrieve=False,
               execute=True, ground_strings=True, copy_spans=True)
    assert res.retried and res.avoid == {"remind": {"text": {"10 minutes"}}}
    assert res.failed == set()  # refused before it ran: the arguments' fault, the tool stays first
    assert res.calls[0].arguments == {"text": "call Ana", "when": "10 minutes"} and res.calls[0].error is None


def test_a_tool_with_no_phrase_left_goes_last_on_the_retry():
    """Its only phrase was refused (repeated in two arguments): the retry would give it again."""
    m = Scripted('{"name": "remind", "arguments": {"text": "what is 15 times 15", "when": "what is 15 times 15"}}',
                 '{"name": "add", "arguments": {"a": 15, "b": 15}}', "30")
    res = call(m, "what is 15 times 15", Registry([remind, add]), tool_choice="required", retrieve=False,
               execute=True, ground_strings=True, copy_spans=True)
    assert res.failed == {"remind"} and res.calls[0].result == 30


def test_a_tool_that_ran_and_failed_goes_last_on_the_retry():
    m = Scripted('{"name": "explode", "arguments": {"reason": "x"}}', '{"name": "add", "arguments": {"a": 1, "b": 2}}',
                 "3")
    res = call(m, "add 1 and 2", REG, tool_choice="required", retrieve=False, execute=True)
    assert res.failed == {"explode"} and res.calls[0].result == 3


def test_name_prior_follows_the_similarities_with_failed_tools_last():
    kept = [("a", 0.5), ("b", 0.45), ("c", 0.3)]
    assert name_prior(kept, 2.0) == pytest.approx({"a": 0.0, "b": -1.0, "c": -4.0})
    assert name_prior(kept, 2.0, {"a"}) == pytest.approx({"b": 0.0, "c": -3.0, "a": -5.0})
    assert name_prior(kept, 0.0) == {} and name_prior([("a", None), ("b", None)], 2.0) == {}


def test_select_fills_the_top_k_after_dropping_unfit_tools():
    reg = Registry([clock, wait, convert])
    opts = CallOptions(top_k=2, margin=None, threshold=None, ground_numbers=True, ground_enums=True)
    kept = [n for n, _ in select("what is 17 times 25", reg, opts)]
    assert kept == ["wait"]
    assert len(select("what is 17 times 25", reg, CallOptions(top_k=2, margin=None, threshold=None))) == 2


# -- the real model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    import edge

    m = edge.load(n_ctx=2048)
    yield m
    m.close()


@pytest.mark.slow
def test_smollm2_readme_snippet_states_the_sum(smol):
    """The README's snippet printed `42 17 + 25 = 32.`."""
    out = call(smol, "What is 17 plus 25?", Registry([add]), execute=True, tool_choice="required")
    assert out.calls[0].arguments == {"a": 17, "b": 25} and out.calls[0].result == 42
    assert "42" in out.answer and not set(re.findall(r"\d+", out.answer)) - {"42"}, out.answer


def test_free_text_copied_from_the_schema_is_not_a_valid_call():
    """The eval saw add_note(text="The note, in the user's words.") for "take a note: book the dentist"."""
    from edge.tools.call import ungrounded

    @tool
    def add_note(text: str, tag: str = "") -> str:
        """Save a note."""
        return text

    t = Registry([add_note])["add_note"]
    assert ungrounded(t, {"text": "The note, in the user's words."}, "take a note: book the dentist") == [
        "text: \"The note, in the user's words.\" is not from the request; copy the words the user wrote"]
    assert ungrounded(t, {"text": "book the dentist"}, "take a note: book the dentist") == []
    assert ungrounded(t, {"text": "12"}, "remember 12") == []
    assert ungrounded(t, {"text": ""}, "what is 15 plus 15") == [
        "text: '' is not from the request; copy the words the user wrote"]


def test_schema_keywords_from_annotated():
    @tool
    def calc(expression: Annotated[str, "The arithmetic.", {"pattern": "^[0-9+ ]+$"}]) -> int:
        """Add."""
        return 0

    assert Registry([calc])["calc"].parameters["properties"]["expression"] == {
        "type": "string", "description": "The arithmetic.", "pattern": "^[0-9+ ]+$"}


def test_paraphrased_free_text_stays_valid():
    from edge.tools.call import ungrounded

    t = Registry([items])["items"]
    assert ungrounded(t, {"kind": "buy milk"}, "I need to buy some milk") == []
    assert ungrounded(t, {"kind": "What to remind of, as the request says it."}, "remind me to call Ana") != []
