"""`edge tune` for real: two GGUF quants of SmolLM2-135M measured, cached and used by selection.

The embedded Q4_1 GGUF is registered in a temporary store next to a Q4_0
requantized from it with llama.cpp's own quantizer.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.device import probe
from edge.select import MEASURED, choose
from edge.store import Store
from edge.tune import tune
from edge.tune_cache import cache_path, lookup

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import llama_cpp

    root = tmp_path_factory.mktemp("tune-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_HOME", str(root))
        s = Store(root)
        q41 = s.resolve(MODEL).runnable()[0]
        out = root / "SmolLM2-135M-Instruct.Q4_0.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        params.allow_requantize = True
        params.nthread = 2
        assert llama_cpp.llama_model_quantize(str(q41.main_path).encode(), str(out).encode(), params) == 0
        s.import_path(out, name=MODEL)
        yield s


@pytest.fixture(scope="module")
def measured(store):
    result = tune(MODEL, tokens=4, n_ctx=256)
    return result, cache_path().read_text()


@pytest.fixture
def first(measured):
    """The first tune's result, with the cache file as that run left it: tests that
    rewrite or corrupt the cache do not change what the others see."""
    result, text = measured
    cache_path().write_text(text)
    return result


def test_tune_measures_every_candidate(store, first):
    assert not first.cached
    assert sorted(m.artifact for m in first.results) == [f"{MODEL}:gguf-q4_0", f"{MODEL}:gguf-q4_1"]
    for m in first.results:
        assert m.backend == "llama.cpp" and m.error is None
        assert m.decode_tok_s > 0 and m.ttft_s > 0 and m.tokens == 4
    data = json.loads(cache_path().read_text())
    entry = data["devices"][probe().fingerprint]["models"][MODEL]
    assert entry["winner"]["artifact"] == first.winner.artifact


def test_tune_stores_the_decode_efficiency(store, first):
    from edge.select import kv_per_token
    from edge.tune_cache import efficiencies

    eff = efficiencies(probe().fingerprint)["llama.cpp"]
    win = first.winner
    art = next(a for a in store.resolve(MODEL).runnable() if a.label == win.artifact)
    per_token, _ = kv_per_token(art, "llama.cpp")
    expected = win.decode_tok_s * (art.size + per_token * win.tokens) / (eff["bandwidth_gbs"] * 1e9)
    assert eff["model"] == MODEL and eff["date"] == first.date
    assert eff["value"] == pytest.approx(expected, rel=1e-2)


def test_choose_prefers_the_measured_winner(store, first):
    c = choose(store.resolve(MODEL))
    win = first.winner
    lose = next(m for m in first.results if m is not win)
    assert c.measured and c.artifact.label == win.artifact
    assert f"measured: {win.decode_tok_s:.1f} tok/s vs {lose.decode_tok_s:.1f} tok/s (llama.cpp {lose.artifact})" in c.reasons[1]
    loser = next(r for r in c.rejected if r.artifact and r.artifact.label == lose.artifact)
    assert loser.kind == MEASURED
    assert loser.reason == f"measured slower: {lose.decode_tok_s:.1f} tok/s vs {win.decode_tok_s:.1f} tok/s"


def test_second_tune_uses_the_cache(store, first):
    again = tune(MODEL, tokens=4, n_ctx=256)
    assert again.cached and again.date == first.date
    assert [(m.artifact, m.decode_tok_s) for m in again.results] == [(m.artifact, m.decode_tok_s) for m in first.results]


def test_measurement_beats_the_rules(store, first):
    # The x86 rule ranks q4_0 before q4_1; a cache that measured q4_1 faster must win.
    assert choose(store.resolve(MODEL), tuned=False).artifact.quant == "q4_0"
    data = json.loads(cache_path().read_text())
    entry = data["devices"][probe().fingerprint]["models"][MODEL]
    for r in entry["results"]:
        r["decode_tok_s"] = 50.0 if r["artifact"].endswith("q4_1") else 20.0
    cache_path().write_text(json.dumps(data))
    c = choose(store.resolve(MODEL))
    assert c.artifact.quant == "q4_1" and "measured: 50.0 tok/s vs 20.0 tok/s" in c.reasons[1]


def test_corrupt_cache_falls_back_to_rules_and_retune_rewrites_it(store, first):
    cache_path().write_text("{not json")
    c = choose(store.resolve(MODEL))
    assert not c.measured and c.artifact.quant == "q4_0"
    res = tune(MODEL, retune=True, tokens=4, n_ctx=256)
    assert not res.cached and len(res.results) == 2
    assert lookup(probe().fingerprint, MODEL).results == res.results


def test_tune_cli(store, first):
    runner = CliRunner()
    res = runner.invoke(cli, ["tune", "-m", MODEL, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["cached"] is True and data["winner"]["backend"] == "llama.cpp"
    res = runner.invoke(cli, ["tune", "-m", MODEL])
    lines = res.output.splitlines()
    assert lines[0] == f"{MODEL} (cached from {data['date']}; --retune to measure again, {data['threads']} threads):"
    assert lines[-2] == f"winner: llama.cpp {data['winner']['artifact']}"
    assert lines[-1] == f"cache: {cache_path()}"
    res = runner.invoke(cli, ["which", "-m", MODEL])
    assert res.exit_code == 0 and "  - measured: " in res.output and "measured slower" in res.output
    res = runner.invoke(cli, ["tune", "-m", MODEL, "-n", "1"])
    assert res.exit_code == 1 and res.output == "Error: --max-tokens must be at least 2 (got 1).\n"
