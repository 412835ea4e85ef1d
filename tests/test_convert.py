"""The converter on tiny random llama and qwen2 checkpoints: every format, manifests, parity, bad input.

Conversions are shared at module scope: each tiny model is converted once to
GGUF, ONNX and MLX, and the tests inspect the results.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.converters import ConvertOptions, convert
from edge.converters.options import parse_quants
from edge import manifest as mf
from edge.errors import BadModelFile, ConversionError, InvalidOption, MissingExtra
from edge.store import Store
from tiny_models import make_tiny_hf, tiny_hf_cached

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Quants per tiny model: between them they cover a float, an 8-bit and a 4-bit type of each format.
PLAN = {
    "llama": "gguf=q8_0,onnx=int8,mlx=8bit",
    "qwen2": "gguf=q4_k_m,onnx=int4,mlx=4bit",
}
PROMPT = [{"role": "user", "content": "Paris is the capital of"}]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("convert-store"))


@pytest.fixture(scope="module")
def converted(store):
    """{arch: {format: Result}} for both tiny models through all three formats."""
    out = {}
    for arch, quant in PLAN.items():
        results = convert(str(tiny_hf_cached(arch)), quant=quant, name=f"tiny-{arch}", progress=False, store=store)
        out[arch] = {r.format: r for r in results}
    return out


# -- tiny model builder -----------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_model_is_a_complete_hf_folder(arch):
    from transformers import AutoConfig, AutoTokenizer

    path = tiny_hf_cached(arch)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert (path / name).is_file(), name
    cfg = AutoConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert cfg.model_type == arch
    assert cfg.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nParis is the capital of<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_tiny_model_is_deterministic(tmp_path):
    a = make_tiny_hf("llama", tmp_path / "a", seed=3)
    b = make_tiny_hf("llama", tmp_path / "b", seed=3)
    c = make_tiny_hf("llama", tmp_path / "c", seed=4)
    digest = lambda p: mf.sha256_file(p / "model.safetensors")  # noqa: E731
    assert digest(a) == digest(b) != digest(c)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


# -- options ------------------------------------------------------------------------------

def test_quant_spec_parsing():
    assert parse_quants("gguf=q4_k_m,gguf=Q8_0,mlx=4", ("gguf", "onnx", "mlx")) == {
        "gguf": ("q4_k_m", "q8_0"), "onnx": ("int8",), "mlx": ("4bit",)}
    assert parse_quants("int4", ("gguf", "onnx")) == {"gguf": ("q8_0",), "onnx": ("int4",)}
    with pytest.raises(InvalidOption, match="Unknown gguf quant 'q9'"):
        parse_quants("gguf=q9", ("gguf",))
    with pytest.raises(InvalidOption, match="not a target"):
        parse_quants("mlx=8bit", ("gguf",))
    with pytest.raises(InvalidOption, match="Unknown target format 'tflite'"):
        ConvertOptions(to="gguf,tflite")


# -- artifacts ----------------------------------------------------------------------------

LAYOUT = {  # format -> (main, tokenizer, chat_template, files that must be there)
    "gguf": (None, "embedded", "embedded", ()),
    "onnx": ("model.onnx", "tokenizer.json", "chat_template.jinja",
             ("model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja")),
    "mlx": (".", "tokenizer.json", "chat_template.jinja",
            ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja")),
}


@pytest.mark.parametrize("arch", list(PLAN))
@pytest.mark.parametrize("fmt", ["gguf", "onnx", "mlx"])
def test_artifact_layout_and_manifest(converted, store, arch, fmt):
    r = converted[arch][fmt]
    folder = store.artifact_dir(f"tiny-{arch}", fmt, r.quant)
    assert r.path == folder and folder.is_dir()
    man = mf.read(folder)
    main, tokenizer, template, files = LAYOUT[fmt]
    if fmt == "gguf":
        main = f"tiny-{arch}-{r.quant}.gguf"
        assert [p.name for p in folder.iterdir() if p.name not in (mf.FILENAME, mf.SIDECAR)] == [main]
    assert (man["main"], man["tokenizer"], man["chat_template"]) == (main, tokenizer, template)
    for name in files:
        assert (folder / name).is_file(), name
    assert man["name"] == f"tiny-{arch}" and man["format"] == fmt and man["quant"] == r.quant
    assert man["architecture"] == arch
    assert man["parameters"] == 98624 if arch == "llama" else man["parameters"] > 98624  # qwen2 has qkv biases
    assert man["context_length"] == 512
    assert man["source"]["kind"] == "hf" and len(man["source"]["sha256"]) == 64
    assert man["converter"]["edge"] and man["seconds"] > 0
    listed = {f["path"] for f in man["files"]}
    assert listed == {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in (mf.FILENAME, mf.SIDECAR)}
    assert all(f["size"] > 0 and len(f["sha256"]) == 64 for f in man["files"])
    mf.verify(folder, man, full=True)
    assert r.size == sum(f["size"] for f in man["files"])
    if fmt != "gguf":
        assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()
    q = man.get("quality")
    assert q and q == r.quality, r.warning
    assert q["tokens"] == 512 and q["tokenizer_match"] is True
    assert q["perplexity"] > 1 and q["source_perplexity"] > 1 and 0 <= q["top1_agreement"] <= 1


def test_store_lists_converted_artifacts(converted, store):
    labels = {a.label for a in store.artifacts("tiny-llama")}
    assert labels == {"tiny-llama:gguf-q8_0", "tiny-llama:onnx-int8", "tiny-llama:mlx-8bit"}


def test_8bit_artifacts_agree_with_source(converted):
    # 8-bit keeps a random model's argmax almost everywhere; 4-bit may not, and is only reported.
    for fmt in ("gguf", "onnx", "mlx"):
        assert converted["llama"][fmt].quality["top1_agreement"] >= 0.85, fmt
        ppl = converted["llama"][fmt].quality
        assert abs(ppl["perplexity"] - ppl["source_perplexity"]) / ppl["source_perplexity"] < 0.05, fmt


def _hf_greedy(hf_dir: Path, n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True)
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=tok.pad_token_id)
    return out[0, len(ids):].tolist()


def _prompt_ids(hf_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_dir).apply_chat_template(PROMPT, add_generation_prompt=True)


def gguf_generate(path: Path, n: int) -> tuple[list[int], str]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=256, verbose=False)
    out = llm.create_chat_completion(PROMPT, max_tokens=n, temperature=0)
    text = out["choices"][0]["message"]["content"]
    return out["usage"]["completion_tokens"], text


def onnx_generate(folder: Path, prompt_ids: list[int], n: int) -> list[int]:
    """Greedy decoding in plain onnxruntime, feeding the inputs the graph asks for.

    optimum's export takes attention_mask and position_ids; edge's fused graph takes
    seqlens_k and total_sequence_length. Both return present = past + new tokens.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    wants = {i.name for i in sess.get_inputs()}
    past = {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)
            for i in sess.get_inputs() if i.name.startswith("past_key_values")}
    ids, out = list(prompt_ids), []
    step = ids
    for _ in range(n):
        total = len(ids)
        extra = {"attention_mask": np.ones([1, total], np.int64),
                 "position_ids": np.arange(total - len(step), total, dtype=np.int64)[None],
                 "seqlens_k": np.array([total - 1], np.int32),
                 "total_sequence_length": np.array(total, np.int32)}
        feed = {"input_ids": np.array([step], np.int64), **{k: v for k, v in extra.items() if k in wants}, **past}
        res = sess.run(None, feed)
        names = [o.name for o in sess.get_outputs()]
        tok = int(res[0][0, -1].argmax())
        past = {n_.replace("present", "past_key_values"): v for n_, v in zip(names[1:], res[1:])}
        out.append(tok)
        ids.append(tok)
        step = [tok]
    return out


