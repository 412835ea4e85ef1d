"""`edge bench` on a tiny random llama: conversion of what is missing, one measured row per
artifact x backend, JSON/CSV/JSONL/PNG files, the per-profile recommendation, the tune
cache, rows kept by an interrupted run, and the CLI's errors for bad options."""
from __future__ import annotations

import csv
import json
import os

import pytest
from click.testing import CliRunner

from edge.bench.matrix import ROW_FIELDS, BenchOptions, pareto, recommend, run
from edge.cli import cli
from edge.device import probe
from edge.store import Store
from edge.tune_cache import lookup
from tiny_models import make_tiny_hf

SMALL = dict(prompt_tokens=16, gen_tokens=4, repetitions=2, threads=1, progress=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-home")
    old = os.environ.get("EDGE_HOME")
    os.environ["EDGE_HOME"] = str(root)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield root
    if old is None:
        os.environ.pop("EDGE_HOME", None)
    else:
        os.environ["EDGE_HOME"] = old


@pytest.fixture(scope="module")
def tiny(home):
    return make_tiny_hf("llama", home / "src" / "tiny-bench")


@pytest.fixture(scope="module")
def first(home, tiny):
    out = home / "out"
    opts = BenchOptions(model=str(tiny), json=str(out / "b.json"), csv=str(out / "b.csv"), plot=str(out / "b.png"),
                        anchor=True, **SMALL)
    return run(opts), out


def test_missing_artifacts_are_converted_with_quality(first):
    report, _ = first
    assert sorted((c["format"], c["quant"]) for c in report.conversions) == [("gguf", "q8_0"), ("mlx", "8bit"), ("onnx", "int8")]
    assert all(c["error"] is None and 0 <= c["quality"]["top1_agreement"] <= 1 for c in report.conversions)
    assert {a.label for a in Store().artifacts("tiny-bench")} == {
        "tiny-bench:gguf-q8_0", "tiny-bench:onnx-int8", "tiny-bench:mlx-8bit"}


def test_one_measured_row_per_artifact_and_backend(first):
    report, _ = first
    assert [(r["format"], r["quant"], r["backend"]) for r in report.rows] == [
        ("gguf", "q8_0", "llama.cpp"), ("onnx", "int8", "onnx"), ("mlx", "8bit", "mlx")]
    arts = {a.label: a for a in Store().artifacts("tiny-bench")}
    for r in report.rows:
        assert r["error"] is None, r["error"]
        assert r["threads"] == 1 and r["prompt_tokens"] == 16 and r["gen_tokens"] == 4 and r["repetitions"] == 2
        assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0 and r["ttft_ms"] > 0 and r["load_s"] > 0
        assert r["decode_tok_s_sd"] >= 0 and r["ttft_ms_sd"] >= 0
        # Per child process: a tiny model needs far less than the parent that ran torch for the conversion.
        assert 10 < r["peak_rss_mib"] < 400
        art = arts[r["artifact"]]
        assert r["size_bytes"] == art.size
        assert r["top1_agreement"] == art.quality["top1_agreement"]
        assert r["perplexity"] == art.quality["perplexity"]


def test_anchor_only_on_gguf_with_ratios(first):
    report, _ = first
    gguf, *others = report.rows
    assert gguf["raw_decode_tok_s"] > 0 and gguf["raw_ttft_ms"] > 0
    assert gguf["decode_ratio"] == pytest.approx(gguf["decode_tok_s"] / gguf["raw_decode_tok_s"])
    assert all(r["raw_decode_tok_s"] is None and r["decode_ratio"] is None for r in others)


def test_json_csv_jsonl_and_png_hold_the_rows(first):
    report, out = first
    data = json.loads((out / "b.json").read_text())
    assert [r["artifact"] for r in data["rows"]] == [r["artifact"] for r in report.rows]
    assert data["recommendations"] == report.recommendations
    with open(out / "b.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ROW_FIELDS
    assert [(r["artifact"], r["backend"]) for r in rows] == [(r["artifact"], r["backend"]) for r in report.rows]
    assert float(rows[0]["decode_tok_s"]) == pytest.approx(report.rows[0]["decode_tok_s"], rel=1e-3)
    lines = (out / "b.jsonl").read_text().splitlines()
    assert [json.loads(x)["backend"] for x in lines] == ["llama.cpp", "onnx", "mlx"]
    png = (out / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def _rows_with(report, figures):
    """The measured rows with chosen (decode tok/s, top-1) figures, so the ranking is known."""
    by_backend = {r["backend"]: r for r in report.rows}
    return [dict(by_backend[b], decode_tok_s=tok_s, top1_agreement=top1) for b, (tok_s, top1) in figures.items()]


def test_recommendation_is_the_fastest_good_artifact_that_fits(first):
    report, _ = first
    arts = {a.label: a for a in Store().artifacts("tiny-bench")}
    # MLX is the fastest but below the threshold; of the good two, ONNX is faster.
    rows = _rows_with(report, {"llama.cpp": (10.0, 0.99), "onnx": (20.0, 0.95), "mlx": (100.0, 0.50)})
    recs = {r["profile"]: r for r in recommend(rows, arts, threshold=0.90, this_device=probe())}
    assert set(recs) >= {"this device", "pi4-4gb", "macbook-air-m1-8gb"}
    assert (recs["this device"]["backend"], recs["this device"]["artifact"]) == ("onnx", "tiny-bench:onnx-int8")
    assert recs["this device"]["decode_tok_s"] == 20.0
    # The Pi 4 profile has llama.cpp and onnx: the same pick.
    assert recs["pi4-4gb"]["backend"] == "onnx"
    # Swap the speeds: the pick follows them.
    rows = _rows_with(report, {"llama.cpp": (30.0, 0.99), "onnx": (20.0, 0.95), "mlx": (100.0, 0.50)})
    recs = {r["profile"]: r for r in recommend(rows, arts, threshold=0.90, this_device=probe())}
    assert recs["this device"]["artifact"] == "tiny-bench:gguf-q8_0"
    assert recs["pi4-4gb"]["artifact"] == "tiny-bench:gguf-q8_0"


def test_recommendation_explains_when_nothing_qualifies(first):
    report, _ = first
    arts = {a.label: a for a in Store().artifacts("tiny-bench")}
    rows = _rows_with(report, {"llama.cpp": (10.0, 0.80), "onnx": (20.0, 0.85), "mlx": (100.0, 0.50)})
    recs = recommend(rows, arts, threshold=0.90, this_device=probe())
    assert len(recs) > 1
    assert all(r["artifact"] is None and r["backend"] is None for r in recs)
    assert {r["why"] for r in recs} == {"no measured artifact reaches top-1 0.90"}


def test_tune_cache_holds_the_measured_speeds(first):
    report, _ = first
    cached = lookup(probe().fingerprint, "tiny-bench")
    assert sorted((m.backend, m.decode_tok_s) for m in cached.results) == sorted(
        (r["backend"], round(r["decode_tok_s"], 2)) for r in report.rows)
    assert report.tune["winner"]["artifact"] == cached.winner.artifact


def test_interrupted_run_keeps_finished_rows(first, tiny, home):
    out = home / "cut"
    seen = []

    def stop_after_first(row):
        seen.append(row)
        raise KeyboardInterrupt

    opts = BenchOptions(model=str(tiny), formats="gguf,onnx", convert=False, tune=False,
                        json=str(out / "c.json"), csv=str(out / "c.csv"), **SMALL)
    with pytest.raises(KeyboardInterrupt):
        run(opts, on_row=stop_after_first)
    with open(out / "c.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["artifact"] for r in rows] == ["tiny-bench:gguf-q8_0"] == [r["artifact"] for r in seen]
    assert float(rows[0]["decode_tok_s"]) > 0
    assert [json.loads(x)["artifact"] for x in (out / "c.jsonl").read_text().splitlines()] == ["tiny-bench:gguf-q8_0"]
    assert not (out / "c.json").exists()  # the final report is written only by a finished run


def test_cli_measures_without_converting(first, tiny, home):
    out = home / "cli.csv"
    res = CliRunner().invoke(cli, ["bench", "-m", str(tiny), "--to", "gguf", "--no-convert", "--no-tune", "-q",
                                   "--prompt-tokens", "16", "--gen-tokens", "4", "--repetitions", "1",
                                   "--threads", "1", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    assert "edge bench: tiny-bench, 1 threads, pp16 / tg4, 1 runs" in res.output
    assert "gguf-q8_0" in res.output and "onnx-int8" not in res.output
    assert res.output.splitlines()[-1] == f"Wrote csv: {out}"
    with open(out, newline="") as f:
        assert [r["backend"] for r in csv.DictReader(f)] == ["llama.cpp"]


@pytest.mark.parametrize("args, message", [
    (["--to", "foo"], "Error: Unknown target format 'foo'. Choose from: gguf, onnx, mlx.\n"),
    (["--repetitions", "0"], "Error: --repetitions must be at least 1 (got 0).\n"),
    (["--backends", "tpu"], "Error: Unknown backend 'tpu'. Choose one of: llama.cpp, onnx, mlx.\n"),
    (["--quant", "gguf=q9"], "Error: Unknown gguf quant 'q9'. Choose one of: f32, f16, bf16, q8_0, q6_k, q5_k_m, "
                              "q5_k_s, q5_0, q5_1, q4_k_m, q4_k_s, q4_0, q4_1, q3_k_m, q2_k.\n"),
    (["--min-agreement", "2"], "Error: --min-agreement must be between 0 and 1 (got 2.0).\n"),
])
def test_cli_bad_option_is_one_line(args, message):
    res = CliRunner().invoke(cli, ["bench", *args])
    assert res.exit_code == 1
    assert res.output == message


def test_pareto_front():
    pts = [(0.9, 10.0), (0.95, 8.0), (0.8, 9.0), (0.99, 8.0), (0.5, 12.0)]
    assert pareto(pts) == [0, 3, 4]
