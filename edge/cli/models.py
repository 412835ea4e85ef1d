"""`edge models`, `edge import`, `edge rm`: the model store from the terminal."""
from __future__ import annotations

import click

from .common import human_size, json_option, print_json


@click.command()
@click.option("--available", is_flag=True, help="List the catalog: models `edge pull NAME` can download.")
@click.option("--profile", default=None, help="With --available: the quant each model would get on this device "
              "profile, the memory it needs and its estimated decode speed.")
@json_option
def models(available, profile, as_json):
    """List the models in the store with format, quant, size and path."""
    from ..store import Store

    if available:
        return _available(as_json, profile)
    store = Store()
    broken: list = []
    arts = store.list_models(broken)
    if as_json:
        print_json({"store": str(store.root), "models": [a.to_dict() for a in arts],
                    "broken": [str(exc) for _, exc in broken]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Models in {store.root}", title_justify="left")
    for col in ("name", "format", "quant", "size", "top-1", "path"):
        table.add_column(col, overflow="fold")
    for a in arts:
        q = a.quality.get("top1_agreement")
        table.add_row(a.model, a.format, a.quant, human_size(a.size), f"{q:.3f}" if q is not None else "-",
                      str(a.main_path))
    Console().print(table)
    for _, exc in broken:
        click.echo(f"Broken: {exc}", err=True)


@click.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.option("--name", default=None, help="Name in the store (default: from the file or folder name).")
@click.option("--force", is_flag=True, help="Replace an artifact of the same name, format and quant.")
@json_option
def import_cmd(path, name, force, as_json):
    """Register a local GGUF file or Hugging Face folder in the store (no copy)."""
    from ..store import Store

    art = Store().import_path(path, name=name, force=force)
    if as_json:
        print_json(art.to_dict())
    else:
        click.echo(f"Imported {art.model} ({art.format}-{art.quant}, {human_size(art.size)}).")


@click.command()
@click.argument("model")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(model, yes):
    """Remove MODEL (name, or name:quant for one artifact) from the store.

    Files outside the store (a package's, or the Hugging Face cache's) are kept."""
    from ..store import Store

    if not yes:
        click.confirm(f"Remove {model} from the store?", abort=True)
    n = Store().remove(model)
    click.echo(f"Removed {model} ({n} artifact{'s' if n != 1 else ''}).")


def _available(as_json: bool, profile: str | None) -> None:
    from ..hub import available

    rows = available(profile=profile)
    if as_json:
        print_json({"profile": profile, "models": rows})
        return
    from rich.console import Console
    from rich.table import Table

    if profile:
        table = Table(title=f"Catalog on {profile}: what `edge pull NAME` would fetch (estimate)", title_justify="left")
        for col in ("name", "params", "licence", "gated", "pick", "needs", "tok/s", "here"):
            table.add_column(col, overflow="fold")
        for r in rows:
            e = r["estimate"]
            pick = e["pick"]
            table.add_row(r["name"], _params(r), r["license"] or "?", "yes" if r["gated"] else "no",
                          f"{pick['format']} {pick['quant']}" if pick else "does not fit",
                          human_size(pick["memory"]["need"]) if pick else "-",
                          f"{pick['decode_tok_s']:.1f}" if pick and pick["decode_tok_s"] is not None else "-",
                          ", ".join(r["downloaded"]) or "no")
        Console(highlight=False).print(table)
        return
    quants = [q for q in rows[0]["sizes"]] if rows else []
    table = Table(title="Catalog: edge pull NAME (file sizes estimated from the parameter count)", title_justify="left")
    for col in ("name", "family", "params", "context", "licence", "gated", *quants, "here"):
        table.add_column(col, overflow="fold")
    for r in rows:
        sizes = [human_size(r["sizes"][q]) for q in quants]
        table.add_row(r["name"], r["family"] or "-", _params(r), str(r["context_length"] or "?"), r["license"] or "?",
                      "yes" if r["gated"] else "no", *sizes, ", ".join(r["downloaded"]) or "no")
    Console(highlight=False).print(table)


def _params(r: dict) -> str:
    return f"{r['parameters'] / 1e9:.2f}B" if r["parameters"] else "?"
