"""The assistant in a terminal: typed, spoken (push-to-talk) or from an audio file.

The microphone is checked before the model loads, so a machine without one
hears so at once; `--once --json` prints one turn as JSON for scripts.
"""
from __future__ import annotations

import json

import click

from edge.errors import InvalidOption

from . import speech
from .loop import Assistant, AssistantOptions, Turn

PROMPT = "you> "


def _print_turn_extras(turn: Turn) -> None:
    for call, result in zip(turn.tool_calls, turn.tool_results or [{}] * len(turn.tool_calls)):
        args = json.dumps(call["arguments"], ensure_ascii=False)
        shown = result.get("error") or json.dumps(result.get("result"), ensure_ascii=False, default=str)
        click.echo(f"  [{call['name']}({args}) -> {shown}]", err=True)


def _announce(turn: Turn) -> None:
    for alarm in turn.alarms:
        click.echo(f"* {alarm['kind'].capitalize()} due: {alarm['text']} ({alarm['due']})")


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
        while True:
            try:
                if voice:
                    text = _listen()
                    if not text:
                        click.echo("(heard nothing)", err=True)
                        continue
                    _one(a, text, text, as_json)
                else:
                    text = click.prompt(PROMPT.rstrip(), prompt_suffix=" ", default="", show_default=False)
                    if text.strip() in ("", "exit", "quit"):
                        if text.strip():
                            return
                        continue
                    _one(a, text, None, as_json)
            except (EOFError, click.exceptions.Abort):
                click.echo()
                return
            if once:
                return
