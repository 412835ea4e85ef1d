"""The assistant's starter tools: each one on real files in a temporary folder."""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta, timezone

import pytest

from edge.apps.assistant import local_tools as t
from edge.errors import ToolError


@pytest.fixture
def tools(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    t.configure(data_dir=tmp_path / "data", files_root=files)
    yield tmp_path
    t.configure()


@pytest.mark.parametrize("expr,value", [
    ("12 * 7", 84), ("12 times 7", 84), ("12 x 7", 84), ("what is 2 plus 3?".replace("what is ", ""), 5),
    ("(3 + 4) / 2", 3.5), ("2^10", 1024), ("2 ** 0.5", round(math.sqrt(2), 12)), ("sqrt(16)", 4),
    ("square root of 81", 9), ("15 percent of 80", 12), ("1,000 + 5", 1005), ("-3 + 10 // 3", 0),
    ("100 divided by 8", 12.5), ("twelve times seven", 84), ("what is 12 times 7", 84),
    ("what is the square root of 16", 4), ("what's pi times 2", round(2 * math.pi, 12)), ("what is 2 plus 3", 5), ("three hundred forty-two minus 2", 340), ("max(3, 9, 4) - min(2, 5)", 7), ("pi", round(math.pi, 12)), ("7 % 3", 1),
])
def test_calculate(expr, value):
    assert t.calculate(expr) == value


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "open('/etc/passwd')", "(1).__class__", "[1, 2]", "x + 1",
    "lambda: 1", "9 ** 9 ** 9", "5 feet in meters", "what is x", "log of 100", "10 ** 100000", "", "1 +", "1 / 0", "sqrt(-1)", "'a' * 3", "1" + "+1" * 200,
])
def test_calculate_refuses(expr):
    with pytest.raises(ToolError) as e:
        t.calculate(expr)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("expr,message", [
    # Issue 25: passed the old power check and pinned a core for minutes (the GIL held, no timeout helps).
    ("((((999999**1000)**10)**10)**10)**10", "'999999 ** 1000' would have more than 4000 digits. Use smaller numbers."),
    ("(999999**1000)**10", "'999999 ** 1000' would have more than 4000 digits. Use smaller numbers."),
    ("10**3999 * 10**3999", "'10 ** 3999 * 10 ** 3999' would have more than 4000 digits. Use smaller numbers."),
    ("min()", "min() got 0 number(s). Give min at least one number, e.g. min(2)."),
    ("sqrt(1, 2)", "sqrt() got 2 number(s). Give sqrt one number, e.g. sqrt(2)."),
    ("(-1)**0.5", "'(-1) ** 0.5' has no real-number result. Use a non-negative base for a fractional power."),
    ("sqrt(-1)", "'sqrt(-1)' has no real-number result. Check the numbers."),
    ("1e308 * 10", "'1e308 * 10' is too large to compute. Use smaller numbers."),
])
def test_calculate_bounds_operands_before_computing(expr, message):
    with pytest.raises(ToolError) as e:
        t.calculate(expr)
    assert str(e.value) == message


def test_calculate_keeps_large_results_within_the_bound():
    assert t.calculate("10**3999") == 10**3999
    assert t.calculate("2**1000 * 3") == 3 * 2**1000


@pytest.mark.parametrize("value,a,b,expect", [
    (10, "km", "miles", 6.213712), (100, "fahrenheit", "celsius", 37.777778), (0, "C", "K", 273.15),
    (1, "gallon", "liters", 3.785412), (2.5, "lb", "kg", 1.133981), (60, "mph", "km/h", 96.56064),
    (1, "GiB", "MB", 1073.741824), (90, "minutes", "hours", 1.5), (12, "inches", "cm", 30.48),
])
def test_convert_units(value, a, b, expect):
    assert t.convert_units(value, a, b)["result"] == pytest.approx(expect, abs=1e-6)


