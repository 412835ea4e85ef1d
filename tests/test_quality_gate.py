"""The quality gate: a converted artifact below the agreement threshold (or never checked)
never becomes the default and never enters the tune cache, however fast it is, unless it
was kept with --allow-below-threshold. Reproduces the unchecked onnx-int4 from `edge
export` that `edge bench` made the default."""
from __future__ import annotations

import json
import os

import pytest

from edge import manifest as mf
from edge.bench.matrix import Report, update_tune
from edge.config import LoadOptions
from edge.device import probe
from edge.select import QUALITY, choose
from edge.store import Store, artifact_from_folder
from edge.tune_cache import Measurement, TuneResult, lookup, store as store_tune

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    return Store(tmp_path / "home")


def converted_copy(store: Store, quant: str, quality: dict | None, gate: dict | None):
    """A 'converted' GGUF artifact of the default model: the packaged file's bytes, a converter manifest."""
    src = store.resolve(MODEL).runnable()[0]
    folder = store.artifact_dir(MODEL, "gguf", quant)
    folder.mkdir(parents=True)
    main = folder / f"model-{quant}.gguf"
    os.link(src.main_path, main) if os.stat(src.main_path).st_dev == os.stat(folder).st_dev else main.write_bytes(
        src.main_path.read_bytes())
    man = {mf.K_NAME: MODEL, mf.K_FORMAT: "gguf", mf.K_QUANT: quant, mf.K_ARCH: "llama", mf.K_CONTEXT: 8192,
           mf.K_FILES: [mf.describe_file(folder, main)], mf.K_MAIN: main.name, mf.K_TOKENIZER: "embedded",
           mf.K_CHAT_TEMPLATE: "embedded", mf.K_CONVERTER: {"edge": "0.1.0"}}
    if quality is not None:
        man[mf.K_QUALITY] = quality
    if gate is not None:
        man[mf.K_GATE] = gate
    mf.write(folder, man)
    return artifact_from_folder(folder)


def fast_cache(device, good, bad):
    """A tune cache, as old `edge bench` wrote it, that says the bad artifact is far faster."""
    res = TuneResult(MODEL, device.fingerprint, "2026-12-01 12:00", 2, 512)
    res.results = [Measurement("llama.cpp", good.label, good.size, 50.0), Measurement("llama.cpp", bad.label, bad.size, 500.0)]
    store_tune(res, "test")


@pytest.mark.parametrize("quality, gate, why", [
    ({"top1_agreement": 0.77}, {"threshold": 0.9, "passed": False, "allow_below": False},
     "top-1 agreement 0.77 is below 0.90"),
    (None, {"threshold": 0.9, "passed": None, "allow_below": False},
     "its quality was never checked (convert it again with the quality check)"),
])
def test_below_or_unchecked_never_becomes_the_default(store, quality, gate, why):
    device = probe()
    good = store.resolve(MODEL).runnable()[0]
    bad = converted_copy(store, "q4_0", quality, gate)
    fast_cache(device, good, bad)
    c = choose(store.resolve(MODEL), None, LoadOptions(n_ctx=512), device)
    assert c.artifact.label == good.label
    rejected = [(r.artifact.label, r.kind, r.reason) for r in c.rejected if r.kind == QUALITY]
    assert rejected == [(bad.label, QUALITY, why)]
    # Asked for by name, it still runs: the gate decides defaults, not what a user may load.
    assert choose(store.resolve(f"{MODEL}:q4_0"), None, LoadOptions(n_ctx=512), device).artifact.label == bad.label


def test_allowed_below_threshold_competes(store):
    device = probe()
    good = store.resolve(MODEL).runnable()[0]
    bad = converted_copy(store, "q4_0", {"top1_agreement": 0.77}, {"threshold": 0.9, "passed": False, "allow_below": True})
    fast_cache(device, good, bad)
    c = choose(store.resolve(MODEL), None, LoadOptions(n_ctx=512), device)
    assert c.artifact.label == bad.label and c.measured


