"""Real Hugging Face repo layouts through the converter (converters/workcopy.py).

Tiny random models written the way real repos ship them: facebook/MobileLLM's
pytorch_model.bin with only a SentencePiece tokenizer.model, sharded PyTorch
weights with their index, a chat template kept only in chat_template.jinja;
and what must stay refused: other pickles, a pickle that would run code, a
folder with no tokenizer at all. The user's folder is never written to.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import edge
from edge.converters import convert, workcopy
from edge.errors import BadModelFile
from edge.store import Store
from tiny_models import CHAT_TEMPLATE, IM_END, IM_START, as_pytorch_bin, make_tiny_hf, tiny_hf_cached

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Plain text, text with the chat special tokens, and the spacing SentencePiece treats specially.
TEXTS = ("Paris is the capital of France. The dog sleeps 1234 times.",
         f"{IM_START}user\nHello  there,\tcafé!{IM_END}\n{IM_START}assistant\n",
         "two spaces  inside,\n  two after a newline and a trailing one ")
# Text that starts with a space: transformers' own fast Llama tokenizer (legacy false) puts one prefix
# space fewer before it than its slow one, so every transformers-based tool differs there already.
LEADING = "  two leading spaces"


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize("legacy", [False, True])
def test_mobilellm_layout_converts_to_every_format_with_the_same_token_ids(home, legacy):
    """pytorch_model.bin + tokenizer.model only (MobileLLM-125M's files): GGUF, ONNX and MLX all
    tokenize as transformers' SentencePiece tokenizer does, and pass the quality gate.

    One exception, llama.cpp's own: its SentencePiece tokenizer puts the prefix space before text
    that follows a special token, as transformers' legacy Llama tokenizer does; with legacy false
    the GGUF tokenizes such text differently (the quality gate's text has no special tokens).
    Text that starts with a space is compared under legacy only (LEADING)."""
    from transformers import LlamaTokenizer

    from edge.backends import get

    folder = as_pytorch_bin(make_tiny_hf("mobilellm", home / "MobileLLM-tiny", tokenizer="llama-spm"))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "legacy": legacy}, indent=2))
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "generation_config.json", "pytorch_model.bin", "special_tokens_map.json",
        "tokenizer.model", "tokenizer_config.json"]
    before = _snapshot(folder)
    results = convert(str(folder), to="gguf,onnx,mlx", quant="gguf=q8_0,onnx=int8,mlx=8bit", name="mob", progress=False)
    assert _snapshot(folder) == before  # nothing written into (or through links to) the user's folder
    assert {(r.format, r.quant) for r in results} == {("gguf", "q8_0"), ("onnx", "int8"), ("mlx", "8bit")}
    for r in results:
        assert r.quality["tokenizer_match"] is True and r.quality["top1_agreement"] >= 0.9, (r.format, r.quality)
    # The user's own tokenizer, as MobileLLM's model card loads it (use_fast=False).
    slow = LlamaTokenizer.from_pretrained(folder)
    texts = (*TEXTS, LEADING) if legacy else TEXTS
    want = [slow(t, add_special_tokens=False).input_ids for t in texts]
    assert all(want) and IM_START not in slow.convert_ids_to_tokens(want[0])
    for art in Store().artifacts("mob"):
        backend = get({"gguf": "llama.cpp"}.get(art.format, art.format)).Backend(art, edge.config.LoadOptions(n_ctx=64))
        try:
            got = [backend.tokenize(t, special=True) for t in texts]
        finally:
            backend.close()
        if art.format == "gguf" and not legacy:
            got, want_here = [got[0], got[2]], [want[0], want[2]]
        else:
            want_here = want
        assert got == want_here, art.format
    model = edge.load("mob:gguf-q8_0", n_ctx=128, threads=1)
    try:
        model.generate("Paris is", max_tokens=3, temperature=0, ignore_eos=True)
    finally:
        model.close()
    assert model.stats.completion_tokens == 3


def test_sharded_pytorch_weights_convert_like_safetensors(home):
    """pytorch_model-0000N-of-0000M.bin with their index: the same model as its safetensors form."""
    import torch

    from edge.converters import reference

    folder = home / "sharded"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    convert(str(tiny_hf_cached("llama")), to="gguf", quant="gguf=f32", name="st", progress=False, quality=False)
    as_pytorch_bin(folder, shards=3)
    assert len(list(folder.glob("pytorch_model-*-of-00003.bin"))) == 3 and not list(folder.glob("*.safetensors"))
    before = _snapshot(folder)
    res = convert(str(folder), to="gguf", quant="gguf=f32", name="bins", progress=False, quality=False)
    assert _snapshot(folder) == before
    got, want = Store().resolve("bins").runnable()[0], Store().resolve("st").runnable()[0]
    assert got.manifest["parameters"] == want.manifest["parameters"]
    # The work copy's safetensors load in transformers as the original model.
    copy = workcopy.write(folder, home / "copy")
    assert sorted(p.name for p in copy.glob("model*")) == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
        "model.safetensors.index.json"]
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert torch.equal(reference.load(copy)(ids).logits, reference.load(tiny_hf_cached("llama"))(ids).logits)
    # And llama.cpp's converter wrote the same tensors from them.
    from gguf import GGUFReader

    assert res[0].status == "converted"
    tensors = [{t.name: t.data.tobytes() for t in GGUFReader(str(a.main_path)).tensors} for a in (got, want)]
    assert tensors[0] == tensors[1] and len(tensors[0]) > 10


def test_other_pickles_are_refused(home):
    from click.testing import CliRunner

    from edge.cli import cli

    folder = home / "original"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    (folder / "model.safetensors").unlink()
    (folder / "consolidated.00.pth").write_bytes(b"\0" * 64)
    res = CliRunner().invoke(cli, ["convert", str(folder), "--to", "gguf", "--no-quality"])
    assert res.exit_code == 1
    assert res.output == (f"Error: {folder} has no safetensors weights, only PyTorch pickles edge does not load "
                          "(consolidated.00.pth). Use the model's transformers weights: model.safetensors, or "
                          "pytorch_model.bin (read with torch's weights-only loader).\n")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    import torch

    folder = tmp_path / "evil"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "x": _RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(BadModelFile, match=r"pytorch_model.bin is not a plain PyTorch weights file: torch's "
                                           r"weights-only loader refused it \("):
        convert(str(folder), to="gguf", progress=False, quality=False, store=Store(tmp_path / "store"))
    assert not marker.exists()
    assert not Store(tmp_path / "store").artifacts("evil")


def test_a_folder_without_any_tokenizer_is_refused(tmp_path):
    folder = tmp_path / "notok"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BadModelFile, match="has neither tokenizer.json nor a SentencePiece tokenizer.model"):
        convert(str(folder), to="gguf", progress=False, quality=False, store=Store(tmp_path / "store"))


def test_chat_template_kept_only_in_chat_template_jinja_reaches_every_artifact(home):
    """Recent repos keep the template in chat_template.jinja, not in tokenizer_config.json."""
    folder = home / "jinja"
    shutil.copytree(tiny_hf_cached("qwen2"), folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE + "{# jinja file #}")
    convert(str(folder), to="gguf,onnx,mlx", quant="gguf=f16,onnx=fp32,mlx=fp16", name="jinja", progress=False,
            quality=False)
    messages = [{"role": "user", "content": "Hi"}]
    want = f"{IM_START}user\nHi{IM_END}\n{IM_START}assistant\n"
    for art in Store().artifacts("jinja"):
        if art.format == "hf":
            continue
        if art.format != "gguf":
            assert (art.folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE + "{# jinja file #}", art.format
        model = edge.load(f"jinja:{art.format}-{art.quant}", backend={"gguf": "llama.cpp"}.get(art.format, art.format),
                          n_ctx=64, threads=1)
        try:
            assert model.apply_chat_template(messages) == want, art.format
        finally:
            model.close()


@pytest.mark.parametrize("tokenizer_class", [None, "MiniCPMTokenizer"])
def test_minicpm_without_a_transformers_tokenizer_class_converts(home, tokenizer_class):
    """MiniCPM is remote code: a tokenizer_config.json that names no class (AutoTokenizer then looks up
    the unknown model type) or a remote-code one gets transformers' generic fast class in the work copy."""
    folder = as_pytorch_bin(make_tiny_hf("minicpm", home / "MiniCPM-tiny", tokenizer="llama-spm"))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("tokenizer_class")
    if tokenizer_class:
        cfg.update(tokenizer_class=tokenizer_class, auto_map={"AutoTokenizer": ["tokenization_minicpm.MiniCPMTokenizer", None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    before = _snapshot(folder)
    assert workcopy.needed(folder) == ["PyTorch weights to safetensors", "tokenizer.json from tokenizer.model",
                                       "tokenizer class named"]
    results = convert(str(folder), to="gguf,onnx,mlx", quant="gguf=q8_0,onnx=int8,mlx=8bit", name="cpm", progress=False)
    assert _snapshot(folder) == before
    for r in results:
        assert r.quality["tokenizer_match"] is True and r.quality["top1_agreement"] >= 0.9, (r.format, r.quality)


def test_consolidated_copy_of_the_weights_is_left_out(tmp_path):
    """Mistral's repos carry consolidated.safetensors beside the transformers shards: a second copy."""
    from edge.converters import source

    folder = tmp_path / "mistral-layout"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    shutil.copy(folder / "model.safetensors", folder / "consolidated.safetensors")
    src = source.from_hf_folder(folder, "m", kind="hf", origin=str(folder))
    assert src.parameters == source.from_hf_folder(tiny_hf_cached("llama"), "m", kind="hf", origin="x").parameters
    assert [p.name for p in source.weight_files(folder)] == ["model.safetensors"]


def test_chat_template_json_of_the_source_is_used(tmp_path):
    """chat_template.json (as multimodal Gemma 3 repos ship it) when the folder has no template of its own."""
    from edge.converters import source

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    assert source.write_chat_template(out) is None
    assert source.write_chat_template(out, src).read_text() == CHAT_TEMPLATE


def test_saved_rotary_buffers_are_left_out_of_the_work_copy(tmp_path):
    """Llama 2 era PyTorch checkpoints carry each layer's rotary inv_freq buffer: not a weight."""
    import torch
    from safetensors import safe_open

    folder = as_pytorch_bin(make_tiny_hf("llama", tmp_path / "old"))
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    want = workcopy.pickle_parameters(folder)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(state, folder / "pytorch_model.bin")
    assert workcopy.pickle_parameters(folder) == want
    copy = workcopy.write(folder, tmp_path / "copy")
    with safe_open(str(copy / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert keys == set(state) - {"model.layers.0.self_attn.rotary_emb.inv_freq"}
