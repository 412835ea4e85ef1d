"""Options shared by the commands that run a model, built from edge.config.

The help text comes from the dataclass fields, so the CLI and the library
never disagree; commands only forward what they receive.
"""
from __future__ import annotations

import functools
import json
from dataclasses import fields

import click

from ..config import GenerationOptions, LoadOptions


def _help(cls, name: str) -> str:
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def _help_default(cls, name: str) -> str:
    """The field's help with the library's default, which the CLI leaves to the library."""
    f = next(f for f in fields(cls) if f.name == name)
    shown = f.default if f.default not in (None, [], ()) and not isinstance(f.default, bool) else None
    return f.metadata["help"] + (f"  [default: {shown}]" if shown is not None else "")


def model_option(f):
    return click.option("-m", "--model", default=None, help="Model name, name:quant, GGUF file or artifact folder (default: the embedded SmolLM2-135M-Instruct).")(f)


def renamed(old: str, flag: str, new: str, **option):
    """An old option spelling kept for one release: accepted but hidden, warned about, and
    forwarded to parameter `new` (spelt `flag` now). Place it with the command's other options."""
    dest = "renamed_" + old.lstrip("-").replace("-", "_")

    def decorate(f):
        @functools.wraps(f)
        def forward(*args, **kwargs):
            value = kwargs.pop(dest, None)
            if value not in (None, ()):
                click.echo(f"Warning: {old} is deprecated and will be removed; use {flag}.", err=True)
                kwargs[new] = value
            return f(*args, **kwargs)

        return click.option(old, dest, hidden=True, default=None, **option)(forward)

    return decorate


def backend_option(f):
    return click.option("--backend", default=None, help="Force a backend: llama.cpp, onnx or mlx (default: chosen for this device).")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")(f)


def generation_options(f):
    G = GenerationOptions
    opts = [
        click.option("-n", "--max-tokens", type=int, default=None, help=_help_default(G, "max_tokens")),
        click.option("-t", "--temperature", type=float, default=None, help=_help_default(G, "temperature")),
        click.option("--top-p", type=float, default=None, help=_help_default(G, "top_p")),
        click.option("--top-k", type=int, default=None, help=_help_default(G, "top_k")),
        click.option("--repeat-penalty", type=float, default=None, help=_help_default(G, "repeat_penalty")),
        click.option("--seed", type=int, default=None, help=_help_default(G, "seed")),
        click.option("--stop", multiple=True, help=_help_default(G, "stop") + " Repeatable."),
        click.option("--ignore-eos", is_flag=True, default=None, help=_help_default(G, "ignore_eos")),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def rpc_option(f):
    return click.option("--rpc", default=None, metavar="HOST:PORT,...", help=_help(LoadOptions, "rpc"))(f)


def rpc_timeout_option(f):
    return click.option("--rpc-timeout", type=float, default=None, metavar="SECONDS",
                        help=_help_default(LoadOptions, "rpc_timeout"))(f)


def load_options(f):
    L = LoadOptions
    opts = [
        click.option("-c", "--ctx", "n_ctx", type=int, default=None, help=_help_default(L, "n_ctx")),
        click.option("--threads", type=int, default=None, help=_help_default(L, "threads")),
        click.option("--gpu-layers", type=int, default=None, help=_help_default(L, "gpu_layers")),
        click.option("--verify", is_flag=True, default=None, help=_help_default(L, "verify")),
        rpc_option,
        rpc_timeout_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def guard_options(f):
    f = click.option("--guard-threshold", type=float, default=None, help="Guard score above which a prompt is blocked.")(f)
    return click.option("--guard/--no-guard", "guard", default=True, help="Check prompts with the prompt guard first (default: on).")(f)


def split(kwargs: dict) -> tuple[dict, dict]:
    """Split CLI kwargs into (generation, load) option dicts, dropping unset values."""
    gen_names = {f.name for f in fields(GenerationOptions)}
    load_names = {f.name for f in fields(LoadOptions)}
    gen = {k: v for k, v in kwargs.items() if k in gen_names and v not in (None, ())}
    if "stop" in gen:
        gen["stop"] = list(gen["stop"])
    load = {k: v for k, v in kwargs.items() if k in load_names and v is not None}
    return gen, load


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def human_size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
