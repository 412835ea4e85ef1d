"""The typed assistant session: banner, /help, timers announced while idle, and a
turn that fails does not end the session (a stand-in assistant; no model)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from edge.apps.assistant import local_tools, session
from edge.apps.assistant.loop import Turn
from edge.errors import ToolError
from edge.tools import Registry


class FakeAssistant:
    def __init__(self, alarms=()):
        self.model = SimpleNamespace(name="smollm2-135m-instruct", backend_name="llama.cpp")
        self.guard = object()
        self.registry = Registry([local_tools.get_time, local_tools.calculate])
        self.alarms = list(alarms)
        self.asked = []

    def due(self):
        out, self.alarms = self.alarms, []
        return out

    def ask(self, text, on_text=None, transcript=None):
        self.asked.append(text)
        if text == "boom":
            raise ToolError("The request is empty.", "Type or say what you want.")
        on_text("84")
        return Turn(request=text, answer="84")


def test_banner_names_model_backend_tools_and_help():
    """Issue 26.7: the assistant started with a bare `you>`."""
    assert session.banner(FakeAssistant()) == (
        "edge assistant: smollm2-135m-instruct on llama.cpp, guard on\n"
        "tools: get_time, calculate\n"
        "Type a request, /help for help, /exit to quit.")


def test_typed_loop_help_turns_errors_and_exit(monkeypatch, capsys):
    lines = iter(["/help", "what is 12 times 7", "boom", "/exit", "never read"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    a = FakeAssistant()
    session._typed_loop(a, as_json=False)
    out = capsys.readouterr()
    assert out.out == session.banner(a) + "\n" + session.HELP + "\n84\n"
    assert out.err == "Error: The request is empty. Type or say what you want.\n"
    assert a.asked == ["what is 12 times 7", "boom"]


def test_due_timer_is_announced_while_the_prompt_waits():
    """Issue 26.7: a due timer was announced only after the next input."""
    alarm = {"kind": "timer", "text": "tea", "due": "2026-12-01T12:00:00+00:00"}
    out = io.StringIO()
    watcher = session.AlarmWatcher(FakeAssistant([alarm]), out=out, poll_s=0.01)
    assert watcher.check() == [alarm]
    assert out.getvalue() == "\r\x1b[K* Timer due: tea (2026-12-01T12:00:00+00:00)\nyou> "
    assert watcher.check() == []  # announced once


def test_watcher_thread_announces_without_input():
    import threading

    alarm = {"kind": "reminder", "text": "call Ana", "due": "2026-12-01T12:00:00+00:00"}
    shown = threading.Event()

    class Out(io.StringIO):
        def flush(self):
            shown.set()

    out = Out()
    watcher = session.AlarmWatcher(FakeAssistant([alarm]), out=out, poll_s=0.01).start()
    try:
        assert shown.wait(10)
    finally:
        watcher.stop()
    assert "* Reminder due: call Ana" in out.getvalue()


def test_watcher_waits_while_a_turn_runs():
    alarm = {"kind": "timer", "text": "tea", "due": "2026-12-01T12:00:00+00:00"}
    out = io.StringIO()
    watcher = session.AlarmWatcher(FakeAssistant([alarm]), out=out, poll_s=0.01)
    with watcher.busy:
        assert watcher.check() == [] and out.getvalue() == ""
    assert watcher.check() == [alarm]


def test_readline_history_is_kept_in_the_data_folder(tmp_path):
    rl = pytest.importorskip("readline")
    local_tools.configure(data_dir=tmp_path)
    try:
        got = session.setup_readline()
        assert got is rl
        rl.add_history("what is 12 times 7")
        session.save_history(got)
        assert "what is 12 times 7" in (tmp_path / "history").read_text()
    finally:
        local_tools.configure()
