"""`edge serve`: the OpenAI-compatible server on this machine.

Only forwards options to `edge.server.serve`; the help texts come from
ServerOptions' fields.
"""
from __future__ import annotations

from dataclasses import fields

import click

from ..server.options import DEFAULT_PORT, LOOPBACK, ServerOptions
from .common import backend_option, load_options, model_option, split


def _help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(ServerOptions) if f.name == name)


@click.command("serve")
@model_option
@backend_option
@click.option("--host", default=LOOPBACK, show_default=True, help=_help("host"))
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help=_help("port"))
@click.option("--api-key", envvar="EDGE_API_KEY", default=None, help=_help("api_key") + " Also read from EDGE_API_KEY.")
@click.option("--cors", multiple=True, metavar="ORIGIN", help=_help("cors") + " Repeatable.")
@click.option("--queue-size", type=int, default=None, help=_help("queue_size"))
@click.option("--max-body", "max_body_bytes", type=int, default=None, help=_help("max_body_bytes"))
@click.option("--max-tokens", type=int, default=None, help=_help("max_tokens"))
@click.option("--guard/--no-guard", "guard", default=True, help=_help("guard"))
@click.option("--guard-threshold", type=float, default=None, help=_help("guard_threshold"))
@click.option("--embeddings/--no-embeddings", default=True, help=_help("embeddings"))
@click.option("--schema-max-bytes", type=int, default=None, help=_help("schema_max_bytes"))
@click.option("--schema-max-enum", type=int, default=None, help=_help("schema_max_enum"))
@click.option("--grammar-timeout", "grammar_timeout_s", type=float, default=None, help=_help("grammar_timeout_s"))
@click.option("--name", "served_name", default=None, help=_help("served_name"))
@click.option("-np", "--parallel", type=int, default=0, show_default=True,
              help="Requests decoded together in one batch, each with its own --ctx context (backends that "
                   "batch: llama.cpp); 0: the device's default (4 on laptops, 1 on a Pi Zero).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level.")
@load_options
def serve(model, backend, log_level, **kwargs):
    """Serve an OpenAI-compatible API (chat, completions, embeddings) for one model.

    \b
    Examples:
      edge serve                       # SmolLM2 on http://127.0.0.1:8080/v1
      edge serve --port 9000 --api-key secret
      edge serve --parallel 8          # eight requests decoded together
      curl http://127.0.0.1:8080/v1/models
    """
    from ..server import run

    server_names = {f.name for f in fields(ServerOptions)}
    options = ServerOptions(**{k: v for k, v in kwargs.items() if k in server_names and v is not None})
    _, load = split(kwargs)
    if options.host not in (LOOPBACK, "localhost", "::1") and not options.api_key:
        click.echo(f"Warning: listening on {options.host} without --api-key; anyone who can reach this "
                   "port can use the model.", err=True)

    def ready(loaded, opts):
        click.echo(f"Serving {opts.served_name or loaded.name} ({loaded.backend_name}) on "
                   f"http://{opts.host}:{opts.port}/v1  (Ctrl-C to stop)", err=True)

    run.serve(model, backend, options, log_level=log_level, on_ready=ready, **load)
