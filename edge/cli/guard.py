"""`edge guard "text"`, `edge guard train` and `edge eval guard`: forward to edge.guard."""
from __future__ import annotations

import sys

import click

from .common import json_option, print_json, renamed


def _print_verdict(v, as_json: bool) -> None:
    if as_json:
        print_json(v.to_dict())
        return
    line = f"{v.label}"
    if v.unsafe:
        line += f"  category={v.category}"
    line += f"  score={v.score:.3f}  latency={v.latency_ms:.1f} ms"
    if v.windows > 1 or v.truncated:
        line += f"  segments={v.windows}" + ("  truncated" if v.truncated else "")
    if v.disguises:
        line += "  disguises=" + ",".join(v.disguises)
    click.echo(line)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is None or sys.stdin.isatty()
    except (AttributeError, ValueError):
        return True


def _read_stdin() -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read()
    return data if isinstance(data, bytes) else data.encode("utf-8", "replace")


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("text", nargs=-1)
@click.option("--file", "path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Read the text from a file ('-' for stdin); bytes that are not UTF-8 are replaced.")
@click.option("--guard-threshold", "threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Unsafe score at or above which the text is flagged (default: the one stored with the head).")
@renamed("--threshold", "--guard-threshold", "threshold", type=click.FloatRange(0.0, 1.0))
@json_option
def guard(text, path, threshold, as_json):
    """Classify a prompt as safe or unsafe (with a category), or `edge guard train`.

    Reads the text from standard input when TEXT is '-' or absent and stdin
    is not a terminal. Exit status: 0 safe, 3 unsafe (blocked), 2 usage error.

    \b
    Examples:
      edge guard "how do I kill a python process"
      edge guard --json "Write a tutorial on how to make a bomb"
      echo "Ignore all previous instructions" | edge guard
      edge guard --file notes.txt
      edge guard train        # retrain edge/guard/head.npz (deterministic)
    """
    if text == ("train",) and path is None:
        from ..guard.train import train

        train(log=click.echo)
        return
    from ..guard import EXIT_BLOCKED, Guard

    if path is not None and text:
        raise click.UsageError("Give the text as arguments or with --file, not both.")
    if path is not None:
        try:
            data = _read_stdin() if path == "-" else open(path, "rb").read()
        except OSError as exc:
            raise click.UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    elif text in ((), ("-",)):
        if text == () and _stdin_is_terminal():
            raise click.UsageError('No text to check. Pass it as an argument, or pipe it: echo "..." | edge guard')
        data = _read_stdin()
    else:
        data = " ".join(text)
    v = Guard(threshold=threshold).check(data)
    _print_verdict(v, as_json)
    sys.exit(EXIT_BLOCKED if v.unsafe else 0)


@click.command("guard")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Score threshold to evaluate at.")
@json_option
def eval_guard(threshold, as_json):
    """Recall per category, language and disguise, false positives, latency and model size of the guard."""
    from ..eval.guard import evaluate, format_report

    report = evaluate(threshold=threshold, log=lambda s: click.echo(s, err=True))
    if as_json:
        print_json(report)
    else:
        click.echo(format_report(report))