def mlx_generate(folder: Path, n: int) -> str:
    from mlx_lm import generate, load

    model, tok = load(str(folder))
    prompt = tok.apply_chat_template(PROMPT, add_generation_prompt=True)
    return generate(model, tok, prompt, max_tokens=n, verbose=False)


@pytest.mark.parametrize("arch", list(PLAN))
def test_each_artifact_generates_in_its_own_library(converted, arch):
    r = converted[arch]
    n_tokens, _ = gguf_generate(r["gguf"].path / mf.read(r["gguf"].path)["main"], 6)
    assert n_tokens >= 1
    hf = tiny_hf_cached(arch)
    assert len(onnx_generate(r["onnx"].path, _prompt_ids(hf), 6)) == 6
    assert isinstance(mlx_generate(r["mlx"].path, 6), str)


def test_full_precision_artifacts_match_the_source_exactly(store):
    """f32 GGUF, fp32 ONNX: greedy tokens identical to transformers on the source."""
    hf = tiny_hf_cached("llama")
    results = convert(str(hf), to="gguf,onnx", quant="gguf=f32,onnx=fp32", name="tiny-llama-fp", progress=False,
                      store=store)
    by = {r.format: r for r in results}
    assert by["gguf"].quality["top1_agreement"] >= 0.99
    assert by["onnx"].quality["top1_agreement"] >= 0.99
    want = _hf_greedy(hf, 8)
    assert onnx_generate(by["onnx"].path, _prompt_ids(hf), 8) == want
    from llama_cpp import Llama

    llm = Llama(str(by["gguf"].path / "tiny-llama-fp-f32.gguf"), n_ctx=256, verbose=False)
    ids = _prompt_ids(hf)
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(hf).apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    got = []
    for tok in llm.generate(ids, temp=0.0, top_k=1):
        got.append(tok)
        if len(got) == 8:
            break
    assert got == want


