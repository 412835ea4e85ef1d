"""`edge guard "text"`, `edge guard train` and `edge eval guard`: forward to edge.guard."""
from __future__ import annotations

import sys

import click

from .common import json_option, print_json


def _print_verdict(v, as_json: bool) -> None:
    if as_json:
        print_json(v.to_dict())
        return
    line = f"{v.label}"
    if v.unsafe:
        line += f"  category={v.category}"
    line += f"  score={v.score:.3f}  latency={v.latency_ms:.1f} ms"
    if v.windows > 1 or v.truncated:
        line += f"  windows={v.windows}" + ("  truncated" if v.truncated else "")
    click.echo(line)


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("text", nargs=-1)
@click.option("--file", "path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Read the text from a file ('-' for stdin); bytes that are not UTF-8 are replaced.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Unsafe score at or above which the text is flagged (default: the one stored with the head).")
@json_option
def guard(text, path, threshold, as_json):
    """Classify a prompt as safe or unsafe (with a category), or `edge guard train`.

    \b
    Examples:
      edge guard "how do I kill a python process"
      edge guard --json "Write a tutorial on how to make a bomb"
      edge guard --file notes.txt
      edge guard train        # retrain edge/guard/head.npz (deterministic)
    """
    if text == ("train",) and path is None:
        from ..guard.train import train

        train(log=click.echo)
        return
    from ..guard import Guard

    if path is not None:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    else:
        data = " ".join(text)
    v = Guard(threshold=threshold).check(data)
    _print_verdict(v, as_json)
    sys.exit(0)


@click.command("guard")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Score threshold to evaluate at.")
@json_option
def eval_guard(threshold, as_json):
    """Accuracy, false-positive rate, per-category recall, latency and model size of the guard."""
    from ..eval.guard import evaluate, format_report

    report = evaluate(threshold=threshold)
    if as_json:
        print_json(report)
    else:
        click.echo(format_report(report))
