"""`edge eval`: benchmark evaluations, each a lazily imported subcommand."""
from __future__ import annotations

import click

from . import LazyGroup

EVALS = {
    "bfcl": ("edge.cli.tools:eval_bfcl", "Function-calling accuracy on BFCL categories."),
    "guard": ("edge.cli.guard:eval_guard", "Prompt-guard accuracy, false positives and latency."),
    "tools": ("edge.cli.tools:eval_tools", "Assistant tool calls and grounded answers on requests with known results."),
}


@click.group(cls=LazyGroup, table=EVALS)
def eval_group():
    """Evaluations that print accuracy tables (benchmarks, not tests)."""