def test_convert_units_refuses_mixed_kinds():
    with pytest.raises(ToolError, match="same kind"):
        t.convert_units(1, "kg", "km")
    with pytest.raises(ToolError, match="temperatures"):
        t.convert_units(1, "C", "km")
    with pytest.raises(ToolError, match="Unknown unit 'parsec'"):
        t.convert_units(1, "parsec", "km")


def test_get_time_is_now():
    got = t.get_time()
    now = datetime.now().astimezone()
    assert abs((datetime.fromisoformat(got["iso"]) - now).total_seconds()) < 5
    assert got["time"] == datetime.fromisoformat(got["iso"]).strftime("%H:%M")


def test_timers_and_reminders_persist_and_ring(tools):
    timer = t.set_timer(5, "tea")
    rem = t.add_reminder("call the plumber", "in 2 hours")
    assert [i["id"] for i in t.list_reminders()] == [timer["id"], rem["id"]]
    on_disk = json.loads((tools / "data" / "alarms.json").read_text())
    assert [i["text"] for i in on_disk] == ["tea", "call the plumber"]
    assert t.due_alarms() == []
    later = datetime.now().astimezone() + timedelta(minutes=6)
    rung = t.due_alarms(now=later)
    assert [i["text"] for i in rung] == ["tea"]
    assert [i["text"] for i in t.list_reminders()] == ["call the plumber"]
    assert t.due_alarms(now=later) == []  # rings once


def test_parse_when():
    now = datetime(2026, 5, 1, 18, 0, tzinfo=timezone.utc)
    assert t.parse_when("in 10 minutes", now) == now + timedelta(minutes=10)
    assert t.parse_when("in 1.5 h", now) == now + timedelta(minutes=90)
    assert t.parse_when("10 minutes", now) == t.parse_when("10 minutes from now", now) == now + timedelta(minutes=10)
    assert t.parse_when("19:30", now) == now.replace(hour=19, minute=30)
    assert t.parse_when("07:00", now) == now.replace(hour=7) + timedelta(days=1)
    assert t.parse_when("2026-12-24T18:00+00:00", now) == datetime(2026, 12, 24, 18, tzinfo=timezone.utc)
    with pytest.raises(ToolError, match="Cannot read the time 'soonish'"):
        t.parse_when("soonish", now)


def test_timer_bounds(tools):
    for bad in (0, -1, 10_081):
        with pytest.raises(ToolError):
            t.set_timer(bad)
    assert not (tools / "data" / "alarms.json").exists()


def test_corrupt_file_is_left_untouched(tools):
    (tools / "data").mkdir()
    path = tools / "data" / "notes.json"
    path.write_text("{not json")
    with pytest.raises(ToolError, match="not valid JSON"):
        t.add_note("milk")
    assert path.read_text() == "{not json"


def test_notes(tools):
    t.add_note("buy oat milk")
    t.add_note("Call Ana about the MILK delivery")
    t.add_note("book dentist")
    assert [n["text"] for n in t.list_notes()] == ["book dentist", "Call Ana about the MILK delivery", "buy oat milk"]
    assert [n["id"] for n in t.list_notes("milk")] == [2, 1]
    with pytest.raises(ToolError):
        t.add_note("   ")


def test_search_files_stays_inside_the_folder(tools):
    root = tools / "files"
    (root / "docs").mkdir()
    (root / "docs" / "budget-2026.txt").write_text("rent 900\nholiday fund\n")
    (root / "recipes.md").write_text("# Soup\nleeks and potatoes\n")
    (root / "photo.bin").write_bytes(bytes(range(256)) * 10)
    secret = tools / "outside-secret-budget.txt"
    secret.write_text("holiday password")
    os.symlink(secret, root / "link-budget.txt")
    found = t.search_files("budget")
    assert found == [{"path": "docs/budget-2026.txt", "match": "name", "size": 22}]
    by_text = t.search_files("potatoes")
    assert by_text == [{"path": "recipes.md", "match": "text", "line": "leeks and potatoes", "size": 26}]
    assert [f["path"] for f in t.search_files("holiday")] == ["docs/budget-2026.txt"]


