"""`edge convert`: forwards its options to converters.convert and prints the summary."""
from __future__ import annotations

import time
from dataclasses import fields

import click

from ..formats import ONNX_GRAPHS
from .common import human_size, json_option, print_json, renamed


def _help(name: str) -> str:
    from edge.converters.options import ConvertOptions

    return next(f.metadata["help"] for f in fields(ConvertOptions) if f.name == name)


@click.command("convert")
@click.argument("source", required=False)
@click.option("--to", default="gguf,onnx,mlx", show_default=True, help=_help("to"))
@click.option("--quant", default=None, help=_help("quant"))
@click.option("--name", default=None, help=_help("name"))
@click.option("--force", is_flag=True, help=_help("force"))
@click.option("--strict", is_flag=True, help=_help("strict"))
@click.option("--min-agreement", "threshold", type=float, default=0.90, show_default=True, help=_help("threshold"))
@click.option("--allow-below-threshold", is_flag=True, help=_help("allow_below_threshold"))
@click.option("--mlx-group-size", type=int, default=64, show_default=True, help=_help("mlx_group_size"))
@click.option("--onnx-block-size", type=int, default=32, show_default=True, help=_help("onnx_block_size"))
@click.option("--onnx-graph", type=click.Choice(ONNX_GRAPHS), default="fused", show_default=True,
              help=_help("onnx_graph"))
@click.option("--no-quality", "quality", is_flag=True, flag_value=False, default=True,
              help="Skip the quality check (faster; nothing is recorded in the manifest).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@json_option
@renamed("--threshold", "--min-agreement", "threshold", type=float)
def convert(source, to, quant, name, force, strict, threshold, allow_below_threshold, mlx_group_size, onnx_block_size,
            onnx_graph, quality, quiet, as_json):
    """Convert SOURCE (Hugging Face folder, GGUF file or model name) to GGUF, ONNX and MLX.

    \b
    Examples:
      edge convert                                  # the embedded SmolLM2-135M-Instruct
      edge convert ./my-hf-model --to gguf --quant gguf=q4_k_m,gguf=q8_0
      edge convert model.gguf --to onnx,mlx --quant onnx=int4,mlx=4bit --strict
    """
    from edge.converters import convert as run

    t0 = time.perf_counter()
    results = run(source, to=to, quant=quant, name=name, force=force, strict=strict, threshold=threshold,
                  progress=not quiet, mlx_group_size=mlx_group_size, onnx_block_size=onnx_block_size,
                  onnx_graph=onnx_graph, quality=quality, allow_below_threshold=allow_below_threshold)
    total = round(time.perf_counter() - t0, 2)
    if as_json:
        print_json({"model": results[0].model if results else None, "total_seconds": total,
                    "artifacts": [r.to_dict() for r in results]})
        return
    _table(results, total)


def _table(results, total: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{results[0].model}: {len(results)} artifact(s) in {total:.1f}s" if results else None)
    for col in ("format", "quant", "size", "seconds", "ppl", "source ppl", "top-1"):
        table.add_column(col, justify="left" if col in ("format", "quant") else "right")
    for r in results:
        q = r.quality or {}
        table.add_row(r.format, r.quant, human_size(r.size), "present" if r.status == "present" else f"{r.seconds:.1f}",
                      _num(q.get("perplexity")), _num(q.get("source_perplexity")),
                      f"{q['top1_agreement']:.3f}" if "top1_agreement" in q else "-")
    console = Console()
    console.print(table)
    for r in results:
        console.print(f"{r.format}-{r.quant}: {r.path}", highlight=False, soft_wrap=True)
    for r in results:
        if r.warning:
            console.print(f"[yellow]warning:[/yellow] {r.warning}", highlight=False, soft_wrap=True)


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"
