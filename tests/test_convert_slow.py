"""The real SmolLM2-135M-Instruct through the converter (slow: a few minutes on 2 cores).

The embedded Q4_1 GGUF is dequantized into an fp32 Hugging Face folder, then
converted to GGUF q8_0, ONNX int8 and MLX 8bit; the 8-bit artifacts must
agree with the source on at least 95% of next-token predictions.
"""
from __future__ import annotations

import os

import pytest

from edge.converters import convert
from edge import manifest as mf
from edge.store import Store

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("smollm-store"))
    results = convert(None, quant="gguf=q8_0,onnx=int8,mlx=8bit", progress=False, store=store)
    return store, {r.format: r for r in results}


def test_default_model_converts_to_all_formats(smollm):
    store, by = smollm
    assert set(by) == {"gguf", "onnx", "mlx"}
    hf = store.artifact_dir("smollm2-135m-instruct", "hf", "fp32")
    assert mf.read(hf)["source"]["kind"] == "gguf"
    for fmt, r in by.items():
        man = mf.read(r.path)
        mf.verify(r.path, man, full=True)
        assert man["parameters"] == 134515008 and man["license"] == "apache-2.0"
        q = man["quality"]
        assert q["tokenizer_match"] is True, fmt
        assert 5 < q["source_perplexity"] < 30, q
        assert q["tokens"] > 300


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_8bit_top1_agreement(smollm, fmt):
    q = smollm[1][fmt].quality
    assert q["top1_agreement"] >= 0.95, q
    assert abs(q["perplexity"] - q["source_perplexity"]) / q["source_perplexity"] < 0.05, q


def test_gguf_artifact_answers_in_llama_cpp(smollm):
    from llama_cpp import Llama

    r = smollm[1]["gguf"]
    llm = Llama(str(r.path / mf.read(r.path)["main"]), n_ctx=512, verbose=False)
    # The catalog's system prompt for this model (what `edge run` uses too).
    messages = [{"role": "system", "content": "You are a helpful AI assistant."},
                {"role": "user", "content": "What is the capital of France?"}]
    out = llm.create_chat_completion(messages,
                                     max_tokens=16, temperature=0)
    assert "Paris" in out["choices"][0]["message"]["content"]


def test_mlx_artifact_answers_in_mlx_lm(smollm):
    from mlx_lm import generate, load

    model, tok = load(str(smollm[1]["mlx"].path))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True)
    assert "Paris" in generate(model, tok, prompt, max_tokens=16, verbose=False)
