"""The ONNX Runtime backend and the tokenizers-based tokenizer it shares with MLX.

Tiny random llama checkpoints are converted in-session (fp32, fp16, int8, int4)
to edge's fused graph, and once (fp32) to optimum's export, which the backend
also runs; bad or mismatched artifact files must give one clear BadModelFile each.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edge
from edge.config import GenerationOptions, LoadOptions
from edge.errors import BadModelFile, ContextTooLong, ManifestMismatch
from edge.hf_tokenizer import HFTokenizer
from edge.store import artifact_from_folder

from tiny_models import converted, tiny, tiny_hf_cached

QUANTS = {"onnx": ["fp32", "fp16", "int8", "int4"]}


@pytest.fixture(scope="module")
def arts():
    return tiny("llama", QUANTS)


def load(artifact, **kw):
    from edge.backends import onnx

    kw.setdefault("threads", 1)
    kw.setdefault("n_ctx", 256)
    return onnx.Backend(artifact, LoadOptions(**kw))


@pytest.fixture(scope="module")
def fp32(arts):
    b = load(arts[("onnx", "fp32")])
    yield b
    b.close()


def broken_copy(artifact, tmp_path):
    """A writable copy of an artifact folder, for damaging."""
    dst = tmp_path / artifact.folder.name
    shutil.copytree(artifact.folder, dst)
    return artifact_from_folder(dst)


# -- tokenizer --------------------------------------------------------------------

def test_token_bytes_rebuild_every_text(fp32):
    tok = fp32.tok
    for text in ["Hello world", "naïve café ☕ 😀 — ok", "def f(x):\n\treturn x  # 10:30"]:
        ids = tok.tokenize(text, special=False)
        assert b"".join(tok.token_bytes(i) for i in ids).decode("utf-8") == text == tok.detokenize(ids)


def test_special_tokens_and_eos(fp32):
    tok = fp32.tok
    im_end = tok.token_id("<|im_end|>")
    assert fp32.eos_ids == frozenset({im_end})
    assert (fp32.bos_token, fp32.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tok.tokenize("<|im_end|>") == [im_end]
    assert im_end not in tok.tokenize("<|im_end|>", special=False)
    assert tok.token_bytes(im_end) == b"<|im_end|>"


def test_eos_ids_follow_generation_config(arts, tmp_path):
    a = broken_copy(arts[("onnx", "fp32")], tmp_path)
    (a.folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 2]}))
    assert HFTokenizer(a.folder / "tokenizer.json").eos_ids == frozenset({0, 2})


# -- the forward pass -----------------------------------------------------------------

def test_score_prefill_and_cache_reuse_agree(fp32):
    ids = fp32.tokenize("Paris is the capital of France. Berlin is the capital of")
    rows = fp32.score(ids)
    assert rows.shape == (len(ids), fp32.n_vocab) and rows.dtype == np.float32
    fp32.reset()
    np.testing.assert_allclose(fp32.prefill(ids), rows[-1], atol=1e-4)
    # Rewind to a shared prefix, then extend: the cached positions are reused.
    other = ids[:5] + ids[3:9]
    fresh = load(fp32.artifact).score(other)[-1]
    np.testing.assert_allclose(fp32.prefill(other), fresh, atol=1e-4)
    assert fp32.last_stats.cached_tokens == 5


@pytest.fixture(scope="module")
def optimum_fp32():
    arts = converted("tiny-llama-optimum", tiny_hf_cached("llama"), {"onnx": ["fp32"]}, onnx_graph="optimum")
    b = load(arts[("onnx", "fp32")])
    yield b
    b.close()


def _ops(artifact) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(artifact.main_path), load_external_data=False).graph.node}


def test_fused_and_optimum_graphs_give_the_same_logits(fp32, optimum_fp32):
    assert "GroupQueryAttention" in _ops(fp32.artifact)
    assert "GroupQueryAttention" not in _ops(optimum_fp32.artifact)
    assert (fp32._fused, optimum_fp32._fused) == (True, False)
    assert [b.artifact.manifest["converter"]["onnx_graph"] for b in (fp32, optimum_fp32)] == ["fused", "optimum"]
    ids = fp32.tokenize("Paris is the capital of France. Berlin is the capital of")
    np.testing.assert_allclose(fp32.score(ids), optimum_fp32.score(ids), atol=1e-4)
    # Rewinding the swap buffers of the optimum graph keeps the shared prefix.
    optimum_fp32.reset()
    optimum_fp32.prefill(ids)
    other = ids[:5] + ids[3:9]
    np.testing.assert_allclose(optimum_fp32.prefill(other), fp32.score(other)[-1], atol=1e-4)
    assert optimum_fp32.last_stats.cached_tokens == 5


@pytest.mark.parametrize("graph", ["fused", "optimum"])
def test_small_batches_and_cache_growth_match_one_pass(arts, optimum_fp32, graph):
    art = arts[("onnx", "fp32")] if graph == "fused" else optimum_fp32.artifact
    b = load(art, batch_size=7, n_ctx=400)
    ids = (b.tokenize("The quick brown fox jumps over the lazy dog. ") * 40)[:300]
    rows = b.score(ids)  # 43 batches of 7; cache grows past its first 256 positions
    one = load(art, batch_size=512, n_ctx=400).score(ids)
    np.testing.assert_allclose(rows, one, atol=1e-3)


@pytest.mark.parametrize("quant", ["fp16", "int8", "int4"])
def test_quantized_graphs_generate(arts, fp32, quant):
    b = load(arts[("onnx", quant)])
    ids = b.tokenize("Once upon a time")
    text = "".join(c.text for c in b.generate(ids, GenerationOptions(temperature=0, max_tokens=10, ignore_eos=True)))
    assert b.last_stats.completion_tokens == 10 and text
    agree = (b.score(ids + ids).argmax(1) == fp32.score(ids + ids).argmax(1)).mean()
    assert agree >= 0.5, agree


def test_sampling_is_seeded(fp32):
    ids = fp32.tokenize("Once upon a time")
    opts = dict(temperature=1.0, top_k=0, top_p=1.0, max_tokens=12, ignore_eos=True)
    runs = ["".join(c.text for c in fp32.generate(ids, GenerationOptions(seed=s, **opts))) for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


def test_context_is_enforced(arts):
    b = load(arts[("onnx", "fp32")], n_ctx=32)
    with pytest.raises(ContextTooLong):
        list(b.generate(list(range(5, 45))))
    out = list(b.generate(list(range(5, 25)), GenerationOptions(temperature=0, max_tokens=100, ignore_eos=True)))
    assert b.last_stats.completion_tokens == 12 and out
    with pytest.raises(ContextTooLong, match="--ctx 512 or less"):
        load(arts[("onnx", "fp32")], n_ctx=4096)


def test_edge_load_chat(arts):
    m = edge.load("tiny-llama:onnx-fp32", backend="onnx", n_ctx=256, threads=1)
    assert m.backend_name == "onnx"
    pieces = list(m.stream_chat([{"role": "user", "content": "Hi"}], temperature=0, max_tokens=6, ignore_eos=True))
    assert len(pieces) > 1 and "".join(pieces) == m.chat([{"role": "user", "content": "Hi"}], temperature=0,
                                                          max_tokens=6, ignore_eos=True)
    assert m.stats.cached_tokens == m.stats.prompt_tokens - 1


def test_runtime_imports_neither_torch_nor_transformers(arts):
    path = arts[("onnx", "int8")].folder
    code = ("import sys, edge; from edge.store import artifact_from_folder; from edge.backends import onnx;"
            "from edge.config import LoadOptions;"
            f"b = onnx.Backend(artifact_from_folder({str(path)!r}), LoadOptions(n_ctx=64)); b.forward(b.tokenize('hi'));"
            "print(sorted(m for m in ('torch', 'transformers', 'optimum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- bad artifacts ----------------------------------------------------------------------

def test_missing_or_corrupt_model_file(arts, tmp_path):
    a = broken_copy(arts[("onnx", "fp32")], tmp_path)
    (a.folder / "model.onnx").unlink()
    with pytest.raises(BadModelFile, match="model.onnx is missing"):
        load(a)
    (a.folder / "model.onnx").write_bytes(b"\x08\x07 this is not a protobuf" * 100)
    with pytest.raises(BadModelFile, match="cannot be loaded by onnxruntime.*Re-convert"):
        load(a)


def test_truncated_file_is_caught_by_the_manifest(arts):
    store_art = arts[("onnx", "int8")]
    model = store_art.folder / "model.onnx"
    data = model.read_bytes()
    try:
        model.write_bytes(data[: len(data) // 2])
        with pytest.raises(ManifestMismatch, match="truncated or replaced"):
            edge.load("tiny-llama:onnx-int8", backend="onnx", n_ctx=256)
    finally:
        model.write_bytes(data)


def test_bad_or_mismatched_tokenizer(arts, tmp_path):
    a = broken_copy(arts[("onnx", "fp32")], tmp_path)
    tj = a.folder / "tokenizer.json"
    good = tj.read_text()
    tj.write_text("{not json")
    with pytest.raises(BadModelFile, match="not a valid tokenizer.json"):
        load(a)
    from tokenizers import Tokenizer

    bigger = Tokenizer.from_str(good)
    bigger.add_tokens([f"extra{i}" for i in range(1000)])
    bigger.save(str(tj))
    with pytest.raises(BadModelFile, match="belong to different models"):
        load(a)
    tj.unlink()
    with pytest.raises(BadModelFile, match="tokenizer file .* is missing"):
        load(a)


def test_graph_without_kv_cache(arts, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    a = broken_copy(arts[("onnx", "fp32")], tmp_path)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["ids_f", "axes"], ["logits"])],
        "no_cache",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "n", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), a.folder / "model.onnx")
    with pytest.raises(BadModelFile, match="without a KV cache"):
        load(a)
