"""Selection: the decision on every device profile, memory fit, rejections and clear errors.

Artifacts are fakes in a temporary store: a manifest that declares the real
size of a model of that kind, a config.json with its shape, and a small file;
selection reads only sizes and metadata. The real SmolLM2 GGUF checks the
KV-cache shape read from a GGUF header.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge import backends
from edge import manifest as mf
from edge.cli import cli
from edge.config import LoadOptions
from edge.device import load_profile, profile_names
from edge.errors import BackendUnavailable, ContextTooLong, DoesNotFit
from edge.formats import QUANTS
from edge.select import MEASURED, MEMORY, NO_ARTIFACT, NOT_INSTALLED, RANKED, choose, fit, kv_per_token, match_rule, rules
from edge.store import Store

# (layers, kv heads, head dim, parameters, max context)
SHAPES = {
    "demo-135m": (30, 3, 64, 134_515_008, 8192),
    "demo-1b": (16, 8, 64, 1_235_814_400, 131072),
    "demo-3b": (28, 8, 128, 3_212_749_824, 131072),
    "demo-8b": (32, 8, 128, 8_030_261_248, 131072),
}


def add_artifact(store: Store, model: str, fmt: str, quant: str, size: int, with_shape: bool = True):
    layers, kv, hd, params, ctx = SHAPES[model]
    folder = store.artifact_dir(model, fmt, quant)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"\0" * 64)
    if with_shape:
        (folder / "config.json").write_text(json.dumps({
            "num_hidden_layers": layers, "num_attention_heads": kv * 4, "num_key_value_heads": kv,
            "hidden_size": kv * 4 * hd}))
    mf.write(folder, {mf.K_NAME: model, mf.K_FORMAT: fmt, mf.K_QUANT: quant, mf.K_PARAMS: params,
                      mf.K_CONTEXT: ctx, mf.K_MAIN: "weights.bin",
                      mf.K_FILES: [{"path": "weights.bin", "size": size}]})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("select-store"))
    for fmt, quant, size in [("gguf", "q8_0", 1_320_000_000), ("gguf", "q4_0", 770_000_000),
                             ("gguf", "q4_k_m", 808_000_000), ("onnx", "int8", 1_600_000_000),
                             ("mlx", "4bit", 700_000_000)]:
        add_artifact(s, "demo-1b", fmt, quant, size)
    add_artifact(s, "demo-135m", "gguf", "q4_0", 91_000_000)
    add_artifact(s, "demo-135m", "gguf", "q8_0", 145_000_000)
    add_artifact(s, "demo-3b", "gguf", "f16", 6_430_000_000)
    add_artifact(s, "demo-8b", "gguf", "q8_0", 8_540_000_000)
    return s


def ref(store, name):
    return store.resolve(name)


def by_kind(choice, kind):
    return sorted((c.backend, c.artifact.quant if c.artifact else None) for c in choice.rejected if c.kind == kind)


# -- the decision on every profile ------------------------------------------------------
EXPECTED = {
    # profile: (model, backend, quant, threads, gpu_layers, rule)
    "pi4-4gb": ("demo-1b", "llama.cpp", "q4_0", 4, 0, "arm"),
    "pi5-8gb": ("demo-1b", "llama.cpp", "q4_0", 4, 0, "arm"),
    "pi-zero-2w": ("demo-135m", "llama.cpp", "q4_0", 4, 0, "arm"),
    "macbook-air-m1-8gb": ("demo-1b", "mlx", "4bit", 4, 0, "apple-silicon"),
    "macbook-air-m2-16gb": ("demo-1b", "mlx", "4bit", 4, 0, "apple-silicon"),
    "laptop-x86-16gb": ("demo-1b", "llama.cpp", "q4_k_m", 8, 0, "x86"),
    "laptop-x86-16gb-nvidia": ("demo-1b", "llama.cpp", "q4_k_m", 6, -1, "nvidia"),
    "android-arm64-8gb": ("demo-1b", "llama.cpp", "q4_0", 4, 0, "arm"),
    "iphone-15-pro": ("demo-1b", "llama.cpp", "q4_0", 2, -1, "export-only"),
}


def test_every_profile_has_an_expected_decision():
    assert set(EXPECTED) == set(profile_names())


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_decision_per_profile(store, profile):
    model, backend, quant, threads, gpu, rule = EXPECTED[profile]
    c = choose(ref(store, model), profile=profile, export=True, tuned=False)
    assert (c.backend, c.artifact.quant, c.threads, c.gpu_layers, c.rule) == (backend, quant, threads, gpu, rule)
    assert c.device == profile and c.fit.ok and not c.measured
    assert c.reasons[0].startswith(f"rule '{rule}' for {profile}")
    assert any(r.startswith("memory: needs") for r in c.reasons)
    # Every other (backend, artifact) pair is listed with why it lost.
    n_pairs = sum(1 for a in ref(store, model).runnable()) + sum(
        1 for e in backends.REGISTRY.values() if not any(a.format == e.format for a in ref(store, model).runnable()))
    assert len(c.rejected) == n_pairs - 1
    assert all(r.reason and r.kind for r in c.rejected)


def test_pi4_rejections_say_why(store):
    c = choose(ref(store, "demo-1b"), profile="pi4-4gb", tuned=False)
    assert by_kind(c, NOT_INSTALLED) == [("mlx", "4bit")]
    assert by_kind(c, RANKED) == [("llama.cpp", "q4_k_m"), ("llama.cpp", "q8_0"), ("onnx", "int8")]
    reasons = {(r.backend, r.artifact.quant): r.reason for r in c.rejected}
    assert reasons[("mlx", "4bit")] == "not installed on pi4-4gb"
    assert reasons[("onnx", "int8")] == "fits, but rule 'arm' prefers llama.cpp"
    assert reasons[("llama.cpp", "q8_0")] == "fits, but rule 'arm' prefers q4_0 over q8_0"
    assert "threads: 4 (one per physical core)" in c.reasons


def test_apple_without_mlx_artifact_uses_llama_cpp_with_metal(store):
    only_gguf = store.resolve("demo-1b:gguf")
    c = choose(only_gguf, profile="macbook-air-m1-8gb", tuned=False)
    assert (c.backend, c.artifact.quant, c.gpu_layers) == ("llama.cpp", "q4_k_m", -1)
    assert "gpu layers: all, on Metal" in c.reasons
    assert by_kind(c, NO_ARTIFACT) == [("mlx", None), ("onnx", None)]


def test_nvidia_offloads_only_the_layers_that_fit(store):
    c = choose(ref(store, "demo-8b"), profile="laptop-x86-16gb-nvidia", tuned=False)
    # 8.54 GB of weights + KV cache cannot all go to an 8 GiB GPU (85% usable): 26 of 32 layers do.
    assert c.backend == "llama.cpp" and c.gpu_layers == 26
    assert any(r.startswith("gpu layers: 26 of 32") for r in c.reasons)


def test_nvidia_profile_without_cuda_build_runs_on_cpu(store):
    d = load_profile("laptop-x86-16gb-nvidia")
    d.gpu_offload = False
    c = choose(ref(store, "demo-1b"), device=d, tuned=False)
    assert (c.rule, c.gpu_layers) == ("nvidia-cpu-build", 0)


def test_export_only_device_refuses_to_run(store):
    with pytest.raises(BackendUnavailable, match="No Python backend runs on iphone-15-pro"):
        choose(ref(store, "demo-1b"), profile="iphone-15-pro")


# -- memory --------------------------------------------------------------------------------
def test_kv_cache_from_real_gguf_header():
    art = next(a for a in Store().resolve().runnable() if a.format == "gguf")
    per_token, source = kv_per_token(art, "llama.cpp")
    # SmolLM2-135M: 30 layers, 3 KV heads of 64, K and V at f16.
    assert (per_token, source) == (2 * 30 * 3 * 64 * 2, "GGUF header")
    f = fit(art, "llama.cpp", 2048, load_profile("pi4-4gb"))
    assert f.kv_cache == per_token * 2048 and f.weights == art.size and f.ok


def test_kv_cache_estimated_without_shape(store):
    add_artifact(store, "demo-1b", "onnx", "int4", 900_000_000, with_shape=False)
    (store.artifact_dir("demo-1b", "onnx", "int4") / "config.json").unlink(missing_ok=True)
    art = next(a for a in store.resolve("demo-1b:int4").runnable())
    per_token, source = kv_per_token(art, "onnx")
    assert source == "estimated from the parameter count"
    assert 20_000 < per_token < 200_000  # ~1.5 * sqrt(1.2e9) * 2 bytes at fp32


def test_too_big_suggests_a_quant(store):
    with pytest.raises(DoesNotFit) as e:
        choose(ref(store, "demo-3b"), profile="pi4-4gb", tuned=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("demo-3b does not fit pi4-4gb: the smallest candidate, demo-3b:gguf-f16 on llama.cpp, needs 6.75 GB")
    assert msg.endswith("Use a gguf q5_1 artifact (about 2.41 GB; edge convert demo-3b --to gguf --quant gguf=q5_1).")


def test_too_long_context_suggests_a_shorter_one():
    with pytest.raises(DoesNotFit) as e:
        choose(Store().resolve(), load=LoadOptions(n_ctx=8192), profile="pi-zero-2w", tuned=False)
    assert str(e.value).endswith("Use --ctx 3840 with smollm2-135m-instruct:gguf-q4_1.")
    c = choose(Store().resolve(), load=LoadOptions(n_ctx=3840), profile="pi-zero-2w", tuned=False)
    assert c.fit.ok


def test_nothing_fits_says_so(store):
    with pytest.raises(DoesNotFit) as e:
        choose(ref(store, "demo-1b"), profile="pi-zero-2w", tuned=False)
    assert str(e.value).endswith("No quant or context of it fits: use a smaller model.")
    c_err = e.value
    assert "the smallest candidate, demo-1b:mlx-4bit" not in str(c_err)  # mlx is not installed on the Pi


def test_context_over_the_model_maximum(store):
    with pytest.raises(ContextTooLong, match="Pass --ctx 8192 or less"):
        choose(ref(store, "demo-135m"), load=LoadOptions(n_ctx=16384), profile="pi5-8gb", tuned=False)


# -- forcing a backend ---------------------------------------------------------------------
def test_forced_backend_not_installed(store):
    with pytest.raises(BackendUnavailable) as e:
        choose(ref(store, "demo-1b"), "mlx", profile="pi4-4gb", tuned=False)
    assert str(e.value) == ("Backend mlx cannot run demo-1b on pi4-4gb: not installed on pi4-4gb. "
                            "Install it, or drop --backend to let edge choose.")


def test_forced_backend_without_artifact():
    with pytest.raises(BackendUnavailable) as e:
        choose(Store().resolve(), "onnx", tuned=False)
    assert "no onnx artifact of smollm2-135m-instruct" in str(e.value)
    assert "edge convert smollm2-135m-instruct --to onnx" in str(e.value)


def test_forced_backend_wins_over_rules(store):
    c = choose(ref(store, "demo-1b"), "onnx", profile="laptop-x86-16gb", tuned=False)
    assert (c.backend, c.artifact.quant) == ("onnx", "int8") and c.reasons[0] == "forced with --backend"
    assert all(r.backend == "onnx" for r in c.rejected)


def test_memory_rejection_listed_when_another_candidate_fits(store):
    c = choose(ref(store, "demo-135m"), profile="pi-zero-2w", load=LoadOptions(n_ctx=4096), tuned=False)
    assert c.artifact.quant == "q4_0"
    mem = [r for r in c.rejected if r.kind == MEMORY]
    assert [r.artifact.quant for r in mem] == ["q8_0"] and mem[0].reason.startswith("does not fit memory: needs")


# -- the rules table ------------------------------------------------------------------------
def test_rules_table_is_consistent():
    table = rules()
    assert table["rules"][-1]["when"] == {}
    for rule in table["rules"]:
        assert rule["name"] and rule["why"]
        assert all(b in backends.REGISTRY for b in rule["backends"])
        for fmt, order in {**table["quant_order"], **rule.get("quant_order", {})}.items():
            assert set(order) <= set(QUANTS[fmt]), (rule["name"], fmt)
    assert match_rule(load_profile("pi4-4gb"))["name"] == "arm"


# -- CLI -----------------------------------------------------------------------------------
def test_which_cli_exact_output(store, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(store.root))
    res = CliRunner().invoke(cli, ["which", "-m", "demo-135m", "--profile", "pi4-4gb"])
    assert res.exit_code == 0, res.output
    path = store.artifact_dir("demo-135m", "gguf", "q4_0") / "weights.bin"
    assert res.output == f"""demo-135m on pi4-4gb: llama.cpp runs gguf-q4_0 (91.0 MB), 4 threads
  path: {path}
