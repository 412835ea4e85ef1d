"""Weights of a Llama-layout GGUF file as Hugging Face tensors, with the `gguf` library.

For architectures whose GGUF transformers' loader does not read (MiniCPM): each tensor
is dequantized with gguf's own dequantizer, renamed through gguf's tensor-name map
(GGUF name -> Hugging Face name), and the query/key rows llama.cpp's converter
interleaves for its rotary embedding are put back in Hugging Face's order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Hugging Face tensors of a Llama-layout decoder, per layer and outside the layers.
LAYER = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
GLOBAL = ("model.embed_tokens", "model.norm", "lm_head")
# Tensors llama.cpp's converter writes for the runtime only, returned separately (rope factors).
EXTRA = ("rope_factors_long.weight", "rope_factors_short.weight")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's converter's `permute` of a query or key projection (n_head: its heads)."""
    rest = w.shape[1:]
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def read(path: Path, arch: str, n_layers: int, n_head: int, n_kv_head: int) -> tuple[dict, dict]:
    """({Hugging Face name: float32 array}, {extra GGUF tensor name: float32 array}) of a GGUF file."""
    import gguf
    from gguf.quants import dequantize

    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, n_layers)
    hf_names = [*GLOBAL, *(f"model.layers.{i}.{t}" for i in range(n_layers) for t in LAYER)]
    back = {}
    for hf in hf_names:
        g = names.get_name(hf + ".weight", try_suffixes=(".weight",))
        if g is not None:
            back[g] = hf + ".weight"
    weights, extra = {}, {}
    for t in gguf.GGUFReader(str(path)).tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        arr = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)
        if t.name in EXTRA:
            extra[t.name] = arr
            continue
        if t.name not in back:
            raise KeyError(f"tensor {t.name} has no Hugging Face name")
        name = back[t.name]
        if name.endswith("q_proj.weight"):
            arr = unpermute(arr, n_head)
        elif name.endswith("k_proj.weight"):
            arr = unpermute(arr, n_kv_head)
        weights[name] = np.ascontiguousarray(arr)
    return weights, extra
