"""Hugging Face folder -> ONNX decoder with KV cache, then onnxruntime quantization.

The fp32 graph is edge's fused graph (onnx_graph.py) for llama-family models
and optimum's traced export otherwise, or when asked for (graph="optimum").
fp32 is that graph as is; int8 and int4 are onnxruntime's MatMulNBits
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

from .onnx_layout import DATA, EXTERNAL_DATA_BYTES, HEAD_OUTPUT, MODEL  # noqa: F401 (re-exported for callers)


def export(hf_dir: Path, out: Path, graph: str = "fused") -> str:
    """Write the fp32 graph into `out`; return which graph was written ("fused" or "optimum")."""
    if graph == "fused":
        import json

        from . import onnx_graph

        config = json.loads((Path(hf_dir) / "config.json").read_text(encoding="utf-8"))
        if onnx_graph.supports(config) is None:
            require("torch", "convert", "ONNX export")
            onnx_graph.build(hf_dir, out)
            _copy_tokenizer(Path(hf_dir), Path(out))
            return "fused"
    _optimum(hf_dir, out)
    return "optimum"


def _copy_tokenizer(hf_dir: Path, out: Path) -> None:
    """The files optimum's exporter would carry next to the graph."""
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, out / name)


def _optimum(hf_dir: Path, out: Path) -> Path:
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
        model = onnx.load(str(src))
        # Under int4 the output projection stays at 8 bits, as llama.cpp's 4-bit types keep
        # output.weight at 6 or 8 bits: on small models it carries much of the 4-bit loss.
        head = [n.name for n in model.graph.node if n.op_type == "MatMul" and _is_head(n)]
        passes = ([(bits, {"nodes_to_exclude": head}), (8, {"nodes_to_include": head})]
                  if bits < 8 and head else [(bits, {})])
        for b, kw in passes:
            # accuracy_level 4 lets onnxruntime run the MatMuls with int8 activations (its
            # fast integer kernels): 13x faster decode than the default float path on x86.
            quant = nbits.MatMulNBitsQuantizer(model, bits=b, block_size=block_size, is_symmetric=True,
                                               accuracy_level=4, **kw)
            quant.process()
            model = quant.model.model
        _quantize_embedding(model)
        quant.model.save_model_to_file(str(dst), use_external_data_format=external)

    return run


def _is_head(node) -> bool:
    """The output projection: it writes the logits, or what soft-capping turns into them."""
    return "logits" in node.output or HEAD_OUTPUT in node.output


def _quantize_embedding(model) -> bool:
    """Swap the fp32 embedding Gather for an 8-bit GatherBlockQuantized; True when done.

    With tied embeddings the table is the 8-bit output projection's own bytes
    (MatMulNBits stores B as (vocab, blocks, block) uint8, zero point 128), so
    the file holds the table once; otherwise the table is quantized the same
    way. A quarter of the fp32 table's size either way (SmolLM2: 113 MB -> 28 MB).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    gather = next((n for n in g.node if n.op_type == "Gather" and n.input[1] == "input_ids" and n.input[0] in inits), None)
    head = next((n for n in g.node if n.op_type == "MatMulNBits" and _is_head(n)), None)
    if gather is None or head is None:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    table = numpy_helper.to_array(inits[gather.input[0]])
    vocab, dim = table.shape
    bs = int(attrs["block_size"])
    if attrs.get("bits") != 8 or dim % bs or (len(head.input) > 3 and head.input[3]):
        return False
    q = numpy_helper.to_array(inits[head.input[1]])
    scales = numpy_helper.to_array(inits[head.input[2]]).reshape(vocab, dim // bs, 1)
    # Tied when every weight is within one quantization step of the table (rounding, and
    # clipping at the block's extreme, are each at most one step; scales may be negative).
    tied = q.shape == (vocab, dim // bs, bs) and bool(
        np.all(np.abs((q.astype(np.float32) - 128) * scales - table.reshape(q.shape)) <= np.abs(scales) * 1.01 + 1e-12))
    data_name, scale_name = head.input[1], f"{gather.input[0]}_scales"
    if not tied:
        blocks = table.reshape(vocab, dim // bs, bs)
        scales = (np.abs(blocks).max(-1, keepdims=True) / 127).astype(np.float32)
        scales[scales == 0] = 1.0
        data_name = f"{gather.input[0]}_q8"
        g.initializer.append(numpy_helper.from_array(
            (np.clip(np.round(blocks / scales), -127, 127) + 128).astype(np.uint8), data_name))
    g.initializer.append(numpy_helper.from_array(scales.astype(table.dtype), scale_name))
    g.initializer.append(numpy_helper.from_array(np.array([1, -1, dim], np.int64), f"{gather.input[0]}_shape"))
    g.initializer.remove(inits[gather.input[0]])
    blocks_out = f"{gather.output[0]}_blocks"
    at = list(g.node).index(gather)
    g.node.remove(gather)
    g.node.insert(at, helper.make_node("Reshape", [blocks_out, f"{gather.input[0]}_shape"], [gather.output[0]]))
    g.node.insert(at, helper.make_node("GatherBlockQuantized", [data_name, "input_ids", scale_name], [blocks_out],
                                       domain="com.microsoft", gather_axis=0, quantize_axis=2, block_size=bs, bits=8))
    return True


def _fp16(src: Path, dst: Path, external: bool, block_size: int) -> None:
    onnx = require("onnx", "onnx", "ONNX fp16 conversion")
    f16 = require("onnxruntime.transformers.float16", "onnx", "ONNX fp16 conversion")
    model = onnx.load(str(src))
    model = f16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save_model(model, str(dst), save_as_external_data=external, location=DATA if external else None)


# int8 is weight-only too (MatMulNBits, 8 bits): onnxruntime's dynamic quantization,
# which also quantizes activations, lost far more agreement (docs/experiments.md, converter).
QUANTIZERS = {"fp32": _copy, "int8": _nbits(8), "int4": _nbits(4), "fp16": _fp16}