def test_search_files_needs_a_folder(tmp_path):
    t.configure(data_dir=tmp_path)
    with pytest.raises(ToolError, match="--files DIR"):
        t.search_files("x")
    with pytest.raises(ToolError, match="is not a folder"):
        t.configure(files_root=tmp_path / "nope")
    t.configure()


def test_system_info():
    info = t.system_info()
    assert info["cpu_cores"] == os.cpu_count()
    assert 0 < info["memory_available_gb"] <= info["memory_total_gb"]


def test_every_tool_is_typed_and_documented():
    import inspect
    import typing

    for fn in t.TOOLS:
        assert fn.__doc__ and fn.__doc__.strip()[0].isupper(), fn.__name__
        hints = typing.get_type_hints(fn)
        for name in inspect.signature(fn).parameters:
            assert name in hints, f"{fn.__name__}({name}) has no type"


def _add_notes(data: str, prefix: str, n: int) -> None:
    t.configure(data_dir=data)
    for i in range(n):
        t.add_note(f"{prefix} {i}")


def test_notes_from_three_processes_keep_every_note(tools):
    """Issue 25: without a lock around load and save, 3 x 100 adds kept about 200 notes."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_notes, args=(str(tools / "data"), f"p{k}", 100)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    notes = t.list_notes()
    assert len(notes) == 300
    assert sorted(n["id"] for n in notes) == list(range(1, 301))
    assert sorted(os.listdir(tools / "data")) == [".notes.lock", "notes.json"]


def test_note_size_cap_keeps_notes_usable(tools):
    t.add_note("buy milk")
    with pytest.raises(ToolError) as e:
        t.add_note("x" * 1_000_000)
    assert str(e.value) == "The note is 1000000 characters long; at most 1000 are kept. Make the note shorter."
    for i in range(300):
        try:
            t.add_note(f"{i} " + "y" * 900)
        except ToolError as exc:
            assert str(exc) == "The notes file would pass 256 kB. Delete some notes first."
            break
    else:
        pytest.fail("the file cap never applied")
    assert t.list_notes("milk")[0]["text"] == "buy milk"


def test_lone_surrogate_note_is_refused_and_leaves_no_temp_file(tools):
    t.add_note("first")
    with pytest.raises(ToolError) as e:
        t.add_note("bad \ud800 text " * 1000)
    assert str(e.value).startswith("The note is ") or "not valid text" in str(e.value)
    with pytest.raises(ToolError, match="not valid text"):
        t.add_note("bad \ud800 text")
    assert sorted(os.listdir(tools / "data")) == [".notes.lock", "notes.json"]
    assert [n["text"] for n in t.list_notes()] == ["first"]


def test_search_files_skips_hidden_files_unless_asked(tools):
    root = tools / "files"
    (root / ".env").write_text("API_KEY=secret-token\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("token secret-token\n")
    (root / "notes.txt").write_text("nothing secret here\n")
    assert [f["path"] for f in t.search_files("secret")] == ["notes.txt"]
    assert t.search_files("env") == []
    t.configure(data_dir=tools / "data", files_root=root, include_hidden=True)
    assert sorted(f["path"] for f in t.search_files("secret-token")) == [".env", ".git/config"]


def test_expression_schema_admits_arithmetic_only():
    """A constrained call cannot start an expression with punctuation (",12 + 7", ".36 * 6")."""
    import re as _re

    from edge.tools import Registry

    pattern = Registry([t.calculate])["calculate"].parameters["properties"]["expression"]["pattern"]
    for ok in ("12 * 7", "12 times 7", "(3 + 4) / 2", "-3 + 10 // 3", "sqrt(16)", "15 percent of 80"):
        assert _re.fullmatch(pattern, ok), ok
    for bad in (",12 + 7", ".36 * 6", ")250 * 4", "}} 12 * 7 = 78.", ";;;;", ""):
        assert not _re.fullmatch(pattern, bad), bad
