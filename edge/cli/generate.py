"""`edge run` and `edge chat`: generation from the terminal, streaming."""
from __future__ import annotations

import sys

import click

from .common import (backend_option, generation_options, guard_options, json_option, load_options,
                     model_option, print_json, split)


def _load(model, backend, load, guard, guard_threshold):
    import edge

    g = guard_threshold if (guard and guard_threshold is not None) else guard
    return edge.load(model, backend, guard=g, **load)


def _result(m, text: str) -> dict:
    s = m.stats
    return {
        "text": text, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
        "ttft_s": round(s.ttft_s, 4), "decode_tok_s": round(s.decode_tok_s, 2),
        "finish_reason": s.finish_reason, "backend": m.backend_name, "model": m.name,
        "artifact": m.artifact.label, "devices": m.devices,
        "blocked": bool(m.last_verdict and m.last_verdict.unsafe),
        "guard": m.last_verdict.to_dict() if m.last_verdict else None,
    }


@click.command()
@click.argument("prompt", nargs=-1)
@model_option
@backend_option
@click.option("-s", "--system", default=None, help="System prompt (default: the model's own).")
@click.option("--raw", is_flag=True, help="Complete the prompt as is, without the chat template.")
@generation_options
@load_options
@guard_options
@json_option
def run(prompt, model, backend, system, raw, as_json, guard, guard_threshold, **kw):
    """Generate a reply to PROMPT, streaming it token by token.

    Reads the prompt from standard input when PROMPT is '-' or absent.
    Exits with status 3 when the prompt guard blocks the prompt (or the -s system prompt).
    """
    text = " ".join(prompt)
    if text in ("", "-") and not sys.stdin.isatty():
        text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("The prompt is empty. Pass some text: edge run \"your question\"")
    gen, load = split(kw)
    m = _load(model, backend, load, guard, guard_threshold)
    if raw:
        pieces = m.stream(text, **gen)
    else:
        pieces = m.stream_chat([{"role": "user", "content": text}], system=system, **gen)
    out = []
    for piece in pieces:
        out.append(piece)
        if not as_json:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    if as_json:
        print_json(_result(m, "".join(out)))
    else:
        click.echo()
    if m.last_verdict is not None and m.last_verdict.unsafe:
        from ..guard import EXIT_BLOCKED

        sys.exit(EXIT_BLOCKED)  # the guard blocked the prompt: the reply was its refusal


CHAT_HELP = "Commands: /clear forgets the conversation, /system TEXT sets the system prompt, /stats shows speed, /bye exits."


@click.command()
@model_option
@backend_option
@click.option("-s", "--system", default=None, help="System prompt (default: the model's own).")
@generation_options
@load_options
@guard_options
def chat(model, backend, system, guard, guard_threshold, **kw):
    """Chat with a model in the terminal (multi-turn, streaming)."""
    from ..errors import ContextTooLong

    gen, load = split(kw)
    m = _load(model, backend, load, guard, guard_threshold)
    click.echo(f"{m.name} on {m.backend_name} ({m.artifact.format}-{m.artifact.quant}). {CHAT_HELP}", err=True)
    if m.devices:
        from ..select import describe_split

        click.echo(describe_split(m.devices), err=True)
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    history: list[dict] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo()
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/bye", "/exit", "/quit"):
            return
        if line == "/clear":
            history.clear()
            click.echo("(conversation cleared)")
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            click.echo(f"(system prompt {'set' if system else 'reset to the default'})")
            continue
        if line == "/stats":
            s = m.stats
            click.echo(f"prompt {s.prompt_tokens} tok, reply {s.completion_tokens} tok, "
                       f"first token {s.ttft_s * 1000:.0f} ms, {s.decode_tok_s:.1f} tok/s")
            continue
        if line.startswith("/"):
            click.echo(CHAT_HELP)
            continue
        history.append({"role": "user", "content": line})
        reply = []
        try:
            for piece in m.stream_chat(history, system=system, **gen):
                reply.append(piece)
                click.echo(piece, nl=False)
                sys.stdout.flush()
        except ContextTooLong as exc:
            history.pop()
            click.echo(f"\n{exc} Type /clear to start over.", err=True)
            continue
        except KeyboardInterrupt:
            click.echo("\n(interrupted)", err=True)
        click.echo()
        history.append({"role": "assistant", "content": "".join(reply)})
