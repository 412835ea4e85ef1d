"""The converter: a Hugging Face model (or GGUF file) -> GGUF, ONNX and MLX artifacts.

`convert(...)` resolves the source, writes each artifact in a work folder,
records a manifest with quality figures, and renames it into the store.
Heavy libraries (torch, transformers, optimum, mlx-lm) load only when a
conversion runs.
"""
from __future__ import annotations

from .options import ConvertOptions, Result


def convert(source=None, to=("gguf", "onnx", "mlx"), quant=None, name=None, force=False, strict=False,
            threshold=0.90, progress=True, store=None, **more) -> list[Result]:
    """Convert `source` to the `to` formats; see ConvertOptions for every option."""
    from .pipeline import convert as run

    opts = ConvertOptions(source=source, to=to, quant=quant, name=name, force=force, strict=strict,
                          threshold=threshold, progress=progress, **more)
    return run(opts, store=store)


__all__ = ["convert", "ConvertOptions", "Result"]
