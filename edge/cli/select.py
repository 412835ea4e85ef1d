"""`edge which` and `edge tune`: show the selection and its reasons; measure and cache."""
from __future__ import annotations

import click

from .common import backend_option, human_size, json_option, model_option, print_json, renamed, rpc_option


def _model_arg(f):
    """-m/--model, as in every command; a bare MODEL argument still works for one release."""
    f = model_option(f)
    f = click.argument("model_arg", required=False, metavar="")(f)
    return f


def _model(model, model_arg):
    if model_arg:
        click.echo("Warning: a bare MODEL argument is deprecated and will be removed; use -m/--model.", err=True)
    return model or model_arg


def _echo_choice(model: str, c) -> None:
    art = c.artifact
    gpu = {0: "", -1: ", all layers on the GPU"}.get(c.gpu_layers, f", {c.gpu_layers} layers on the GPU")
    verb = "exports" if c.export_only else "runs"
    click.echo(f"{model} on {c.device}: {c.backend} {verb} {art.format}-{art.quant} "
               f"({human_size(art.size)}), {c.threads} threads{gpu}")
    click.echo(f"  path: {art.main_path}")
    click.echo("why:")
    for r in c.reasons:
        click.echo(f"  - {r}")
    if c.rejected:
        click.echo("rejected:")
        for r in c.rejected:
            click.echo(f"  - {r.backend} {r.label if r.artifact else ''}".rstrip() + f": {r.reason}")


@click.command()
@_model_arg
@click.option("--profile", default=None, help="Decide as on a device profile (see `edge doctor --profiles`).")
@backend_option
@click.option("-c", "--ctx", "n_ctx", type=int, default=None, help="Context length to fit in memory (default 2048).")
@rpc_option
@json_option
def which(model, model_arg, profile, backend, n_ctx, rpc, as_json):
    """Show which backend and artifact would run a model, and why."""
    from ..config import LoadOptions
    from ..select import choose
    from ..store import Store

    ref = Store().resolve(_model(model, model_arg))
    load = LoadOptions(**{k: v for k, v in {"n_ctx": n_ctx, "rpc": rpc}.items() if v})
    choice = choose(ref, backend, load, profile=profile, export=True)
    if as_json:
        print_json({"model": ref.name, **choice.to_dict()})
    else:
        _echo_choice(ref.name, choice)


@click.command()
@_model_arg
@click.option("--retune", is_flag=True, help="Measure again even when the cache has figures.")
@click.option("-n", "--max-tokens", "tokens", type=int, default=32, show_default=True,
              help="Decode tokens timed per candidate.")
@click.option("-c", "--ctx", "n_ctx", type=int, default=512, show_default=True, help="Context length while measuring.")
@json_option
@renamed("--tokens", "--max-tokens", "tokens", type=int)
def tune(model, model_arg, retune, tokens, n_ctx, as_json):
    """Measure each backend/artifact of a model that fits this device; cache the fastest."""
    from ..errors import InvalidOption
    from ..tune import tune as run_tune
    from ..tune_cache import cache_path

    if tokens < 2:
        raise InvalidOption(f"--max-tokens must be at least 2 (got {tokens}).")
    progress = None if as_json else (lambda msg: click.echo(msg + " ...", err=True))
    res = run_tune(_model(model, model_arg), retune=retune, tokens=tokens, n_ctx=n_ctx, progress=progress)
    if as_json:
        print_json(res.to_dict())
        return
    when = f"cached from {res.date}; --retune to measure again" if res.cached else f"measured {res.date}"
    click.echo(f"{res.model} ({when}, {res.threads} threads):")
    for m in sorted(res.results, key=lambda m: -(m.decode_tok_s or 0)):
        figs = f"{m.decode_tok_s:.1f} tok/s, first token {m.ttft_s * 1000:.0f} ms" if m.decode_tok_s else f"failed: {m.error}"
        click.echo(f"  {m.backend:<10} {m.artifact:<40} {figs}")
    w = res.winner
    if w is None:
        from ..errors import BackendUnavailable

        raise BackendUnavailable(f"No candidate of {res.model} ran on this device.",
                                 "Run `edge doctor` to see which backends load a model.")
    click.echo(f"winner: {w.backend} {w.artifact}")
    click.echo(f"cache: {cache_path()}")
