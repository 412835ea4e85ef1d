"""The `edge` command line: a thin click group over the library.

Commands are listed in one table and imported only when invoked, so
`edge --help` starts fast on a Raspberry Pi. `EdgeError`s become one-line
click errors here, at the boundary, and nowhere else.
"""
from __future__ import annotations

import importlib
import json
import sys

import click

from ..errors import EdgeError

# name -> ("module:function", one-line help shown by `edge --help`)
COMMANDS = {
    "run": ("edge.cli.generate:run", "Generate a reply to one prompt, streaming."),
    "chat": ("edge.cli.generate:chat", "Chat interactively with a model."),
    "models": ("edge.cli.models:models", "List models in the store."),
    "import": ("edge.cli.models:import_cmd", "Register a local GGUF file or Hugging Face folder."),
    "pull": ("edge.cli.hub:pull", "Download a model from Hugging Face and make it runnable."),
    "rm": ("edge.cli.models:rm", "Remove a model, or one artifact (name:quant), from the store."),
    "doctor": ("edge.cli.doctor:doctor", "Probe this device and the installed backends."),
    "which": ("edge.cli.select:which", "Show which backend and artifact would run a model, and why."),
    "tune": ("edge.cli.select:tune", "Measure the candidate backends and cache the fastest."),
    "convert": ("edge.cli.convert:convert", "Convert a model to GGUF, ONNX and MLX with quality checks."),
    "call": ("edge.cli.tools:call", "Pick tools for a query and make a schema-valid call."),
    "guard": ("edge.cli.guard:guard", "Classify a prompt as safe or unsafe."),
    "eval": ("edge.cli.eval:eval_group", "Evaluations: bfcl (function calling), guard."),
    "serve": ("edge.cli.serve:serve", "Serve an OpenAI-compatible API on this machine."),
    "assistant": ("edge.cli.apps:assistant", "A local assistant with tools, text or voice."),
    "deploy": ("edge.cli.apps:deploy", "Deploy a model and server to a Raspberry Pi."),
    "export": ("edge.cli.apps:export", "Export a model for a phone runtime."),
    "bench": ("edge.cli.bench:bench", "Benchmark formats, quants and backends on this device."),
    "worker": ("edge.cli.worker:worker", "Lend this device's memory and CPU to another edge (llama.cpp RPC)."),
}


class LazyGroup(click.Group):
    def __init__(self, *args, table: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table

    def list_commands(self, ctx):
        return list(self.table)

    def get_command(self, ctx, name):
        if name not in self.table:
            return None
        target, _ = self.table[name]
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise click.ClickException(f"The '{name}' command is unavailable: {exc}")

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in self.table.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        # `--json` anywhere in the command's own arguments asks for machine output, errors included.
        as_json = "--json" in ctx.args
        try:
            return super().invoke(ctx)
        except EdgeError as exc:
            if as_json:
                click.echo(json.dumps({"error": {"type": type(exc).__name__, "message": exc.message,
                                                 "hint": exc.hint, "exit_code": exc.exit_code}}))
                sys.exit(exc.exit_code)
            err = click.ClickException(str(exc))
            err.exit_code = exc.exit_code
            raise err from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, table=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge")
def cli():
    """edge: run small language models on this device.

    \b
    Quick start:
      edge run "What is the capital of France?"
      edge chat
      edge doctor
    """


def main():
    cli(prog_name="edge")
