"""The transformers model an artifact is measured against (quality gate, parity tests).

Most architectures load with AutoModelForCausalLM. Those that are remote code on the
Hub are rebuilt as the transformers class they equal (REFERENCES), so no downloaded
code ever runs: MobileLLM is a Llama once its config is adapted (adapt.py), and
MiniCPM is a Llama whose three scales are folded into its weights.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import adapt


def load(hf_dir: Path, dtype=None):
    """The model of `hf_dir` in eval mode (fp32 unless `dtype` says otherwise)."""
    import torch

    hf_dir = Path(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    arch = (cfg.get("architectures") or [""])[0]
    model = REFERENCES.get(arch, _auto)(hf_dir, cfg, dtype or torch.float32)
    return model.eval()


def _auto(hf_dir: Path, cfg: dict, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype)


def _adapted_llama(hf_dir: Path, cfg: dict, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{k: v for k, v in adapt.source_config(cfg).items() if k != "model_type"})
    return LlamaForCausalLM.from_pretrained(hf_dir, config=config, dtype=dtype)


def minicpm_folded(cfg: dict, weights: dict) -> dict:
    """MiniCPM's weights as an untied Llama's: embeddings * scale_emb, each residual branch's
    output projection * scale_depth / sqrt(layers), the head / (hidden / dim_model_base)."""
    n = cfg["num_hidden_layers"]
    residual = float(cfg["scale_depth"]) / math.sqrt(n)
    embed = weights["model.embed_tokens.weight"]
    out = dict(weights)
    out["model.embed_tokens.weight"] = embed * float(cfg["scale_emb"])
    out["lm_head.weight"] = weights.get("lm_head.weight", embed) / (cfg["hidden_size"] / float(cfg["dim_model_base"]))
    for i in range(n):
        for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            key = f"model.layers.{i}.{name}"
            out[key] = weights[key] * residual
    return out


def _minicpm(hf_dir: Path, cfg: dict, dtype):
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_utils import no_init_weights

    skip = ("architectures", "model_type", "auto_map", "scale_emb", "scale_depth", "dim_model_base",
            "tie_word_embeddings", "torch_dtype", "dtype")
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in skip}, tie_word_embeddings=False,
                         architectures=["LlamaForCausalLM"])
    original = (cfg.get("rope_scaling") or {}).get("original_max_position_embeddings")
    if original and not getattr(config, "original_max_position_embeddings", None):
        # MiniCPM4 keeps it inside rope_scaling; transformers' longrope reads it from the config,
        # and its factor from their ratio, as MiniCPM's own code does.
        config.original_max_position_embeddings = original
        config.rope_scaling = {**config.rope_scaling, "factor": config.max_position_embeddings / original}
    weights = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        weights.update({k: v.to(torch.float32) for k, v in load_file(str(f)).items()})
    with no_init_weights():
        model = LlamaForCausalLM(config)
    model.load_state_dict(minicpm_folded(cfg, weights), strict=True)
    return model.to(dtype)


# Hugging Face architecture -> how to build its transformers reference model.
REFERENCES = {"MobileLLMForCausalLM": _adapted_llama, "MiniCPMForCausalLM": _minicpm}
