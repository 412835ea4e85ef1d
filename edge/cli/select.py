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
@click.option("--estimate", "show_estimate", is_flag=True,
              help="Estimate memory and decode speed per quant from the catalog, as for a model not downloaded.")
@rpc_option
@json_option
def which(model, model_arg, profile, backend, n_ctx, show_estimate, rpc, as_json):
    """Show which backend and artifact would run a model, and why.

    For a catalog model that is not downloaded, estimate per quant the memory it needs
    and its decode speed on the device, and which quant `edge pull` would fetch."""
    from ..config import LoadOptions
    from ..errors import ModelNotFound
    from ..select import choose
    from ..store import Store

    name = _model(model, model_arg)
    try:
        ref = None if show_estimate else Store().resolve(name)
    except ModelNotFound:
        if not _catalog_name(name):
            raise
        ref = None
    if ref is None:
        return _estimate(name, profile, n_ctx, as_json)
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
        gated = (m.error or "").startswith("quality gate: ")
        figs = (f"{m.decode_tok_s:.1f} tok/s, first token {m.ttft_s * 1000:.0f} ms" if m.decode_tok_s else
                f"not measured: {m.error}" if gated else f"failed: {m.error}")
        click.echo(f"  {m.backend:<10} {m.artifact:<40} {figs}")
    w = res.winner
    if w is None:
        from ..errors import BackendUnavailable

        if res.results and all((m.error or "").startswith("quality gate: ") for m in res.results):
            raise BackendUnavailable(f"Every artifact of {res.model} is below the quality gate or was never checked.",
                                     f"Convert it again with the quality check (edge convert {res.model} --force), "
                                     "or with --allow-below-threshold to measure it anyway.")
        raise BackendUnavailable(f"No candidate of {res.model} ran on this device.",
                                 "Run `edge doctor` to see which backends load a model.")
    click.echo(f"winner: {w.backend} {w.artifact}")
    click.echo(f"cache: {cache_path()}")


def _catalog_name(ref: str | None) -> str | None:
    from edge.models import catalog, default_model

    from ..hub import catalog_name_for

    ref = (ref or default_model()).partition(":")[0].partition("@")[0]
    return catalog_name_for(ref) if "/" in ref else (ref.lower() if ref.lower() in catalog() else None)


def _estimate(ref: str | None, profile: str | None, n_ctx: int | None, as_json: bool) -> None:
    from ..device import load_profile, probe
    from ..errors import ModelNotFound
    from ..estimate import catalog_facts, plan
    from ..store import Store

    name = _catalog_name(ref)
    facts = catalog_facts(name) if name else None
    if facts is None:
        raise ModelNotFound(f"The catalog does not give the size of '{ref}'.", "Download it (edge pull) and ask again.")
    p = plan(facts, load_profile(profile) if profile else probe(), n_ctx)
    store = Store()
    store.register_catalog()
    downloaded = bool(store.artifacts(name))
    if as_json:
        print_json({"downloaded": downloaded, **p.to_dict()})
        return
    echo_plan(p, downloaded)


def echo_plan(p, downloaded: bool = False) -> None:
    state = "in the store" if downloaded else "not downloaded"
    if p.pick:
        speed = f", about {p.pick.tok_s:.1f} tok/s" if p.pick.tok_s is not None else ""
        head = f"would pull {p.pick.format} {p.pick.quant} for {p.pick.backend}{speed}"
    else:
        head = "does not fit"
    click.echo(f"{p.model} on {p.device} ({state}, estimate): {head}")
    bw = f"{p.bandwidth_gbs:g} GB/s" if p.bandwidth_gbs else "unknown"
    click.echo(f"  context {p.n_ctx} tokens; memory bandwidth {bw} ({p.bandwidth_source})")
    click.echo(f"  {'backend':<10} {'quant':<7} {'weights':>9} {'KV cache':>9} {'total':>9} {'usable':>9} {'fits':<4} {'tok/s':>6}")
    for r in p.rows:
        tok = f"{r.tok_s:.1f}" if r.tok_s is not None else "-"
        click.echo(f"  {r.backend:<10} {r.quant:<7} {human_size(r.weights):>9} {human_size(r.kv_cache):>9} "
                   f"{human_size(r.need):>9} {human_size(r.available):>9} {'yes' if r.fits else 'no':<4} {tok:>6}")
    click.echo("why:")
    for line in p.why:
        click.echo(f"  - {line}")
