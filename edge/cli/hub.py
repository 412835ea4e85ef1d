"""`edge pull`: forwards to edge.hub.pull and prints what landed in the store."""
from __future__ import annotations

import click

from .common import human_size, json_option, print_json


@click.command()
@click.argument("ref")
@click.option("--to", default=None, help="Formats to convert a safetensors repo to, e.g. gguf,onnx (default: picked for this device).")
@click.option("--quant", default=None, help="Quant per format, e.g. gguf=q4_k_m,onnx=int8 (default: picked for this device).")
@click.option("--name", default=None, help="Name in the store (default: the catalog name, else from the repo name).")
@click.option("--force", is_flag=True, help="Convert again and replace artifacts that already exist.")
@click.option("--no-quality", "quality", is_flag=True, flag_value=False, default=True,
              help="Skip the converter's quality check (the artifact then never becomes a default).")
@click.option("--min-agreement", "threshold", type=float, default=0.90, show_default=True,
              help="Quality gate: minimum top-1 agreement of a converted artifact with the source model.")
@click.option("--allow-below-threshold", is_flag=True,
              help="Let a converted artifact below the gate (or not checked) become a default and enter the tune cache.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@json_option
def pull(ref, to, quant, name, force, quality, threshold, allow_below_threshold, quiet, as_json):
    """Download REF from Hugging Face and make it runnable: NAME or ORG/REPO[:QUANT][@REVISION].

    \b
    Examples:
      edge pull qwen2.5-0.5b-instruct                 # catalog name; format and quant picked for this device
      edge pull Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M  # one GGUF file, as llama.cpp -hf
      edge pull HuggingFaceTB/SmolLM2-360M-Instruct --to onnx --quant onnx=int8
    HF_TOKEN opens gated repos; HF_ENDPOINT and HF_HOME are honoured.
    """
    from ..hub import pull as run

    res = run(ref, to=to, quant=quant, name=name, force=force, progress=not (quiet or as_json), quality=quality,
              threshold=threshold, allow_below_threshold=allow_below_threshold)
    if as_json:
        print_json(res.to_dict())
        return
    what = ", ".join(f"{a.format}-{a.quant} ({human_size(a.size)})" for a in res.artifacts) or "nothing runnable"
    verb = "converted to" if res.converted else "ready as"
    click.echo(f"Pulled {res.repo}@{res.revision[:7]} as {res.name}: {verb} {what}.")
    for line in res.why:
        click.echo(f"  - {line}")
    click.echo(f"Run it: edge run -m {res.name} \"Hello\"")