def test_bench_keeps_gated_artifacts_out_of_the_tune_cache(store):
    device = probe()
    good = store.resolve(MODEL).runnable()[0]
    bad = converted_copy(store, "q4_0", {"top1_agreement": 0.77}, {"threshold": 0.9, "passed": False, "allow_below": False})
    rows = [{"artifact": a.label, "backend": "llama.cpp", "decode_tok_s": tok_s, "ttft_ms": 10.0, "gen_tokens": 8,
             "threads": 2, "n_ctx": 512, "top1_agreement": a.quality.get("top1_agreement"), "error": None}
            for a, tok_s in ((good, 50.0), (bad, 500.0))]
    report = Report(model=MODEL, date="2026-12-01 12:00", device={}, options={}, rows=rows)
    out = update_tune(report, {good.label: good, bad.label: bad}, device)
    assert out["winner"]["artifact"] == good.label
    assert out["left_out"] == {bad.label: "top-1 agreement 0.77 is below 0.90"}
    assert [m.artifact for m in lookup(device.fingerprint, MODEL).results] == [good.label]


def test_tune_lists_but_never_measures_gated_artifacts(store):
    from edge.tune import tune

    converted_copy(store, "q4_0", None, {"threshold": 0.9, "passed": None, "allow_below": False})
    converted_copy(store, "q8_0", {"top1_agreement": 0.5}, {"threshold": 0.9, "passed": False, "allow_below": False})
    # Gated artifacts run only when nothing else can, so with the packaged GGUF there, tune skips them.
    res = tune(MODEL, tokens=2, n_ctx=256)
    by_label = {m.artifact: m for m in res.results}
    assert by_label[f"{MODEL}:gguf-q4_1"].decode_tok_s > 0
    assert {k: (m.decode_tok_s, m.error) for k, m in by_label.items() if k != f"{MODEL}:gguf-q4_1"} == {}
    assert res.winner.artifact == f"{MODEL}:gguf-q4_1"


def test_gate_of_sources_and_checked_artifacts():
    assert mf.gate({mf.K_FORMAT: "gguf", mf.K_FILES: []}) == (True, "not converted by edge (a source model)")
    checked = {mf.K_CONVERTER: {}, mf.K_QUALITY: {"top1_agreement": 0.93}, mf.K_GATE: {"threshold": 0.9}}
    assert mf.gate(checked) == (True, "top-1 agreement 0.93 >= 0.90")
    assert mf.gate({**checked, mf.K_GATE: {"threshold": 0.95}}) == (False, "top-1 agreement 0.93 is below 0.95")


def test_converter_records_the_gate(tmp_path, monkeypatch):
    """A real conversion of a tiny model: the manifest carries the gate verdict and its inputs."""
    pytest.importorskip("transformers")
    from edge import converters
    from tiny_models import tiny_hf_cached

    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = converters.convert(str(tiny_hf_cached("llama")), to="gguf", quant="gguf=q8_0", name="gated",
                             threshold=1.0, progress=False, store=Store(tmp_path / "home"))[0]
    man = json.loads((res.path / mf.FILENAME).read_text())
    agree = man[mf.K_QUALITY]["top1_agreement"]
    assert man[mf.K_GATE] == {"threshold": 1.0, "passed": agree >= 1.0, "allow_below": False}
    if agree < 1.0:
        assert res.warning.endswith("It is kept, but never becomes a default or enters the tune cache "
                                    "(--allow-below-threshold).")
        assert mf.gate(man) == (False, f"top-1 agreement {agree:.2f} is below 1.00")


def test_tune_measures_nothing_below_the_gate(tmp_path, monkeypatch):
    """Only never-checked artifacts (converted with --no-quality): tune lists them, measures none, says why."""
    from click.testing import CliRunner

    from edge.cli import cli
    from tiny_models import converted, tiny_hf_cached

    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    converted("unchecked", tiny_hf_cached("llama"), {"gguf": ["f16"]})
    r = CliRunner().invoke(cli, ["tune", "-m", "unchecked", "-c", "256"])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[1].split() == ["llama.cpp", "unchecked:gguf-f16", "not", "measured:", "quality", "gate:", "its",
                                "quality", "was", "never", "checked", "(convert", "it", "again", "with", "the",
                                "quality", "check)"]
    assert lines[-1] == ("Error: Every artifact of unchecked is below the quality gate or was never checked. Convert it "
                         "again with the quality check (edge convert unchecked --force), or with "
                         "--allow-below-threshold to measure it anyway.")
