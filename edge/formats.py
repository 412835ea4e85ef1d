"""Artifact formats and the quant types each one supports.

One place for these names: the converter, the store, selection and the CLI
all import them from here.
"""
from __future__ import annotations

import re

GGUF = "gguf"
ONNX = "onnx"
MLX = "mlx"
FORMATS = (GGUF, ONNX, MLX)

# Quant names as users type them (lower case); GGUF names map to llama.cpp's
# LLAMA_FTYPE_MOSTLY_* values in converters.gguf.
QUANTS = {
    GGUF: ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q5_1",
           "q4_k_m", "q4_k_s", "q4_0", "q4_1", "q3_k_m", "q2_k"),
    ONNX: ("fp32", "fp16", "int8", "int4"),
    MLX: ("bf16", "fp16", "8bit", "6bit", "4bit"),
}

# What `edge convert` writes when --quant does not name one for a format.
DEFAULT_QUANTS = {GGUF: ("q8_0",), ONNX: ("int8",), MLX: ("8bit",)}

# How an ONNX artifact's graph is made: "fused" is edge's own graph of onnxruntime
# fused kernels (llama-family models), "optimum" the traced export (any model
# optimum knows). "fused" falls back to "optimum" for other architectures.
ONNX_GRAPHS = ("fused", "optimum")

# Full precision per format, for parity tests and as the quality reference.
FULL_PRECISION = {GGUF: "f16", ONNX: "fp32", MLX: "fp16"}

# Approximate bits per weight, for the memory fit before a file exists.
BITS_PER_WEIGHT = {
    "f32": 32, "fp32": 32, "f16": 16, "fp16": 16, "bf16": 16,
    "q8_0": 8.5, "8bit": 8.5, "int8": 8.5, "q6_k": 6.6, "6bit": 6.5,
    "q5_k_m": 5.7, "q5_k_s": 5.5, "q5_0": 5.5, "q5_1": 6.0,
    "q4_k_m": 4.9, "q4_k_s": 4.6, "q4_0": 4.5, "q4_1": 5.0, "4bit": 4.5, "int4": 4.5,
    "q3_k_m": 3.9, "q2_k": 3.4,
}


def check_quant(fmt: str, quant: str) -> str:
    """Return the normalised quant name or raise InvalidOption listing the valid ones."""
    from .errors import InvalidOption

    if fmt not in QUANTS:
        raise InvalidOption(f"Unknown format '{fmt}'.", f"Choose one of: {', '.join(FORMATS)}.")
    q = quant.lower().replace("-", "_")
    if fmt == MLX:
        q = q.replace("_", "")
        q = {"8": "8bit", "4": "4bit", "6": "6bit", "q8": "8bit", "q4": "4bit"}.get(q, q)
    if q not in QUANTS[fmt]:
        raise InvalidOption(
            f"Unknown {fmt} quant '{quant}'.", f"Choose one of: {', '.join(QUANTS[fmt])}."
        )
    return q

# transformers' names for PyTorch weights (one file, or shards with their index): the only pickles
# `edge pull` fetches and the converter reads, with torch's weights-only loader (converters/workcopy.py).
PICKLE_WEIGHTS = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")
PICKLE_INDEX = "pytorch_model.bin.index.json"
