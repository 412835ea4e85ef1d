"""The assistant in a terminal: typed, spoken (push-to-talk) or from an audio file.

The microphone is checked before the model loads, so a machine without one
hears so at once; `--once --json` prints one turn as JSON for scripts.
Typed sessions open with a banner, have line editing and history (readline),
and a background thread announces timers and reminders when they come due,
even while the prompt waits.
"""
from __future__ import annotations

import json
import sys
import threading

import click

from edge.errors import EdgeError, InvalidOption

from . import speech
from .loop import Assistant, AssistantOptions, Turn

PROMPT = "you> "
# Seconds between checks for due timers while the prompt waits.
ALARM_POLL_S = 1.0
HELP = """Type a request, e.g. "what is 12 times 7", "set a timer for 5 minutes", "what timers do I have?".
Commands: /help (this text), /tools (the tools), /exit (quit; also Ctrl-D)."""


def banner(a: Assistant) -> str:
    """What the session runs: model, backend, tools, and where help is."""
    m = a.model
    name = getattr(m, "name", "model")
    backend = getattr(m, "backend_name", None) or getattr(getattr(m, "backend", None), "name", "?")
    guard = "on" if a.guard is not None else "off"
    return (f"edge assistant: {name} on {backend}, guard {guard}\n"
            f"tools: {', '.join(a.registry.names)}\n"
            "Type a request, /help for help, /exit to quit.")


def _history_file():
    from edge.apps.assistant.local_tools import data_dir

    return data_dir() / "history"


def setup_readline():
    """Line editing and history for input() where readline exists (not on every platform)."""
    try:
        import readline
    except ImportError:
        return None
    path = _history_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            readline.read_history_file(str(path))
    except OSError:
        pass
    readline.set_history_length(1000)
    return readline


def save_history(readline) -> None:
    if readline is None:
        return
    try:
        readline.write_history_file(str(_history_file()))
    except OSError:
        pass


class AlarmWatcher:
    """A daemon thread that prints due timers and reminders above the waiting prompt.

    `busy` is held while a turn runs, so an announcement never cuts into a
    streamed answer (the turn announces what came due itself).
    """

    def __init__(self, a: Assistant, out=None, poll_s: float = ALARM_POLL_S, readline=None):
        self.a, self.poll_s, self.readline = a, poll_s, readline
        self.out = out or sys.stdout
        self.busy = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assistant-alarms", daemon=True)

    def start(self) -> "AlarmWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * self.poll_s + 1)

    def check(self) -> list[dict]:
        """Announce what is due now (unless a turn is running); returns what was announced."""
        if not self.busy.acquire(blocking=False):
            return []
        try:
            due = self.a.due()
            if due:
                line = self.readline.get_line_buffer() if self.readline is not None else ""
                # Clear the prompt line, print above it, then redraw the prompt and what was typed.
                self.out.write("\r\x1b[K" + "".join(alarm_line(x) + "\n" for x in due) + PROMPT + line)
                self.out.flush()
            return due
        finally:
            self.busy.release()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must never take the session down
                continue


def alarm_line(alarm: dict) -> str:
    return f"* {alarm['kind'].capitalize()} due: {alarm['text']} ({alarm['due']})"


def _print_turn_extras(turn: Turn) -> None:
    for call, result in zip(turn.tool_calls, turn.tool_results or [{}] * len(turn.tool_calls)):
        args = json.dumps(call["arguments"], ensure_ascii=False)
        shown = result.get("error") or json.dumps(result.get("result"), ensure_ascii=False, default=str)
        click.echo(f"  [{call['name']}({args}) -> {shown}]", err=True)


def _announce(turn: Turn) -> None:
    for alarm in turn.alarms:
        click.echo(alarm_line(alarm))


def _one(a: Assistant, text: str, transcript: str | None, as_json: bool) -> Turn:
    if as_json:
        turn = a.ask(text, transcript=transcript)
        click.echo(json.dumps(turn.to_dict(), indent=2, ensure_ascii=False, default=str))
        return turn
    if transcript is not None:
        click.echo(f"heard: {transcript}", err=True)
    turn = a.ask(text, on_text=lambda s: click.echo(s, nl=False), transcript=transcript)
    click.echo()
    _announce(turn)
    _print_turn_extras(turn)
    return turn


def _listen() -> str:
    audio = speech.record(lambda: click.prompt("[Enter] to talk", default="", show_default=False, prompt_suffix=""),
                          lambda: click.prompt("recording... [Enter] to stop", default="", show_default=False,
                                               prompt_suffix=""))
    return speech.transcribe(audio)


def main(opts: AssistantOptions, request: str | None = None, audio_file: str | None = None, voice: bool = False,
         once: bool = False, as_json: bool = False) -> None:
    if voice and audio_file:
        raise InvalidOption("Pass either --voice or --audio-file, not both.")
    if voice:
        speech.check_microphone()
    transcript = None
    if audio_file:
        transcript = speech.transcribe(audio_file)
        if not transcript:
            raise InvalidOption(f"No speech was heard in {audio_file}.", "Record the request again, closer to the microphone.")
        request = transcript
    if once and not request and not voice:
        raise InvalidOption("--once needs a request.", "Pass it as an argument, or use --audio-file x.wav.")
    with Assistant(opts) as a:
        if request:
            _one(a, request, transcript, as_json)
            if once or audio_file:
                return
        if voice:
            _voice_loop(a, as_json)
        else:
            _typed_loop(a, as_json)


def _voice_loop(a: Assistant, as_json: bool) -> None:
    while True:
        try:
            text = _listen()
        except (EOFError, click.exceptions.Abort):
            click.echo()
            return
        if not text:
            click.echo("(heard nothing)", err=True)
            continue
        _one(a, text, text, as_json)


def _typed_loop(a: Assistant, as_json: bool) -> None:
    click.echo(banner(a))
    rl = setup_readline() if sys.stdin.isatty() else None
    watcher = AlarmWatcher(a, readline=rl).start()
    try:
        while True:
            try:
                text = input(PROMPT).strip()
            except (EOFError, KeyboardInterrupt):
                click.echo()
                return
            if not text:
                continue
            if text in ("/exit", "/quit", "exit", "quit"):
                return
            if text == "/help":
                click.echo(HELP)
                continue
            if text == "/tools":
                for t in a.registry:
                    click.echo(f"  {t.name}: {t.description}")
                continue
            with watcher.busy:
                try:
                    _one(a, text, None, as_json)
                except EdgeError as exc:  # a turn's failure is reported; the session goes on
                    click.echo(f"Error: {exc}", err=True)
    finally:
        watcher.stop()
        save_history(rl)
