"""Hugging Face folder -> MLX with mlx-lm's converter (8/6/4-bit or float).

Where mlx-lm reads an architecture's config differently from the model's own code,
it converts an adapted copy (adapt.TARGET).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from edge.errors import ConversionError, require

from . import adapt

# quant -> keyword arguments of mlx_lm.convert
MLX_ARGS = {
    "8bit": {"quantize": True, "q_bits": 8},
    "6bit": {"quantize": True, "q_bits": 6},
    "4bit": {"quantize": True, "q_bits": 4},
    "bf16": {"dtype": "bfloat16"},
    "fp16": {"dtype": "float16"},
}


def convert(hf_dir: Path, out: Path, quant: str, group_size: int = 64) -> Path:
    """Write the MLX model to `out`, which must not exist yet."""
    mlx_lm = require("mlx_lm", "mlx", "MLX conversion")
    args = dict(MLX_ARGS[quant])
    if args.get("quantize"):
        args["q_group_size"] = group_size
    # mlx-lm prints "[INFO] Quantizing" lines; our progress bar says the same.
    with contextlib.redirect_stdout(io.StringIO()), adapt.for_target(hf_dir, "mlx", Path(out).parent) as src:
        try:
            mlx_lm.convert(str(src), mlx_path=str(out), **args)
        except (ValueError, KeyError) as exc:
            raise ConversionError(f"mlx-lm could not convert {hf_dir} ({str(exc).splitlines()[0][:200]}).",
                                  "Convert to gguf or onnx only (--to gguf,onnx).") from None
    if not (Path(out) / "config.json").is_file():
        raise ConversionError(f"mlx-lm wrote no model for {hf_dir}.", "Convert to gguf or onnx only (--to gguf,onnx).")
    return Path(out)