# -- sources ------------------------------------------------------------------------------

def test_gguf_source_becomes_a_cached_hf_folder(converted, store, tmp_path):
    """A GGUF file is dequantized to an fp32 HF folder once; later conversions reuse it."""
    from transformers import AutoTokenizer

    f32 = convert(str(tiny_hf_cached("qwen2")), to="gguf", quant="gguf=f32", name="tiny-qwen2-f32",
                  progress=False, store=store, quality=False)[0]
    gguf_file = tmp_path / "tiny-q.gguf"
    shutil.copy(f32.path / "tiny-qwen2-f32-f32.gguf", gguf_file)
    res = convert(str(gguf_file), to="onnx", quant="onnx=fp32", name="from-gguf", progress=False, store=store)[0]
    hf_dir = store.artifact_dir("from-gguf", "hf", "fp32")
    man = mf.read(hf_dir)
    assert man["format"] == "hf" and man["source"]["kind"] == "gguf"
    assert man["source"]["sha256"] == mf.sha256_file(gguf_file)
    mf.verify(hf_dir, man, full=True)
    # f32 GGUF -> HF is lossless: the ONNX of it predicts exactly what the original model does.
    assert res.quality["top1_agreement"] == 1.0 and res.quality["tokenizer_match"]
    src_tok = AutoTokenizer.from_pretrained(tiny_hf_cached("qwen2"))
    new_tok = AutoTokenizer.from_pretrained(hf_dir)
    text = "Hello world 1234, café!"
    assert new_tok(text).input_ids == src_tok(text).input_ids
    assert new_tok.eos_token == "<|im_end|>"
    assert "<|im_start|>" in (hf_dir / "chat_template.jinja").read_text()
    stamp = (hf_dir / "model.safetensors").stat().st_mtime_ns
    convert(str(gguf_file), to="mlx", quant="mlx=8bit", name="from-gguf", progress=False, store=store, quality=False)
    assert (hf_dir / "model.safetensors").stat().st_mtime_ns == stamp


# -- overwrite, strictness, interruption ---------------------------------------------------

def test_present_artifact_is_reported_and_other_weights_need_force(converted, store):
    r = converted["llama"]["gguf"]
    before = mf.read(r.path)["created"]
    same = convert(str(tiny_hf_cached("llama")), to="gguf", quant="gguf=q8_0", name="tiny-llama", progress=False,
                   store=store)
    assert [(x.status, x.path, x.quality) for x in same] == [("present", r.path, mf.read(r.path)["quality"])]
    assert mf.read(r.path)["created"] == before
    with pytest.raises(ConversionError, match="already has a gguf-q8_0 artifact.*other weights.*--force"):
        convert(str(tiny_hf_cached("llama", seed=1)), to="gguf", quant="gguf=q8_0", name="tiny-llama",
                progress=False, store=store)
    assert mf.read(r.path)["created"] == before
    time.sleep(1.1)
    again = convert(str(tiny_hf_cached("llama")), to="gguf", quant="gguf=q8_0", name="tiny-llama", force=True,
                    progress=False, store=store, quality=False)[0]
    assert mf.read(again.path)["created"] != before
    mf.verify(again.path, mf.read(again.path), full=True)


