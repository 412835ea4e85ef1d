"""Every supported architecture through the converter: the table, GGUF -> Hugging Face, refusals.

Greedy parity of each architecture on every backend is in test_parity.py; here
a tiny random checkpoint per architecture goes through llama.cpp's converter
to an f32 GGUF and back (it must come back exactly), a GGUF of a non-llama
architecture goes the real-world way (`edge import`, then `edge convert` to
all three formats with the quality gate), and unsupported architectures are
refused before any weight is read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edge
from edge.cli import cli
from edge.converters import adapt, convert, from_gguf, onnx_graph, reference, source, to_gguf
from edge.errors import ConversionError
from edge.store import Store
from tiny_models import ARCHS, make_tiny_hf, make_tiny_minicpm4, tiny_hf_cached

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT = "The quick brown fox jumps over the lazy dog. Paris is the capital of France and Berlin"


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory):
    """{arch: path} of each tiny model as an f32 GGUF written by llama.cpp's converter."""
    root = tmp_path_factory.mktemp("arch-gguf")
    out = {}
    for arch in ARCHS:
        hf = tiny_hf_cached(arch)
        if adapt.needs_copy(hf):  # MobileLLM: converted as the Llama it is, as `edge convert` does
            hf = adapt.write_copy(hf, root / f"adapted-{arch}")
        out[arch] = to_gguf.float_gguf(hf, root / f"tiny-{arch}-f32.gguf", "f32")
    return out