why:
  - rule 'arm' for pi4-4gb: Raspberry Pi / ARM Linux / Android: llama.cpp GGUF, Q4_0 first (llama.cpp repacks it for the ARM dot-product kernels), one thread per core
  - memory: needs 0.22 GB (0.09 GB weights + 0.05 GB KV cache for 2048 tokens + 0.08 GB runtime), 2.92 GB usable (KV shape from config.json)
  - threads: 4 (one per physical core)
rejected:
  - llama.cpp demo-135m:gguf-q8_0: fits, but rule 'arm' prefers q4_0 over q8_0
  - onnx: no onnx artifact of demo-135m
  - mlx: no mlx artifact of demo-135m
"""


def test_which_cli_json_and_errors(store, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(store.root))
    runner = CliRunner()
    res = runner.invoke(cli, ["which", "-m", "demo-1b", "--profile", "macbook-air-m2-16gb", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert (data["backend"], data["artifact"]["quant"], data["device"]) == ("mlx", "4bit", "macbook-air-m2-16gb")
    assert {r["kind"] for r in data["rejected"]} == {RANKED}
    res = runner.invoke(cli, ["which", "-m", "demo-1b", "--profile", "pi-zero-2w"])
    assert res.exit_code == 1 and res.output.startswith("Error: demo-1b does not fit pi-zero-2w")
    assert res.output.count("\n") == 1
    res = runner.invoke(cli, ["which", "-m", "demo-1b", "--profile", "pi4-4gb", "--backend", "mlx"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "not installed on pi4-4gb" in res.output
    res = runner.invoke(cli, ["which", "-m", "demo-1b", "--ctx", "200000"])
    assert res.exit_code == 1 and "Pass --ctx 131072 or less." in res.output


def test_server_slots_count_in_memory(tmp_path):
    """KV cache is per sequence: --parallel N needs N contexts, and the device default shrinks to fit."""
    s = Store(tmp_path)
    add_artifact(s, "demo-1b", "gguf", "q4_0", 770_000_000)
    pick = lambda ctx, par: choose(s.resolve("demo-1b"), load=LoadOptions(n_ctx=ctx, parallel=par),
                                   profile="pi4-4gb", tuned=False)
    one, four = pick(8192, 1), pick(8192, 0)
    assert (one.parallel, one.fit.sequences, four.parallel, four.fit.sequences) == (1, 1, 4, 4)
    assert four.fit.kv_cache == 4 * one.fit.kv_cache
    assert "KV cache for 4 x 8192 tokens" in four.fit.describe()
    assert "parallel: 4 (the default for this much RAM)" in four.reasons
    # 4 x 16384 tokens of KV do not fit 4 GB: the default gives way to one slot, and says why.
    shrunk = pick(16384, 0)
    assert (shrunk.parallel, shrunk.fit.sequences) == (1, 1)
    assert "parallel: 1 (4 sequences of 16384 tokens do not fit memory)" in shrunk.reasons
    # Asked for explicitly, it is an error that names what fits.
    with pytest.raises(DoesNotFit) as e:
        pick(16384, 4)
    assert "2.15 GB KV cache for 4 x 16384 tokens" in str(e.value)
    assert str(e.value).endswith("Use --parallel 3 or --ctx 15616 with demo-1b:gguf-q4_0 "
                                 "or a gguf q3_k_m artifact (about 0.60 GB; edge convert demo-1b --to gguf --quant gguf=q3_k_m).")
