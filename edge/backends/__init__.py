"""The backend registry: one table, one module per backend.

Each module (llama_cpp.py, onnx.py, mlx.py) exports `Backend`, `Options` and
`self_check()` (what `edge doctor` runs in a child process), and may export
capability facts as functions (`gpu_offload()`). Everyone else asks here
instead of keeping a per-backend table. Modules are imported on first use so
`edge --help` never loads a heavy library.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from ..errors import BackendUnavailable, InvalidOption
from ..formats import GGUF, MLX, ONNX


@dataclass(frozen=True)
class Entry:
    name: str
    module: str       # edge module implementing it
    format: str       # artifact format it runs
    library: str      # import name of the library it needs
    package: str      # distribution name, for versions
    extra: str        # pip extra that installs it
    rpc: bool = False  # can split a model across RPC workers (edge worker, --rpc)
    batches: bool = False  # decodes several sequences in one step (the server's --parallel slots)


REGISTRY = {
    e.name: e
    for e in (
        Entry("llama.cpp", "edge.backends.llama_cpp", GGUF, "llama_cpp", "llama-cpp-python", "base", rpc=True,
              batches=True),
        Entry("onnx", "edge.backends.onnx", ONNX, "onnxruntime", "onnxruntime", "onnx"),
        Entry("mlx", "edge.backends.mlx", MLX, "mlx_lm", "mlx-lm", "mlx"),
    )
}

ALIASES = {"llama_cpp": "llama.cpp", "llamacpp": "llama.cpp", "llama": "llama.cpp", "gguf": "llama.cpp",
           "onnxruntime": "onnx", "ort": "onnx", "mlx-lm": "mlx", "mlx_lm": "mlx"}


def canonical(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in REGISTRY:
        raise InvalidOption(f"Unknown backend '{name}'.", f"Choose one of: {', '.join(REGISTRY)}.")
    return key


def for_format(fmt: str) -> list[str]:
    return [e.name for e in REGISTRY.values() if e.format == fmt]


def installed(name: str) -> bool:
    """True when the backend's library can be found (without importing it)."""
    try:
        return importlib.util.find_spec(REGISTRY[canonical(name)].library) is not None
    except (ImportError, ValueError):
        return False


def version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version as _v

    try:
        return _v(REGISTRY[canonical(name)].package)
    except PackageNotFoundError:
        return None


def get(name: str):
    """The backend module (exports Backend and Options); raises if its library is missing."""
    entry = REGISTRY[canonical(name)]
    if not installed(entry.name):
        how = "pip install edge" if entry.extra == "base" else f"pip install 'edge[{entry.extra}]'"
        raise BackendUnavailable(f"The {entry.name} backend is not installed ({entry.package} missing).", f"Install it with: {how}")
    return importlib.import_module(entry.module)


def self_check(name: str) -> str:
    """Run the backend's own self-check (load or run something tiny); returns what it did, raises on failure."""
    return importlib.import_module(REGISTRY[canonical(name)].module).self_check()


def fact(name: str, what: str, default=None):
    """A capability fact the backend module answers for itself (e.g. 'gpu_offload'), or `default`
    when the backend is not installed or does not know the fact."""
    if not installed(name):
        return default
    fn = getattr(importlib.import_module(REGISTRY[canonical(name)].module), what, None)
    return fn() if callable(fn) else default


def for_scoring(fmt: str) -> str:
    """The backend that scores artifacts of `fmt` for the quality gate: the runtime's own for that format."""
    names = for_format(fmt)
    if not names:
        raise InvalidOption(f"No backend runs {fmt} artifacts.", f"Choose one of: {', '.join(sorted({e.format for e in REGISTRY.values()}))}.")
    return names[0]