def _config(arch: str) -> dict:
    return json.loads((tiny_hf_cached(arch) / "config.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_table_covers_each_tiny_architecture(arch):
    cfg = _config(arch)
    hf_arch = cfg["architectures"][0]
    entry = source.SUPPORTED[hf_arch]
    assert source.check_architecture(cfg, Path(".")) == entry.family
    assert source.GGUF_ARCHITECTURES[entry.gguf] in source.SUPPORTED
    # The table says which ONNX graph the converter writes; the fused builder must agree (on the
    # config the converter sees: MobileLLM's is adapted to a Llama's first).
    seen = adapt.source_config(cfg)
    assert (onnx_graph.supports(seen) is None) == (entry.onnx == "fused"), (arch, onnx_graph.supports(seen))


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_gguf_dequantizes_to_the_same_model(arch, f32_gguf, tmp_path):
    """GGUF -> Hugging Face is exact for f32: same logits, same tokenizer, same architecture."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = from_gguf.from_gguf(f32_gguf[arch], f"deq-{arch}", Store(tmp_path / "store"))
    # A MobileLLM GGUF is a "llama" one: it comes back as Llama.
    want_arch = source.SUPPORTED[source.GGUF_ARCHITECTURES[source.SUPPORTED[_config(arch)["architectures"][0]].gguf]]
    assert src.architecture == want_arch.family
    want_tok, got_tok = AutoTokenizer.from_pretrained(tiny_hf_cached(arch)), AutoTokenizer.from_pretrained(src.hf_dir)
    text = "Hello <|im_start|>user\n café 1234!<|im_end|>\n"
    assert got_tok(text).input_ids == want_tok(text).input_ids
    ids = torch.tensor([want_tok(TEXT).input_ids])
    with torch.no_grad():
        want = reference.load(tiny_hf_cached(arch))(ids).logits
        got = reference.load(src.hf_dir)(ids).logits
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,tokenizer", [("gemma3", "spm"), ("qwen3", "bpe"), ("minicpm", "spm")])
def test_imported_gguf_converts_to_every_format_and_runs(arch, tokenizer, f32_gguf, tmp_path, monkeypatch):
    """`edge import` a non-llama GGUF, `edge convert` it to q8_0 / int8 / 8bit, run each artifact.

    Gemma 3 with a SentencePiece vocabulary (as real Gemma GGUFs have), Qwen3 with a byte-level one,
    MiniCPM (whose GGUF transformers does not read) with a SentencePiece one, as MiniCPM's.
    """
    import llama_cpp

    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    gguf_file = tmp_path / f"{arch}.gguf"
    if tokenizer == "spm":
        hf = make_tiny_hf(arch, tmp_path / f"hf-{arch}", tokenizer="spm")
        to_gguf.float_gguf(hf, gguf_file, "f32")
    else:
        shutil.copy(f32_gguf[arch], gguf_file)
    runner = CliRunner()
    r = runner.invoke(cli, ["import", str(gguf_file), "--name", f"imp-{arch}"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["convert", f"imp-{arch}", "--to", "gguf,onnx,mlx",
                            "--quant", "gguf=q8_0,onnx=int8,mlx=8bit", "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    got = {(a["format"], a["quant"]): a for a in out["artifacts"]}
    assert set(got) == {("gguf", "q8_0"), ("onnx", "int8"), ("mlx", "8bit")}
    for (fmt, _), a in got.items():
        # Random tiny weights have flat logits; a real model's 8-bit agreement is higher (docs/experiments.md).
        assert a["quality"]["top1_agreement"] >= 0.9, a
        assert a["quality"]["tokenizer_match"] or fmt == "gguf", a
    # The GGUF keeps the imported file's vocabulary: llama.cpp tokenizes both alike. (A SentencePiece
    # vocabulary may split differently in llama.cpp and in tokenizers, before and after alike.)
    text = Path(__file__).read_text()[:2000]
    vocab = [llama_cpp.Llama(str(p), vocab_only=True, verbose=False).tokenize(text.encode(), add_bos=False)
             for p in (gguf_file, Path(got[("gguf", "q8_0")]["path"]) / f"imp-{arch}-q8_0.gguf")]
    assert vocab[0] == vocab[1]
    replies = {}
    for backend, (fmt, quant) in {"llama.cpp": ("gguf", "q8_0"), "onnx": ("onnx", "int8"), "mlx": ("mlx", "8bit")}.items():
        model = edge.load(f"imp-{arch}:{fmt}-{quant}", backend=backend, n_ctx=128, threads=1)
        replies[backend] = model.generate("Paris is the capital of", max_tokens=6, temperature=0, ignore_eos=True)
        assert model.stats.completion_tokens == 6, backend
    assert all(replies.values()), replies


def _foreign_gguf(path: Path, arch: str = "minicpm3") -> Path:
    """A small valid GGUF of an architecture the converter does not take."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_gguf_is_refused_before_reading_weights(tmp_path, monkeypatch):
    def never(*a, **k):
        raise AssertionError("the weights were read")

    from edge.converters import pipeline

    store = Store(tmp_path / "store")
    path = _foreign_gguf(tmp_path / "m.gguf")
    store.import_path(path, name="foreign")
    monkeypatch.setattr(from_gguf, "dequantize", never)
    monkeypatch.setattr(from_gguf.mf, "sha256_file", never)
    monkeypatch.setattr(pipeline, "require", never)  # nor torch, transformers, optimum imported for it
    with pytest.raises(ConversionError, match=r"architecture 'minicpm3' \(MiniCPM3's multi-head latent attention\), "
                                              "which the converter does not support") as e:
        convert(str(path), to="onnx", progress=False, store=store)
    assert "llama, qwen2, qwen3, gemma2, gemma3, phi3, minicpm" in e.value.hint
    with pytest.raises(ConversionError, match="architecture 'minicpm3'"):
        convert("foreign", to="onnx,mlx", progress=False, store=store)  # by store name too
    assert not any(store.models_dir.glob("*/hf-fp32"))


def test_unsupported_gguf_cli_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    path = _foreign_gguf(tmp_path / "m.gguf")
    r = CliRunner().invoke(cli, ["convert", str(path), "--to", "onnx"])
    assert r.exit_code == 1
    assert r.output == (f"Error: {path} is a GGUF of architecture 'minicpm3' (MiniCPM3's multi-head latent attention), "
                        "which the converter does not support. "
                        "Supported GGUF architectures: llama, qwen2, qwen3, gemma2, gemma3, phi3, minicpm. "
                        f"Run it as it is with `edge run -m {path}`.\n")


def test_unsupported_folder_lists_the_table(tmp_path):
    folder = tmp_path / "minicpm3"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["MiniCPM3ForCausalLM"], "minicpm3"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError) as e:
        convert(str(folder), to="gguf", progress=False, store=Store(tmp_path / "store"))
    assert str(e.value).startswith("Architecture MiniCPM3ForCausalLM (MiniCPM3's multi-head latent attention) in ")
    assert e.value.hint == f"Supported: {source.supported_list()}."
    for listed in ("Gemma3ForCausalLM (gemma3)", "Phi3ForCausalLM (phi3)", "MiniCPMForCausalLM (minicpm)",
                   "MobileLLMForCausalLM (mobilellm)"):
        assert listed in e.value.hint


def test_mobilellm_with_layer_sharing_is_refused(tmp_path):
    folder = tmp_path / "mobilellm-shared"
    shutil.copytree(tiny_hf_cached("mobilellm"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "layer_sharing": True}))
    with pytest.raises(ConversionError, match="repeats its blocks"):
        convert(str(folder), to="gguf", progress=False, store=Store(tmp_path / "store"), quality=False)
    assert json.loads((folder / "config.json").read_text())["layer_sharing"] is True  # the user's folder is untouched


