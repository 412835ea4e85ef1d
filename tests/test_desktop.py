"""The desktop chat window, headless under Xvfb: a streamed answer appears, Stop works.

Xvfb picks a free display itself (-displayfd). A screenshot of the window
is saved to test-output/ for a person to look at.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from test_server_api import tiny_model

tk = pytest.importorskip("tkinter")

from edge.apps.desktop.chat import DONE, ChatSettings, ChatWindow  # noqa: E402


@pytest.fixture(scope="module")
def display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install -y xvfb)")
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    yield f":{number}"
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
    proc.terminate()
    proc.wait(timeout=10)


def pump(root, until, timeout: float = 600.0) -> None:
    """Run the Tk event loop until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the window did not get there in time"
        root.update()
        time.sleep(0.005)


def open_window(settings, load=None):
    root = tk.Tk()
    win = ChatWindow(root, settings, load=load)
    done = []
    win.listeners.append(lambda kind, value: done.append(value) if kind == DONE else None)
    pump(root, lambda: not win.busy)
    return root, win, done


def transcript(win) -> str:
    return win.text.get("1.0", "end")


def screenshot(root, display: str, path) -> None:
    from PIL import ImageGrab

    root.update()
    x, y = root.winfo_rootx(), root.winfo_rooty()
    img = ImageGrab.grab(bbox=(x, y, x + root.winfo_width(), y + root.winfo_height()), xdisplay=display)
    img.save(path)
    assert len(img.getcolors(1 << 16) or range(1 << 16)) > 8  # text drawn, not a blank rectangle


def test_reply_streams_in_and_stop_interrupts(display):
    model = tiny_model(delay_s=0.01)
    root, win, done = open_window(ChatSettings(max_tokens=30, temperature=0), load=lambda: model)
    try:
        assert win.status.get() == "Ready: tiny on tiny"
        assert win.send("Hello there")
        ticks = win.ticks
        pump(root, lambda: done)
        reply = "".join(win.reply)
        assert len(reply.encode()) == 30 and win.updates > 1
        assert win.ticks - ticks > 2  # the UI kept running while the model worked
        assert f"You: Hello there\nAssistant: {reply}\n" in transcript(win)
        assert win.history[-1] == {"role": "assistant", "content": reply}

        slow = ChatSettings(max_tokens=500, temperature=0)
        win.settings = slow
        model.backend.delay_s = 0.05
        assert win.send("Again")
        assert not win.send("ignored while busy")
        pump(root, lambda: win.updates > 32)
        win.stop_button.invoke()
        pump(root, lambda: len(done) == 2)
        assert done[-1] == "stopped" and len(win.reply) < 100
        assert str(win.send_button["state"]) == "normal"
    finally:
        root.destroy()


def test_window_loads_the_model_with_the_guard_on(display, monkeypatch):
    import edge

    seen = []
    model = tiny_model()
    monkeypatch.setattr(edge, "load", lambda *a, **kw: seen.append((a, kw)) or model)
    root, win, _ = open_window(ChatSettings())
    root.destroy()
    root, win, _ = open_window(ChatSettings(guard=False))
    root.destroy()
    assert [kw for _, kw in seen] == [{"guard": True}, {"guard": False}]


def test_guard_flag_on_the_command_line(monkeypatch):
    import argparse

    from edge.apps.desktop import chat

    parse = argparse.ArgumentParser.parse_args
    parsed = []

    def capture(self, args=None, namespace=None):
        parsed.append(parse(self, args, namespace).guard)
        raise SystemExit(0)  # stop before a window opens

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    for argv in ([], ["--no-guard"], ["--guard"]):
        with pytest.raises(SystemExit):
            chat.main(argv)
    assert parsed == [True, False, True]


@pytest.mark.slow
def test_smollm2_answer_appears_and_screenshot(display, output_dir):
    root, win, done = open_window(ChatSettings(max_tokens=16, temperature=0))
    try:
        assert win.status.get().startswith("Ready: smollm2-135m-instruct")
        win.entry.insert(0, "What is the capital of France?")
        win.send_button.invoke()
        pump(root, lambda: done)
        reply = "".join(win.reply)
        assert "Paris" in reply and win.updates > 1
        assert reply in transcript(win)
        assert "tok/s" in win.status.get()
        path = output_dir / "desktop_chat.png"
        screenshot(root, display, path)
        assert path.stat().st_size > 1000
    finally:
        root.destroy()
