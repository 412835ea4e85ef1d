"""Phone exports of a tiny random model, each loaded by the library the phone runtime is built on."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from edge.apps.export import TARGETS, ExportOptions, export, pick_quant
from edge.device import load_profile
from edge.errors import DoesNotFit, InvalidOption
from tiny_models import tiny_hf_cached

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    return str(tiny_hf_cached("llama"))


@pytest.fixture(scope="module")
def exports(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("phone")
    return {(t, f): export(ExportOptions(target=t, format=f, out=str(out), model=tiny))
            for t, f in (("android", None), ("android", "onnx"), ("ios", None), ("ios", "gguf"))}


def _readme_and_manifest(e):
    readme = (e.path / "README.md").read_text()
    man = json.loads((e.path / "manifest.json").read_text())
    assert e.runtime in readme and f"{e.format}, quant {e.quant}" in readme
    assert man["format"] == e.format and man["quant"] == e.quant and man["export"]["target"] == e.target
    for entry in man["files"]:
        assert not os.path.isabs(entry["path"]) and (e.path / entry["path"]).stat().st_size == entry["size"]
    return man


def test_android_gguf_q4_0_loads_in_llama_cpp(exports):
    e = exports[("android", None)]
    assert (e.format, e.quant) == ("gguf", "q4_0") and "llama.cpp" in e.runtime
    man = _readme_and_manifest(e)
    from llama_cpp import Llama

    llm = Llama(str(e.path / man["main"]), n_ctx=64, verbose=False)
    out = llm.create_completion("hello", max_tokens=4, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1
    from edge.gguf_header import read_info

    assert read_info(e.path / man["main"]).quant == "q4_0"


def test_android_onnx_int4_loads_in_onnxruntime(exports):
    e = exports[("android", "onnx")]
    assert (e.format, e.quant) == ("onnx", "int4") and "ONNX Runtime Mobile" in e.runtime
    man = _readme_and_manifest(e)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(e.path / man["main"]), providers=["CPUExecutionProvider"])
    assert "input_ids" in [i.name for i in sess.get_inputs()]
    import onnx

    ops = {n.op_type for n in onnx.load(str(e.path / man["main"]), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops  # really int4


def test_ios_mlx_4bit_loads_in_mlx_lm(exports):
    e = exports[("ios", None)]
    assert (e.format, e.quant) == ("mlx", "4bit") and "mlx-swift" in e.runtime
    _readme_and_manifest(e)
    from mlx_lm import load, generate

    model, tok = load(str(e.path))
    assert json.loads((e.path / "config.json").read_text())["quantization"]["bits"] == 4
    text = generate(model, tok, prompt="hello", max_tokens=3)
    assert isinstance(text, str)


def test_ios_gguf_alternative(exports):
    e = exports[("ios", "gguf")]
    assert (e.format, e.quant) == ("gguf", "q4_0") and "Swift" in e.runtime
    _readme_and_manifest(e)


def test_quant_follows_profile_memory():
    rt = TARGETS["android"].runtimes[0]
    phone = load_profile("android-arm64-8gb")
    assert pick_quant(rt, 1_000_000_000, phone)[0] == "q4_0"
    assert pick_quant(rt, 2_900_000_000, phone)[0] == "q3_k_m"   # 4-bit would not fit the app's share
    assert pick_quant(rt, 3_300_000_000, phone)[0] == "q2_k"
    with pytest.raises(DoesNotFit, match="Export a smaller model"):
        pick_quant(rt, 7_000_000_000, phone)


def test_bad_options():
    with pytest.raises(InvalidOption, match="ios exports take mlx or gguf, not 'onnx'"):
        ExportOptions(target="ios", format="onnx")
    with pytest.raises(InvalidOption, match="Unknown export target 'symbian'"):
        ExportOptions(target="symbian")


def test_cli_export(tiny, tmp_path, exports):
    r = CliRunner().invoke(__import__("edge.cli", fromlist=["cli"]).cli,
                           ["export", "--target", "android", "--out", str(tmp_path), "-m", tiny, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["format"] == "gguf" and got["quant"] == "q4_0" and got["path"] == str(tmp_path / "tiny-llama-0-android-gguf-q4_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-llama-0-android-gguf-q4_0"]
    r = CliRunner().invoke(__import__("edge.cli", fromlist=["cli"]).cli,
                           ["export", "--target", "ios", "--to", "onnx", "--out", str(tmp_path)])
    assert r.exit_code == 1 and r.output == "Error: ios exports take mlx or gguf, not 'onnx'. Pass --to mlx (or leave it out).\n"