def test_minicpm_config_for_mlx_lm():
    """mlx-lm's MiniCPM reads an untied head (its tied path skips the logit scale), its own rope base default
    and a required num_key_value_heads: the MLX converter gets them written out; the other targets do not."""
    cfg = {k: v for k, v in _config("minicpm").items() if k not in ("rope_theta", "num_key_value_heads")}
    seen = adapt.target_config(cfg, "mlx")
    assert seen["tie_word_embeddings"] is False and cfg["tie_word_embeddings"] is True
    assert seen["rope_theta"] == 10000.0 and seen["num_key_value_heads"] == cfg["num_attention_heads"]
    assert adapt.target_config(cfg, "onnx") is cfg and adapt.source_config(cfg) is cfg


def test_catalog_architectures_are_converter_families():
    """Each catalog model names the family its manifests will carry (MiniCPM and MobileLLM included)."""
    from edge.models import catalog

    families = {a.family for a in source.SUPPORTED.values()}
    archs = {name: e["architecture"] for name, e in catalog().items()}
    assert {"minicpm", "mobilellm"} <= set(archs.values())
    assert {n: a for n, a in archs.items() if a not in families} == {}


def test_mobilellm_config_becomes_a_llama_one():
    cfg = _config("mobilellm")
    seen = adapt.source_config(cfg)
    assert seen["architectures"] == ["LlamaForCausalLM"] and seen["model_type"] == "llama"
    assert seen["tie_word_embeddings"] is True and cfg["tie_word_embeddings"] is False  # from share_embedding
    assert not {"auto_map", "share_embedding", "layer_sharing"} & set(seen)
    assert seen["head_dim"] == cfg["head_dim"] and seen["num_key_value_heads"] == cfg["num_key_value_heads"]