def test_strict_fails_below_threshold_and_writes_nothing(store):
    hf = tiny_hf_cached("llama")
    with pytest.raises(ConversionError, match=r"gguf q2_k: top-1 agreement .* below 1.00; try gguf=q3_k_m"):
        convert(str(hf), to="gguf", quant="gguf=q2_k", name="strict", strict=True, threshold=1.0, progress=False,
                store=store)
    assert not store.artifact_dir("strict", "gguf", "q2_k").exists()
    assert list(store.tmp_dir().iterdir()) == []
    res = convert(str(hf), to="gguf", quant="gguf=q2_k", name="strict", threshold=1.0, progress=False, store=store)[0]
    assert res.warning.startswith("gguf q2_k: top-1 agreement") and "try gguf=q3_k_m" in res.warning


class _Interrupt:
    """A progress reporter that stops the run (as Ctrl-C would) when a step starts."""

    def __init__(self, when: str):
        self.when = when

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    from contextlib import contextmanager

    @contextmanager
    def step(self, label):
        if self.when in label:
            raise KeyboardInterrupt
        yield


@pytest.mark.parametrize("when", ["quantize", "quality"])
def test_interrupted_conversion_leaves_nothing(store, when):
    from edge.converters.pipeline import convert as run

    opts = ConvertOptions(source=str(tiny_hf_cached("llama")), to="gguf", quant="gguf=q4_0", name="interrupted")
    with pytest.raises(KeyboardInterrupt):
        run(opts, store=store, reporter=_Interrupt(when))
    assert not (store.models_dir / "interrupted").exists()
    assert list(store.tmp_dir().iterdir()) == []


def test_killed_conversion_leaves_nothing_and_rerun_is_clean(tmp_path):
    """SIGKILL mid-conversion: no artifact appears; the next run removes the dead run's work folder."""
    home = tmp_path / "home"
    # The child's quantize step stalls after writing, so the kill always lands mid-conversion
    # however fast the machine is.
    code = ("import time, edge.converters, edge.converters.to_onnx as t\n"
            "q = t.QUANTIZERS['int8']\n"
            "t.QUANTIZERS['int8'] = lambda *a: (q(*a), time.sleep(120))\n"
            "edge.converters.convert(%r, to='onnx', quant='onnx=int8', name='killed', progress=False)"
            % str(tiny_hf_cached("llama")))
    env = {**os.environ, "EDGE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not any((home / "tmp").glob("convert-*")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    assert any((home / "tmp").glob("convert-*")), "the conversion never started its work folder"
    assert not (home / "models" / "killed").exists()
    from edge.converters.work import clean_stale

    removed = clean_stale(Store(home))
    assert removed and not any((home / "tmp").glob("convert-*"))


# -- bad input ----------------------------------------------------------------------------

def test_folder_without_config(tmp_path, store):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(BadModelFile, match="has no config.json"):
        convert(str(tmp_path), to="gguf", progress=False, store=store)


def test_unsupported_architecture(tmp_path, store):
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="Architecture GPT2LMHeadModel .* not supported.*Supported: Llama"):
        convert(str(folder), to="gguf", progress=False, store=store)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(tmp_path, store, damage):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_hf_cached("llama"), folder)
    w = folder / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 64)
    with pytest.raises(BadModelFile, match="truncated|not a valid safetensors"):
        convert(str(folder), to="gguf", progress=False, store=store)
    assert not (store.models_dir / "broken").exists()


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_corrupt_gguf(converted, tmp_path, store, damage):
    src = converted["llama"]["gguf"].path / "tiny-llama-q8_0.gguf"
    data = src.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"NOPE" + data[4:])
    with pytest.raises(BadModelFile, match="truncated|not a GGUF file"):
        convert(str(bad), to="onnx", progress=False, store=store)


def test_unknown_quant_fails_before_any_work(store):
    with pytest.raises(InvalidOption, match="Unknown onnx quant 'int3'. Choose one of: fp32, fp16, int8, int4."):
        convert(str(tiny_hf_cached("llama")), to="onnx", quant="onnx=int3", progress=False, store=store)


def test_missing_extra_names_it(monkeypatch, store):
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # as if mlx-lm were not installed
    with pytest.raises(MissingExtra, match=r"mlx_lm is not installed .*pip install 'edge\[mlx\]'"):
        convert(str(tiny_hf_cached("llama")), to="mlx", progress=False, store=store)
