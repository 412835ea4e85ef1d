"""Regenerate reference_greedy.json: greedy replies of SmolLM2-135M-Instruct in transformers.

transformers loads the same GGUF weights (dequantized to fp32) and applies the
same chat template and default system prompt that edge uses; the llama.cpp
backend is tested against these replies. Needs the `convert` extra (torch):

    HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_reference.py
"""
from __future__ import annotations

import json
from pathlib import Path

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 2 + 2?",
]
MAX_NEW = 24


def main():
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge.models import catalog

    entry = catalog()["smollm2-135m-instruct"]
    art = entry["artifacts"][0]
    folder = Path(importlib.util.find_spec(art["package"]).submodule_search_locations[0])
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=art["file"])
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=art["file"], dtype=torch.float32)
    out = {"model": "smollm2-135m-instruct", "system_prompt": entry["system_prompt"], "max_new_tokens": MAX_NEW, "cases": []}
    for q in PROMPTS:
        msgs = [{"role": "system", "content": entry["system_prompt"]}, {"role": "user", "content": q}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False)
        new = gen[0, ids.shape[1]:].tolist()
        out["cases"].append({"prompt": q, "prompt_ids": ids[0].tolist(), "tokens": new,
                             "text": tok.decode(new, skip_special_tokens=True)})
        print(q, "->", repr(out["cases"][-1]["text"]))
    Path(__file__).with_name("reference_greedy.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
