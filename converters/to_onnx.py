"""Hugging Face folder -> ONNX with KV cache (optimum), then onnxruntime quantization.

fp32 is optimum's export as is; int8 and int4 are onnxruntime's MatMulNBits
weight-only quantizer (blocks of 32 weights, symmetric); fp16 converts the
float weights with onnxruntime's float16 tool, keeping fp32 inputs/outputs.
The folder carries tokenizer.json and chat_template.jinja so the runtime
needs neither torch nor transformers.
"""
from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

from edge.errors import ConversionError, require

MODEL = "model.onnx"
DATA = "model.onnx_data"
# Protobuf cannot hold more than 2 GiB: above this, weights go to model.onnx_data.
EXTERNAL_DATA_BYTES = 1_800_000_000


def export(hf_dir: Path, out: Path) -> Path:
    """optimum export with KV-cache inputs and outputs (task text-generation-with-past)."""
    require("torch", "convert", "ONNX export")
    exporters = require("optimum.exporters.onnx", "convert", "ONNX export")
    require("onnx", "onnx", "ONNX export")
    from transformers.utils import logging as hf_logging

    logging.getLogger("optimum").setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()  # optimum logs through transformers' logger
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exporters.main_export(str(hf_dir), str(out), task="text-generation-with-past", device="cpu",
                                  do_validation=False, no_post_process=False)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ConversionError(f"optimum could not export {hf_dir} to ONNX ({str(exc).splitlines()[0][:200]}).",
                                  "Convert to gguf or mlx only (--to gguf,mlx).") from None
    if not (Path(out) / MODEL).is_file():
        raise ConversionError(f"optimum wrote no {MODEL} for {hf_dir}.", "Convert to gguf or mlx only (--to gguf,mlx).")
    return Path(out)


def _weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / MODEL, folder / DATA) if p.exists())


def quantize(exported: Path, out: Path, quant: str, block_size: int = 32) -> Path:
    """Write `quant` of the exported fp32 folder into `out` (a new folder) with tokenizer files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for p in Path(exported).iterdir():
        if p.is_file() and p.name not in (MODEL, DATA):
            shutil.copy2(p, out / p.name)
    src = Path(exported) / MODEL
    external = _weights_size(Path(exported)) > EXTERNAL_DATA_BYTES
    # onnxruntime's quantizers advise pre-processing on the root logger; not needed for weight quantization.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        QUANTIZERS[quant](src, out / MODEL, external, block_size)
    finally:
        root.setLevel(level)
    return out


def _copy(src: Path, dst: Path, external: bool, block_size: int) -> None:
    for name in (MODEL, DATA):
        if (src.parent / name).exists():
            shutil.copy2(src.parent / name, dst.parent / name)


def _nbits(bits: int):
    def run(src: Path, dst: Path, external: bool, block_size: int) -> None:
        onnx = require("onnx", "onnx", f"ONNX int{bits} quantization")
        require("onnx_ir", "convert", f"ONNX int{bits} quantization (package onnx-ir)")
        nbits = require("onnxruntime.quantization.matmul_nbits_quantizer", "onnx", f"ONNX int{bits} quantization")
        if hasattr(nbits, "logger"):  # it logs every node at INFO through its own handler
            nbits.logger.setLevel(logging.ERROR)
        # accuracy_level 4 lets onnxruntime run the MatMuls with int8 activations (its
        # fast integer kernels): 13x faster decode than the default float path on x86.
        quant = nbits.MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size,
                                           is_symmetric=True, accuracy_level=4)
        quant.process()
        quant.model.save_model_to_file(str(dst), use_external_data_format=external)

    return run


def _fp16(src: Path, dst: Path, external: bool, block_size: int) -> None:
    onnx = require("onnx", "onnx", "ONNX fp16 conversion")
    f16 = require("onnxruntime.transformers.float16", "onnx", "ONNX fp16 conversion")
    model = onnx.load(str(src))
    model = f16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save_model(model, str(dst), save_as_external_data=external, location=DATA if external else None)


# int8 is weight-only too (MatMulNBits, 8 bits): onnxruntime's dynamic quantization
# (quantize_dynamic, which also quantizes activations) kept only 0.59 top-1
# agreement on SmolLM2-135M, against 0.997 for this.
QUANTIZERS = {"fp32": _copy, "int8": _nbits(8), "int4": _nbits(4), "fp16": _fp16}