def _with_pre(src: Path, dst: Path, pre: str) -> Path:
    """A copy of a GGUF file whose tokenizer.ggml.pre is `pre`."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(str(src))
    w = GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(name, pre if name == "tokenizer.ggml.pre" else f.contents(), f.types[0], sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_shape=[int(x) for x in reversed(t.shape)], raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_rebuilt_tokenizer_splits_as_llama_cpp_for_each_pretokenizer(f32_gguf, tmp_path):
    """Llama 3, Qwen, Phi-4 and SmolLM GGUFs name their pre-tokenizer; the rebuilt tokenizer.json must split alike."""
    import llama_cpp
    from transformers import AutoTokenizer

    text = "Hello WORLD, it's 12345 o'clock!\n\n  Don't\tstop: 3.14159 ... CamelCaseWord ÉCOLE café\r\n x"
    seen = {}
    for pre in from_gguf.PRE_TOKENIZERS:
        path = _with_pre(f32_gguf["qwen3"], tmp_path / f"{pre}.gguf", pre)
        want = llama_cpp.Llama(str(path), vocab_only=True, verbose=False).tokenize(text.encode(), add_bos=False, special=False)
        src = from_gguf.from_gguf(path, f"pre-{pre}", Store(tmp_path / "store"))
        assert AutoTokenizer.from_pretrained(src.hf_dir)(text, add_special_tokens=False).input_ids == want, pre
        seen[pre] = tuple(want)
    assert len(set(seen.values())) > 1  # the pre-tokenizer changes the tokens of this text


def test_gguf_pretokenizer_survives_the_round_trip(f32_gguf, tmp_path):
    """A Qwen-style GGUF (pre-tokenizer "qwen2") converted back to GGUF keeps its pre-tokenizer."""
    from edge.gguf_header import read_info

    path = _with_pre(f32_gguf["qwen3"], tmp_path / "qwen2-pre.gguf", "qwen2")
    store = Store(tmp_path / "store")
    res = convert(str(path), to="gguf", quant="gguf=q8_0", name="pre-trip", progress=False, store=store, quality=False)
    assert read_info(res[0].path / "pre-trip-q8_0.gguf").metadata["tokenizer.ggml.pre"] == "qwen2"


def test_phi4_style_rope_survives_dequantization(tmp_path):
    """Partial rotary (3/4 of each head) and long-context rope factors, as Phi-4-mini has, come back from a GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = make_tiny_hf("phi3", tmp_path / "phi4")
    cfg = json.loads((hf / "config.json").read_text())
    rotary = int(cfg["hidden_size"] // cfg["num_attention_heads"] * 0.75)
    cfg.update(partial_rotary_factor=0.75, max_position_embeddings=1024, original_max_position_embeddings=256,
               rope_scaling={"type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(rotary // 2)],
                             "long_factor": [2.0 + 0.5 * i for i in range(rotary // 2)]})
    (hf / "config.json").write_text(json.dumps(cfg))
    gguf_file = to_gguf.float_gguf(hf, tmp_path / "phi4.gguf", "f32")
    src = from_gguf.from_gguf(gguf_file, "phi4", Store(tmp_path / "store"))
    got_cfg = json.loads((src.hf_dir / "config.json").read_text())
    assert got_cfg["partial_rotary_factor"] == 0.75 and got_cfg["original_max_position_embeddings"] == 256
    assert got_cfg["rope_scaling"]["long_factor"] == pytest.approx(cfg["rope_scaling"]["long_factor"])
    ids = torch.tensor([AutoTokenizer.from_pretrained(hf)(TEXT).input_ids])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()(ids).logits
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


def test_gemma3_linear_rope_survives_dequantization(tmp_path):
    """Gemma 3 4B and up scale the global layers' rope linearly (factor 8); the GGUF keeps it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = make_tiny_hf("gemma3", tmp_path / "g3")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
    (hf / "config.json").write_text(json.dumps(cfg))
    gguf_file = to_gguf.float_gguf(hf, tmp_path / "g3.gguf", "f32")
    src = from_gguf.from_gguf(gguf_file, "g3", Store(tmp_path / "store"))
    assert json.loads((src.hf_dir / "config.json").read_text())["rope_scaling"]["factor"] == 8.0
    ids = torch.tensor([AutoTokenizer.from_pretrained(hf)(TEXT).input_ids])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()(ids).logits
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


def test_minicpm4_longrope_survives_dequantization(tmp_path):
    """MiniCPM4's rope factors are tensors in its GGUF; they come back as rope_scaling, and the scales as
    scale_emb / scale_depth / dim_model_base."""
    import torch
    from transformers import AutoTokenizer

    hf = make_tiny_minicpm4(tmp_path / "minicpm4")
    cfg = json.loads((hf / "config.json").read_text())
    gguf_file = to_gguf.float_gguf(hf, tmp_path / "minicpm4.gguf", "f32")
    src = from_gguf.from_gguf(gguf_file, "minicpm4", Store(tmp_path / "store"))
    got_cfg = json.loads((src.hf_dir / "config.json").read_text())
    assert got_cfg["rope_scaling"]["short_factor"] == pytest.approx(cfg["rope_scaling"]["short_factor"])
    assert got_cfg["rope_scaling"]["original_max_position_embeddings"] == cfg["max_position_embeddings"]
    for key in ("scale_emb", "scale_depth", "dim_model_base"):
        assert got_cfg[key] == pytest.approx(cfg[key]), key
    assert got_cfg["tie_word_embeddings"] is True and got_cfg["architectures"] == ["MiniCPMForCausalLM"]
    ids = torch.tensor([AutoTokenizer.from_pretrained(hf)(TEXT).input_ids])
    with torch.no_grad():
        want = reference.load(hf)(ids).logits
        got = reference.load(src.hf_dir)(ids).logits
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


def test_phi3_with_a_known_non_gpt2_pretokenizer_gets_its_byte_level_vocabulary(tmp_path):
    """A Phi-3 folder with a byte-level tokenizer.json but no tokenizer.model (as a GGUF dequantized by
    edge writes it) converts with that vocabulary when llama.cpp knows its pre-tokenizer by name."""
    from gguf import GGUFReader

    hf = make_tiny_hf("phi3", tmp_path / "hf")
    spec = json.loads((hf / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = from_gguf.PRE_TOKENIZERS["qwen2"]
    (hf / "tokenizer.json").write_text(json.dumps(spec))
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    (hf / "tokenizer_config.json").write_text(json.dumps({**tc, "tokenizer_class": "PreTrainedTokenizerFast"}))
    out = to_gguf.float_gguf(hf, tmp_path / "phi3.gguf", "f32")
    fields = GGUFReader(out).fields
    text = lambda key: bytes(fields[key].parts[-1]).decode()
    assert (text("general.architecture"), text("tokenizer.ggml.model"), text("tokenizer.ggml.pre")) == ("phi3", "gpt2", "qwen2")
