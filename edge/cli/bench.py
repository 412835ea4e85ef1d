"""`edge bench`: forwards its flags to edge.bench.matrix and prints the report."""
from __future__ import annotations

from dataclasses import fields

import click

from .common import print_json, renamed


def _help(name: str) -> str:
    from ..bench.matrix import BenchOptions

    return next(f.metadata["help"] for f in fields(BenchOptions) if f.name == name)


@click.command()
@click.option("-m", "--model", default=None, help=_help("model"))
@click.option("--to", "formats", default=None, metavar="FORMATS", help=_help("formats"))
@click.option("--quant", "quants", default=None, metavar="FORMAT=QUANT,...", help=_help("quants"))
@click.option("--backends", default=None, help=_help("backends"))
@click.option("--prompt-tokens", type=int, default=512, show_default=True, help=_help("prompt_tokens"))
@click.option("--gen-tokens", type=int, default=128, show_default=True, help=_help("gen_tokens"))
@click.option("--repetitions", type=int, default=3, show_default=True, help=_help("repetitions"))
@click.option("--threads", type=int, default=None, help=_help("threads"))
@click.option("--out", "json_path", default=None, metavar="PATH", help=_help("json"))
@click.option("--csv", "csv_path", default=None, metavar="PATH", help=_help("csv"))
@click.option("--plot", default=None, metavar="PATH", help=_help("plot"))
@click.option("--anchor", is_flag=True, help=_help("anchor"))
@click.option("--min-agreement", "threshold", type=float, default=0.90, show_default=True, help=_help("threshold"))
@click.option("--allow-below-threshold", is_flag=True, help=_help("allow_below_threshold"))
@click.option("--no-convert", is_flag=True, help="Measure only the artifacts that exist; convert nothing.")
@click.option("--no-quality", is_flag=True, help="Skip the quality check when converting (faster; no quality figures).")
@click.option("--no-tune", is_flag=True, help="Leave the `edge tune` cache alone.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout (no tables, no progress).")
@renamed("--formats", "--to", "formats")
@renamed("--quants", "--quant", "quants")
@renamed("--threshold", "--min-agreement", "threshold", type=float)
@click.option("--rpc", default=None, metavar="HOST:PORT,...|lab",
              help="Measure splitting the model across RPC workers instead: local, these workers ('lab': none), "
                   "and workers started here on loopback and in network namespaces.")
@click.option("--server", is_flag=True, help="Benchmark the server instead: concurrent streaming clients (openai "
              "client) against `edge serve` and llama.cpp's llama-server, same GGUF and threads.")
@click.option("--clients", default="1,2,4,8", show_default=True, help="With --server: client counts to measure.")
@click.option("--reply-tokens", type=int, default=96, show_default=True, help="With --server: max_tokens of each "
              "greedy reply.")
@click.option("--per-client", type=int, default=2, show_default=True, help="With --server: requests each client "
              "sends, one after another.")
def bench(model, formats, quants, backends, prompt_tokens, gen_tokens, repetitions, threads, json_path, csv_path,
          plot, anchor, threshold, allow_below_threshold, no_convert, no_quality, no_tune, quiet, as_json, rpc,
          server, clients, reply_tokens, per_client):
    """Benchmark formats, quants and backends on this device, and recommend one per device profile.

    \b
    Examples:
      edge bench                                    # SmolLM2-135M: gguf, onnx, mlx at default quants
      edge bench --to gguf --quant gguf=q4_k_m,gguf=q8_0 --anchor
      edge bench --prompt-tokens 128 --gen-tokens 32 --out bench.json --csv bench.csv --plot bench.png
      edge bench --to gguf --json                   # the report as JSON on stdout
      edge bench --rpc lab --prompt-tokens 64 --gen-tokens 64       # what a split costs, on this machine
      edge bench --server --clients 1,2,4,8 --out server.json --plot server.png
    """
    if server:
        return _server(model, threads, clients, reply_tokens, per_client, json_path, plot, as_json)
    if rpc:
        from ..bench import rpc as rpc_bench

        opts = rpc_bench.RpcBenchOptions(model=model, rpc=rpc, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                                         repetitions=repetitions, threads=threads, json=json_path)
        say = None if (quiet or as_json) else (lambda msg: click.echo(f"... {msg}", err=True))
        rows = rpc_bench.run(opts, progress=say)
        return print_json({"rows": rows}) if as_json else click.echo(rpc_bench.report(rows))
    from ..bench.matrix import BenchOptions, print_report, run

    opts = BenchOptions(model=model, formats=formats, quants=quants, backends=backends, prompt_tokens=prompt_tokens,
                        gen_tokens=gen_tokens, repetitions=repetitions, threads=threads, json=json_path, csv=csv_path,
                        plot=plot, anchor=anchor, threshold=threshold, allow_below_threshold=allow_below_threshold,
                        convert=not no_convert, quality=not no_quality,
                        tune=not no_tune, progress=not (quiet or as_json))
    report = run(opts)
    if as_json:
        return print_json(report.to_dict())
    print_report(report)


def _server(model, threads, clients, reply_tokens, per_client, json_path, plot_path, as_json) -> None:
    import json

    from ..bench import server_load
    from ..errors import InvalidOption

    try:
        counts = sorted({int(c) for c in clients.split(",") if c.strip()})
    except ValueError:
        raise InvalidOption(f"--clients must be numbers separated by commas (got '{clients}').",
                            "For example: --clients 1,2,4,8") from None
    if not counts or counts[0] < 1 or reply_tokens < 1 or per_client < 1:
        raise InvalidOption("--clients, --reply-tokens and --per-client must be at least 1.")
    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    say(server_load.HEADER)
    result = server_load.sweep(counts, model, threads, reply_tokens, per_client, say=say)
    if as_json:
        print_json(result)
    else:
        click.echo("")
        click.echo(server_load.table(result))
    if json_path:
        from ..fsutil import atomic_write

        atomic_write(json_path, json.dumps(result, indent=2) + "\n")
        say(f"wrote {json_path}")
    if plot_path:
        say(f"wrote {server_load.plot(result, plot_path)}")
