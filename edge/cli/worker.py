"""`edge worker`: lend this device's memory and CPU to another edge (llama.cpp RPC)."""
from __future__ import annotations

from dataclasses import fields

import click

from ..rpc.worker import WorkerOptions


def _help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(WorkerOptions) if f.name == name)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help=_help("host"))
@click.option("--port", type=int, default=WorkerOptions.port, show_default=True, help=_help("port"))
@click.option("--threads", type=int, default=None, help=_help("threads"))
@click.option("--mem", type=int, default=None, metavar="MB", help=_help("mem"))
@click.option("--cache", default=None, metavar="DIR", help=_help("cache"))
@click.option("--i-understand-no-auth", is_flag=True, help=_help("i_understand_no_auth"))
def worker(**kw):
    """Lend this device's memory and CPU to another edge that splits a model (`--rpc HOST:PORT`).

    \b
    Runs llama.cpp's RPC server until stopped. It has no authentication:
    it listens on 127.0.0.1 unless --host says otherwise, and a non-loopback
    address also needs --i-understand-no-auth.
    """
    from ..rpc.worker import serve

    serve(WorkerOptions(**kw), announce=lambda msg: click.echo(msg, err=True))
