"""`edge doctor`: the device probe as a table or JSON, with each backend's self-check."""
from __future__ import annotations

import click

from .common import json_option, print_json


def device_rows(d) -> list[tuple[str, str]]:
    gib = 1 << 30
    gpus = ", ".join(f"{g['name']} ({g.get('memory_total', 0) / gib:.1f} GiB)" for g in d.nvidia) or "none"
    cores = f"{d.physical_cores} physical, {d.logical_cores} logical"
    if d.performance_cores:
        cores += f", {d.performance_cores} performance"
    rows = [
        ("Device", d.name + (f": {d.description}" if d.description else "")),
        ("OS / arch", f"{d.os} / {d.arch}"),
        ("CPU", d.cpu_model),
        ("Cores", cores),
        ("SIMD", ", ".join(d.simd) or "none found"),
        ("RAM", f"{d.ram_total / gib:.1f} GiB total, {d.ram_available / gib:.1f} GiB available"),
        ("Memory bandwidth", f"{d.memory_bandwidth_gbs:.1f} GB/s ({d.bandwidth_source})" if d.memory_bandwidth_gbs else "unknown"),
        ("Apple silicon", (d.apple_chip + (", unified memory" if d.unified_memory else "")) if d.apple_chip else "no"),
        ("Metal", "yes" if d.metal else "no"),
        ("NVIDIA", gpus),
        ("llama.cpp GPU offload", "yes" if d.gpu_offload else "no"),
        ("Raspberry Pi", d.raspberry_pi or "no"),
        ("Fingerprint", d.fingerprint),
    ]
    if d.export_only:
        rows.insert(1, ("Export only", "yes: no Python backend runs here"))
    return rows


def backend_rows(d) -> list[tuple[str, str, str, str, str]]:
    from .. import backends

    rows = []
    for name, entry in backends.REGISTRY.items():
        st = d.backends.get(name)
        if st is None or not st.installed:
            how = "pip install edge" if entry.extra == "base" else f"pip install 'edge[{entry.extra}]'"
            why = f"not installed on {d.name}" if d.name != "this device" else f"{entry.package} missing: {how}"
            rows.append((name, "no", "-", "-", why))
            continue
        loads = {True: "yes", False: "FAILED", None: "not checked"}[st.loads]
        rows.append((name, "yes", st.version or "?", loads, st.detail))
    return rows


def store_row() -> tuple[str, str]:
    """What `$EDGE_HOME/tmp` holds: leftovers of killed conversions."""
    from ..store import Store

    store = Store()
    n, size = store.tmp_usage()
    where = store.root / "tmp"
    if not n:
        return ("Store tmp", f"empty ({where})")
    return ("Store tmp", f"{n} leftover(s), {size / 1e6:.1f} MB in {where}; `edge convert` removes those "
                         "older than an hour")


@click.command()
@json_option
@click.option("--profile", default=None, help="Show a device profile instead of probing this machine.")
@click.option("--profiles", "list_profiles", is_flag=True, help="List the device profiles.")
@click.option("--quick", is_flag=True, help="Skip loading a tiny model in each backend.")
def doctor(as_json, profile, list_profiles, quick):
    """Probe this device: CPU, SIMD, memory, GPUs and which backends load a model."""
    from ..device import load_profile, probe, profile_names

    if list_profiles:
        names = profile_names()
        if as_json:
            print_json({n: load_profile(n).description for n in names})
        else:
            for n in names:
                click.echo(f"{n:<24} {load_profile(n).description}")
        return
    info = load_profile(profile) if profile else probe(check=not quick)
    if not profile:
        from ..estimate import measure_bandwidth

        info.memory_bandwidth_gbs = round(measure_bandwidth(), 1)
        info.bandwidth_source = "measured here: best of repeated numpy copies of a 64 MiB buffer"
    if as_json:
        data = info.to_dict()
        if not profile:
            from ..store import Store

            store = Store()
            n, size = store.tmp_usage()
            data["store"] = {"path": str(store.root), "tmp_entries": n, "tmp_bytes": size}
        print_json(data)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    dev = Table(title="Device", show_header=False, title_justify="left")
    dev.add_column(style="bold")
    dev.add_column()
    for k, v in device_rows(info) + ([] if profile else [store_row()]):
        dev.add_row(k, escape(v))
    console.print(dev)
    bk = Table(title="Backends", title_justify="left")
    for col in ("backend", "installed", "version", "loads a model", "detail"):
        bk.add_column(col)
    for row in backend_rows(info):
        bk.add_row(*map(escape, row), style="red" if row[3] == "FAILED" else None)
    console.print(bk)
