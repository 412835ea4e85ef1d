"""`edge bench`: forwards its flags to edge.bench.matrix and prints the report."""
from __future__ import annotations

from dataclasses import fields

import click


def _help(name: str) -> str:
    from ..bench.matrix import BenchOptions

    return next(f.metadata["help"] for f in fields(BenchOptions) if f.name == name)


@click.command()
@click.option("-m", "--model", default=None, help=_help("model"))
@click.option("--formats", default=None, help=_help("formats"))
@click.option("--quants", default=None, help=_help("quants"))
@click.option("--backends", default=None, help=_help("backends"))
@click.option("--prompt-tokens", type=int, default=512, show_default=True, help=_help("prompt_tokens"))
@click.option("--gen-tokens", type=int, default=128, show_default=True, help=_help("gen_tokens"))
@click.option("--repetitions", type=int, default=3, show_default=True, help=_help("repetitions"))
@click.option("--threads", type=int, default=None, help=_help("threads"))
@click.option("--json", "json_path", default=None, metavar="PATH", help=_help("json"))
@click.option("--csv", "csv_path", default=None, metavar="PATH", help=_help("csv"))
@click.option("--plot", default=None, metavar="PATH", help=_help("plot"))
@click.option("--anchor", is_flag=True, help=_help("anchor"))
@click.option("--threshold", type=float, default=0.90, show_default=True, help=_help("threshold"))
@click.option("--allow-below-threshold", is_flag=True, help=_help("allow_below_threshold"))
@click.option("--no-convert", is_flag=True, help="Measure only the artifacts that exist; convert nothing.")
@click.option("--no-quality", is_flag=True, help="Skip the quality check when converting (faster; no quality figures).")
@click.option("--no-tune", is_flag=True, help="Leave the `edge tune` cache alone.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def bench(model, formats, quants, backends, prompt_tokens, gen_tokens, repetitions, threads, json_path, csv_path,
          plot, anchor, threshold, allow_below_threshold, no_convert, no_quality, no_tune, quiet):
    """Benchmark formats, quants and backends on this device, and recommend one per device profile.

    \b
    Examples:
      edge bench                                    # SmolLM2-135M: gguf, onnx, mlx at default quants
      edge bench --formats gguf --quants gguf=q4_k_m,gguf=q8_0 --anchor
      edge bench --prompt-tokens 128 --gen-tokens 32 --json bench.json --csv bench.csv --plot bench.png
    """
    from ..bench.matrix import BenchOptions, print_report, run

    opts = BenchOptions(model=model, formats=formats, quants=quants, backends=backends, prompt_tokens=prompt_tokens,
                        gen_tokens=gen_tokens, repetitions=repetitions, threads=threads, json=json_path, csv=csv_path,
                        plot=plot, anchor=anchor, threshold=threshold, allow_below_threshold=allow_below_threshold,
                        convert=not no_convert, quality=not no_quality,
                        tune=not no_tune, progress=not quiet)
    print_report(run(opts))
