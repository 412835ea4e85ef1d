"""edge's fused ONNX graph (converters/onnx_graph.py) against transformers, in plain onnxruntime.

The graph contract: past and present bound to one buffer per tensor, seqlens_k
and total_sequence_length say how long the cache is after the call. Prompts go
in chunks after a filled cache too, as chat turns do. Also the 8-bit
embedding that quantization puts in place of the fp32 table.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tiny_models import tiny_hf_cached

CAPACITY = 64


class Shared:
    """The tiny graph run with the cache shared in place, as the backend runs it."""

    def __init__(self, path, cfg):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        self.shape = [1, cfg["num_key_value_heads"], CAPACITY, hd]
        self.names = [i.name[len("past_key_values."):] for i in self.s.get_inputs() if i.name.startswith("past_")]
        self.cache = [np.zeros(self.shape, np.float32) for _ in self.names]
        self.vocab = cfg["vocab_size"]

    def __call__(self, chunk: list[int], past: int) -> np.ndarray:
        b = self.s.io_binding()
        ids = np.array([chunk], np.int64)
        total = past + len(chunk)
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        for name, buf in zip(self.names, self.cache):
            b.bind_input("past_key_values." + name, "cpu", 0, np.float32, self.shape, buf.ctypes.data)
            b.bind_output("present." + name, "cpu", 0, np.float32, self.shape, buf.ctypes.data)
        out = np.empty((1, len(chunk), self.vocab), np.float32)
        b.bind_output("logits", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        self.s.run_with_iobinding(b)
        return out[0]

    def chunks(self, ids: list[int], cuts: list[int]) -> np.ndarray:
        edges = [0, *cuts, len(ids)]
        return np.concatenate([self(ids[a:b], a) for a, b in zip(edges, edges[1:])])


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3", "gemma2", "gemma3", "minicpm", "mobilellm"])
def built(request, tmp_path_factory):
    from edge.converters import onnx_graph

    from edge.converters import adapt

    hf = tiny_hf_cached(request.param)
    if adapt.needs_copy(hf):  # MobileLLM: the converter builds it as the Llama it is
        hf = adapt.write_copy(hf, tmp_path_factory.mktemp(f"adapted-{request.param}"))
    out = onnx_graph.build(hf, tmp_path_factory.mktemp(f"fused-{request.param}"))
    return hf, out, json.loads((hf / "config.json").read_text())


def _reference(hf, ids):
    import torch

    from edge.converters import reference

    model = reference.load(hf)  # MiniCPM: the Llama with its scales folded into the weights
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_fused_graph_matches_transformers_in_any_chunking(built):
    hf, out, cfg = built
    ids = list(range(5, 29))
    want = _reference(hf, ids)
    for cuts in ([], [8, 9, 10, 11, 12], [1, 2, 3, 16]):
        got = Shared(out / "model.onnx", cfg).chunks(ids, cuts)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_fused_graph_is_small(built):
    import onnx

    _, out, cfg = built
    nodes = onnx.load(str(out / "model.onnx")).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("GroupQueryAttention") == cfg["num_hidden_layers"]
    # Per-head query/key norms (Qwen3, Gemma 3) add a Split and two Reshape-norm-Reshape per layer,
    # Gemma's norms after attention and after the MLP two more.
    arch = cfg["architectures"][0]
    per_layer = 12 + (7 if arch in ("Qwen3ForCausalLM", "Gemma3ForCausalLM") else 0) + (2 if "Gemma" in arch else 0)
    assert len(nodes) <= per_layer * cfg["num_hidden_layers"] + 4


def test_unsupported_configs_are_named():
    from edge.converters.onnx_graph import supports

    base = {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu"}
    assert supports(base) is None
    assert supports({**base, "architectures": ["GPT2LMHeadModel"]}) == "architecture GPT2LMHeadModel"
    assert supports({**base, "hidden_act": "gelu"}) == "activation gelu"
    assert supports({**base, "rope_scaling": {"rope_type": "yarn"}}) == "rope scaling yarn"
    assert supports({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}) is None


@pytest.mark.parametrize("tied", [True, False])
def test_quantized_embedding_is_8bit_and_stored_once_when_tied(built, tmp_path, monkeypatch, tied):
    import onnx
    from onnx import numpy_helper

    from edge.converters import to_onnx

    hf, out, cfg = built
    src = out
    if not tied:  # give the output projection its own weights
        model = onnx.load(str(out / "model.onnx"))
        head = next(t for t in model.graph.initializer if t.name == "lm_head")
        arr = numpy_helper.to_array(head)
        head.CopyFrom(numpy_helper.from_array(arr + np.random.default_rng(0).normal(0, 0.05, arr.shape).astype(np.float32),
                                              "lm_head"))
        src = tmp_path / "untied"
        src.mkdir()
        onnx.save(model, str(src / "model.onnx"))
    q = to_onnx.quantize(src, tmp_path / "int8", "int8")
    model = onnx.load(str(q / "model.onnx"))
    names = {t.name for t in model.graph.initializer}
    assert "embed_tokens" not in names  # no fp32 table
    assert ("embed_tokens_q8" in names) is (not tied)
    assert "GatherBlockQuantized" in {n.op_type for n in model.graph.node}
    # Against the same int8 graph with the fp32 table kept: only the embedding differs.
    monkeypatch.setattr(to_onnx, "_quantize_embedding", lambda model: False)
    plain = to_onnx.quantize(src, tmp_path / "int8-fp32-table", "int8")
    ids = list(range(5, 29))
    with_q8 = Shared(q / "model.onnx", cfg).chunks(ids, [])
    with_fp32 = Shared(plain / "model.onnx", cfg).chunks(ids, [])
    assert (with_q8.argmax(1) == with_fp32.argmax(1)).mean() >= 0.9  # tiny random models have near-ties
    assert np.abs(with_q8 - with_fp32).mean() < 0.05 * np.abs(with_fp32).mean()


def _minicpm4(path):
    """The tiny MiniCPM with MiniCPM4's long-context rope (longrope, factors per frequency)."""
    from tiny_models import make_tiny_minicpm4

    hf = make_tiny_minicpm4(path)
    return hf, json.loads((hf / "config.json").read_text())


def test_minicpm4_longrope_matches_the_reference(tmp_path):
    from edge.converters import onnx_graph

    hf, cfg = _minicpm4(tmp_path / "minicpm4")
    out = onnx_graph.build(hf, tmp_path / "fused")
    ids = list(range(5, 29))
    want = _reference(hf, ids)
    got = Shared(out / "model.onnx", cfg).chunks(ids, [8])
    np.testing.assert_allclose(got, want, atol=1e-4)
    plain = _reference(tiny_hf_cached("minicpm"), ids)  # the same weights without the factors
    assert np.abs(plain - want).max() > 1e-2


def test_longrope_past_the_original_context_is_named():
    from edge.converters.onnx_graph import supports

    cfg = {"architectures": ["MiniCPMForCausalLM"], "hidden_act": "silu", "max_position_embeddings": 65536,
           "rope_scaling": {"rope_type": "longrope", "original_max_position_embeddings": 32768}}
    assert supports(cfg) == "rope scaling longrope beyond the original context"
    assert supports({**cfg, "max_position_embeddings": 32768}) is None
