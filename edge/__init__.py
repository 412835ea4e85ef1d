"""edge: an on-device runtime for small language models.

    import edge
    model = edge.load()                      # the embedded SmolLM2-135M-Instruct
    print(model.chat([{"role": "user", "content": "Hi!"}], temperature=0))
    for piece in model.stream_chat(messages):
        print(piece, end="")

Importing edge is cheap; the backend library loads inside `load`.

The public API, kept stable and the only part of edge that `apps/` use, is this
module and the modules named in `PUBLIC_MODULES`.
"""
from __future__ import annotations

from .errors import EdgeError

__version__ = "0.1.0"
__all__ = ["load", "Model", "EdgeError", "__version__", "PUBLIC_MODULES"]

PUBLIC_MODULES = (
    "edge.errors", "edge.config", "edge.formats", "edge.manifest", "edge.fsutil", "edge.store", "edge.device",
    "edge.select", "edge.backends", "edge.guard", "edge.tools", "edge.rpc", "edge.rpc.worker", "edge.converters",
    "edge.cli",
)


def load(model: str | None = None, backend: str | None = None, **options):
    """Load a model and return a `Model` ready to chat.

    model: catalog name, `name:quant`, GGUF path or artifact folder (default:
    the embedded SmolLM2-135M-Instruct). backend: force llama.cpp, onnx or mlx
    (default: chosen for this device). options: LoadOptions fields (n_ctx,
    threads, gpu_layers, verify) and `guard` (True, False or a threshold).
    """
    from .model import load as _load

    return _load(model, backend, **options)


def __getattr__(name):
    if name == "Model":
        from .model import Model

        return Model
    raise AttributeError(name)
