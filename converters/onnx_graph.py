"""Llama-family Hugging Face weights -> one fused ONNX decoder graph.

optimum's exporter traces the PyTorch model: for SmolLM2-135M that is about
3,000 nodes, a good share of them shape arithmetic that onnxruntime re-runs
on every token. This writes the graph directly from the weights instead, out
of onnxruntime's fused CPU kernels, about ten nodes per layer:

    SkipSimplifiedLayerNormalization   RMSNorm and the residual add in one pass
    MatMul (packed Q|K|V)              one weight read instead of three
    GroupQueryAttention                rotary embedding, grouped heads, causal
                                       softmax and the KV-cache append
    MatMul, QuickGelu(alpha=1) = SiLU, Mul, MatMul   the gated MLP

Graph contract (edge/backends/onnx.py runs it):
    inputs   input_ids (1, S) int64
             seqlens_k (1,) int32: tokens in the cache after this call, minus one
             total_sequence_length () int32: seqlens_k + 1
             past_key_values.N.key / .value (1, kv_heads, C, head_dim) float32
    outputs  logits (1, S, vocab) float32
             present.N.key / .value (1, kv_heads, C, head_dim)
When past and present are bound to the same buffer, GroupQueryAttention
appends in place and C is that buffer's capacity (its shared-buffer mode), so
a decode step copies no cache.

Covers LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (QKV bias) and
Qwen3ForCausalLM (an RMSNorm on each query and key head before the rotary
embedding: the packed projection is split, normed per head with
SimplifiedLayerNormalization and given to GroupQueryAttention unpacked),
Gemma 2 and 3 (FAMILIES) and MiniCPM (the Llama layer with scaled embeddings,
residual branches and logits) with default, llama3 or linear rope scaling, or
longrope within its original context (MiniCPM4); `supports()` says no to anything
else and the converter falls back to optimum's exporter.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


def _one(cfg: dict) -> float:
    return 1.0


@dataclass(frozen=True)
class Family:
    """What an architecture adds to the llama layer."""

    qk_norm: bool = False   # an RMSNorm on each query and key head before the rotary embedding
    gemma: bool = False     # norms scale by 1 + weight, a norm after attention and after the MLP
                            # too, GELU (tanh), soft-capping, local layers
    act: str = "silu"
    # Scales from the config: the embedding's (a Mul node, so tied weights stay one table),
    # each residual branch's and the logits' (both folded into weights: no node).
    embed_scale: Callable[[dict], float] | None = None
    residual_scale: Callable[[dict], float] = _one
    logit_scale: Callable[[dict], float] = _one


def _gemma_embed(cfg: dict) -> float:
    return math.sqrt(cfg["hidden_size"])


# MiniCPM: embeddings * scale_emb, each branch * scale_depth / sqrt(layers), logits / (hidden / dim_model_base).
MINICPM = Family(embed_scale=lambda c: float(c["scale_emb"]),
                 residual_scale=lambda c: float(c["scale_depth"]) / math.sqrt(c["num_hidden_layers"]),
                 logit_scale=lambda c: float(c["dim_model_base"]) / c["hidden_size"])

FAMILIES = {
    "LlamaForCausalLM": Family(), "MistralForCausalLM": Family(), "Qwen2ForCausalLM": Family(),
    "Qwen3ForCausalLM": Family(qk_norm=True),
    "Gemma2ForCausalLM": Family(gemma=True, act="gelu_pytorch_tanh", embed_scale=_gemma_embed),
    "Gemma3ForCausalLM": Family(qk_norm=True, gemma=True, act="gelu_pytorch_tanh", embed_scale=_gemma_embed),
    "MiniCPMForCausalLM": MINICPM,
}
ARCHITECTURES = tuple(FAMILIES)
ROPE_TYPES = (None, "default", "llama3", "linear", "longrope")
MS = "com.microsoft"
# Marks the graph so the runtime knows which input contract it follows.
PRODUCER = "edge.onnx_graph"


def supports(config: dict) -> str | None:
    """None when this builder handles `config`, else why not (one phrase)."""
    arch = (config.get("architectures") or [""])[0]
    if arch not in ARCHITECTURES:
        return f"architecture {arch or 'unknown'}"
    fam = FAMILIES[arch]
    act = config.get("hidden_activation") or config.get("hidden_act") or "silu"
    if act != fam.act:
        return f"activation {act}"
    if config.get("mlp_bias"):
        return "MLP bias"
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "longrope" and _longrope_original(config) < int(config.get("max_position_embeddings", 4096)):
        # Past the original context the factors change with the sequence length: no fixed cos/sin table.
        return "rope scaling longrope beyond the original context"
    if kind not in ROPE_TYPES:
        return f"rope scaling {kind}"
    if not fam.gemma and (config.get("use_sliding_window") or (arch == "MistralForCausalLM" and config.get("sliding_window"))):
        return "sliding-window attention"
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        return "partial rotary embedding"
    return None


def _longrope_original(config: dict) -> int:
    s = config.get("rope_scaling") or {}
    return int(s.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
               or config.get("max_position_embeddings", 4096))


def _inv_freq(config: dict, dim: int) -> np.ndarray:
    """Rotary frequencies, with llama3 scaling as transformers computes it."""
    theta = float(config.get("rope_theta", 10000.0))
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    s = config.get("rope_scaling") or {}
    if s.get("rope_type", s.get("type")) == "linear":
        return inv / float(s["factor"])
    if s.get("rope_type", s.get("type")) == "longrope":
        # Within the original context (supports() says no beyond it) longrope divides each frequency
        # by its short factor, and its attention factor is 1 (MiniCPM4).
        return inv / np.asarray(s["short_factor"], dtype=np.float64)
    if s.get("rope_type", s.get("type")) != "llama3":
        return inv
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return np.where(medium, smoothed, scaled)


def load_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float32 numpy (bf16 included, hence torch)."""
    from safetensors import safe_open

    out = {}
    for f in sorted(Path(hf_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                out[k] = st.get_tensor(k).float().numpy()
    return out


class _Graph:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.n = 0

    def weight(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(arr, name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, domain: str = "", outputs=None, **attrs) -> list[str]:
        self.n += 1
        outs = outputs or [f"{op.lower()}_{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(self.h.make_node(op, inputs, outs, name=f"{op}_{self.n}", domain=domain, **attrs))
        return outs


def _layer_kinds(cfg: dict) -> list[str]:
    """"sliding" or "full" per layer, from layer_types or the model's fixed pattern."""
    n = cfg["num_hidden_layers"]
    types = cfg.get("layer_types")
    if types:
        return ["sliding" if t == "sliding_attention" else "full" for t in types]
    every = cfg.get("sliding_window_pattern") or (6 if cfg.get("rope_local_base_freq") else 2)
    return ["full" if (i + 1) % every == 0 else "sliding" for i in range(n)]


def _head_norm(g: _Graph, x: str, n_heads: int, hd: int, weight: np.ndarray, name: str, eps: float) -> str:
    """RMSNorm over each head of x (1, S, n_heads * hd): reshape to heads, norm the last axis, reshape back."""
    heads = g.op("Reshape", [x, g.const(f"{name}.heads", np.array([0, 0, n_heads, hd], np.int64))])[0]
    normed = g.op("SimplifiedLayerNormalization", [heads, g.weight(name, weight)], axis=-1, epsilon=eps, stash_type=1)[0]
    return g.op("Reshape", [normed, g.const(f"{name}.flat", np.array([0, 0, n_heads * hd], np.int64))])[0]


def build(hf_dir: Path, out: Path, weights: dict | None = None) -> Path:
    """Write out/model.onnx (weights inline below 2 GiB, else in model.onnx_data)."""
    import onnx
    from onnx import TensorProto, helper

    from .onnx_layout import DATA, EXTERNAL_DATA_BYTES, HEAD_OUTPUT, MODEL

    cfg = json.loads((Path(hf_dir) / "config.json").read_text(encoding="utf-8"))
    why = supports(cfg)
    if why:
        raise ValueError(f"the fused ONNX graph does not support {why}")
    w = weights if weights is not None else load_weights(hf_dir)
    d, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or d // heads
    eps = float(cfg.get("rms_norm_eps", 1e-6))
    vocab = cfg["vocab_size"]
    max_pos = int(cfg.get("max_position_embeddings", 4096))

    fam = FAMILIES[cfg["architectures"][0]]
    g = _Graph()
    pos = np.arange(max_pos, dtype=np.float64)[:, None] * _inv_freq(cfg, hd)[None, :]
    cos, sin = g.weight("cos_cache", np.cos(pos)), g.weight("sin_cache", np.sin(pos))
    rope = {"full": (cos, sin), "sliding": (cos, sin)}
    if cfg.get("rope_local_base_freq"):  # Gemma 3: local layers have their own base and no scaling
        local = {"rope_theta": cfg["rope_local_base_freq"]}
        pos = np.arange(max_pos, dtype=np.float64)[:, None] * _inv_freq(local, hd)[None, :]
        rope["sliding"] = g.weight("cos_local", np.cos(pos)), g.weight("sin_local", np.sin(pos))
    kinds = _layer_kinds(cfg) if fam.gemma else ["full"] * layers
    scale = float(cfg["query_pre_attn_scalar"]) ** -0.5 if fam.gemma else 1.0 / math.sqrt(hd)
    softcap = float(cfg.get("attn_logit_softcapping") or 0.0)

    def norm_w(name, arr):  # Gemma's RMSNorm scales by (1 + weight)
        return g.weight(name, arr + 1.0 if fam.gemma else arr)

    def rms(x, name, arr):
        return g.op("SimplifiedLayerNormalization", [x, norm_w(name, arr)], axis=-1, epsilon=eps, stash_type=1)[0]

    if fam.qk_norm:
        splits = g.const("qkv_splits", np.array([heads * hd, kv_heads * hd, kv_heads * hd], np.int64))
    embed = w["model.embed_tokens.weight"]
    x = g.op("Gather", [g.weight("embed_tokens", embed), "input_ids"])[0]
    if fam.embed_scale:
        x = g.op("Mul", [x, g.const("embed_scale", np.array(fam.embed_scale(cfg), np.float32))])[0]
    branch = fam.residual_scale(cfg)
    residual, mlp = x, None
    past_in, present_out = [], []
    for i in range(layers):
        p = f"model.layers.{i}."
        ln1 = norm_w(f"l{i}.input_norm", w[p + "input_layernorm.weight"])
        if mlp is None:
            h = g.op("SimplifiedLayerNormalization", [residual, ln1], axis=-1, epsilon=eps, stash_type=1)[0]
        else:
            h, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [mlp, residual, ln1], 4, MS, epsilon=eps)
        a = p + "self_attn."
        qkv_w = np.concatenate([w[a + "q_proj.weight"], w[a + "k_proj.weight"], w[a + "v_proj.weight"]]).T
        qkv = g.op("MatMul", [h, g.weight(f"l{i}.qkv", qkv_w)])[0]
        if a + "q_proj.bias" in w:
            bias = np.concatenate([w[a + "q_proj.bias"], w[a + "k_proj.bias"], w[a + "v_proj.bias"]])
            qkv = g.op("Add", [qkv, g.weight(f"l{i}.qkv_bias", bias)])[0]
        qkv_in = [qkv, "", ""]
        if fam.qk_norm:
            q, k, v = g.op("Split", [qkv, splits], 3, axis=-1)
            shift = 1.0 if fam.gemma else 0.0
            q = _head_norm(g, q, heads, hd, w[a + "q_norm.weight"] + shift, f"l{i}.q_norm", eps)
            k = _head_norm(g, k, kv_heads, hd, w[a + "k_norm.weight"] + shift, f"l{i}.k_norm", eps)
            qkv_in = [q, k, v]
        pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        ok, ov = f"present.{i}.key", f"present.{i}.value"
        past_in += [pk, pv]
        present_out += [ok, ov]
        # GQA's left window, set to the model's window, masks as transformers does for Gemma.
        window = int(cfg["sliding_window"]) if kinds[i] == "sliding" else -1
        attn = g.op("GroupQueryAttention", [*qkv_in, pk, pv, "seqlens_k", "total_sequence_length", *rope[kinds[i]]],
                    domain=MS, outputs=[f"attn_{i}", ok, ov], num_heads=heads, kv_num_heads=kv_heads,
                    do_rotary=1, rotary_interleaved=0, scale=scale, local_window_size=window, softcap=softcap)[0]
        o = g.op("MatMul", [attn, g.weight(f"l{i}.o", w[a + "o_proj.weight"].T * branch)])[0]
        if a + "o_proj.bias" in w:
            o = g.op("Add", [o, g.weight(f"l{i}.o_bias", w[a + "o_proj.bias"] * branch)])[0]
        if fam.gemma:
            o = rms(o, f"l{i}.post_attn_norm", w[p + "post_attention_layernorm.weight"])
            ln2 = norm_w(f"l{i}.pre_mlp_norm", w[p + "pre_feedforward_layernorm.weight"])
        else:
            ln2 = norm_w(f"l{i}.post_norm", w[p + "post_attention_layernorm.weight"])
        h, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [o, residual, ln2], 4, MS, epsilon=eps)
        m = p + "mlp."
        gate = g.op("MatMul", [h, g.weight(f"l{i}.gate", w[m + "gate_proj.weight"].T)])[0]
        up = g.op("MatMul", [h, g.weight(f"l{i}.up", w[m + "up_proj.weight"].T)])[0]
        if fam.gemma:
            act = g.op("FastGelu", [gate], domain=MS)[0]  # GELU, tanh approximation
        else:
            act = g.op("QuickGelu", [gate], domain=MS, alpha=1.0)[0]  # x * sigmoid(x): SiLU
        mlp = g.op("MatMul", [g.op("Mul", [act, up])[0], g.weight(f"l{i}.down", w[m + "down_proj.weight"].T * branch)])[0]
        if fam.gemma:
            mlp = rms(mlp, f"l{i}.post_mlp_norm", w[p + "post_feedforward_layernorm.weight"])
    # The logit scale goes into the final norm's weight, so a tied head stays the embedding table.
    final = (w["model.norm.weight"] + (1.0 if fam.gemma else 0.0)) * fam.logit_scale(cfg)
    norm = g.weight("final_norm", final)
    h = g.op("SkipSimplifiedLayerNormalization", [mlp, residual, norm], 1, MS, epsilon=eps)[0]
    head = w.get("lm_head.weight", embed)  # tied embeddings reuse the table, transposed for MatMul
    cap = float(cfg.get("final_logit_softcapping") or 0.0)
    raw = g.op("MatMul", [h, g.weight("lm_head", head.T)], outputs=[HEAD_OUTPUT if cap else "logits"])[0]
    if cap:  # Gemma 2: cap * tanh(logits / cap)
        c = g.const("final_softcap", np.array(cap, np.float32))
        g.op("Mul", [g.op("Tanh", [g.op("Div", [raw, c])[0]])[0], c], outputs=["logits"])

    f32, i64, i32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
    inputs = [helper.make_tensor_value_info("input_ids", i64, [1, "sequence_length"]),
              helper.make_tensor_value_info("seqlens_k", i32, [1]),
              helper.make_tensor_value_info("total_sequence_length", i32, [])]
    inputs += [helper.make_tensor_value_info(n, f32, [1, kv_heads, "past_sequence_length", hd]) for n in past_in]
    outputs = [helper.make_tensor_value_info("logits", f32, [1, "sequence_length", vocab])]
    outputs += [helper.make_tensor_value_info(n, f32, [1, kv_heads, "present_sequence_length", hd])
                for n in present_out]
    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, producer_name=PRODUCER,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 9
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    external = sum(t.ByteSize() for t in g.inits) > EXTERNAL_DATA_BYTES
    onnx.save_model(model, str(out / MODEL), save_as_external_data=external, location=DATA if external else None)
    return out
