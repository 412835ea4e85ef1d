"""The spine: store, GGUF checks, errors at the CLI boundary, pure helpers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.config import GenerationOptions
from edge.errors import BadModelFile, InvalidOption, ModelNotFound
from edge.gguf_header import read_info
from edge.sampling import Sampler
from edge.stops import StopMatcher
from edge.store import Store


@pytest.fixture(scope="module")
def default_gguf():
    return Store().resolve(None).artifacts[0].main_path


def test_help_lists_every_command():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for name in ("run", "chat", "models", "import", "doctor", "which", "convert", "call", "guard", "serve", "bench"):
        assert f"\n  {name} " in r.output


def test_default_model_resolves_to_packaged_gguf(default_gguf):
    ref = Store().resolve(None)
    assert ref.name == "smollm2-135m-instruct"
    art = ref.artifacts[0]
    assert (art.format, art.quant) == ("gguf", "q4_1")
    assert default_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    art.verify(full=False)


def test_gguf_header(default_gguf):
    info = read_info(default_gguf)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.quant == "q4_1"
    assert info.data_end == default_gguf.stat().st_size
    assert "<|im_start|>" in info.chat_template


def test_not_gguf_and_truncated(tmp_path, default_gguf):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"hello world, not a model")
    with pytest.raises(BadModelFile, match="not a GGUF file"):
        read_info(bad)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_gguf.read_bytes()[:3_000_000])
    with pytest.raises(BadModelFile, match="truncated"):
        read_info(cut)


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "store"))  # a store holding only the catalog
    runner = CliRunner()
    r = runner.invoke(cli, ["run", "-m", "no-such-model", "hi"])
    assert r.exit_code == 1
    assert r.output == ("Error: Unknown model 'no-such-model'. Known models: smollm2-135m-instruct. "
                        "Import one with `edge import PATH`, or download one with `edge pull` "
                          "(`edge models --available` lists them).\n")
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"nope")
    r = runner.invoke(cli, ["run", "-m", str(bad), "hi"])
    assert r.exit_code == 1
    assert r.output == (f"Error: {bad} is not a GGUF file (wrong magic bytes). Pass a .gguf file, "
                        "or convert a Hugging Face folder with `edge convert`.\n")
    r = runner.invoke(cli, ["run", "--ctx", "100000", "hi"])
    assert r.exit_code == 1
    assert r.output == ("Error: Context length 100000 is over smollm2-135m-instruct's maximum of 8192. "
                        "Pass --ctx 8192 or less.\n")
    r = runner.invoke(cli, ["run", ""])
    assert r.exit_code == 2
    assert "The prompt is empty." in r.output
    assert "Traceback" not in r.output


def test_import_and_list(tmp_path, default_gguf):
    runner = CliRunner()
    r = runner.invoke(cli, ["import", str(default_gguf), "--name", "my-smol"])
    assert r.exit_code == 0, r.output
    assert r.output == "Imported my-smol (gguf-q4_1, 98.4 MB).\n"
    r = runner.invoke(cli, ["models", "--json"])
    listed = {(m["model"], m["format"], m["quant"]) for m in json.loads(r.output)["models"]}
    assert ("my-smol", "gguf", "q4_1") in listed
    assert ("smollm2-135m-instruct", "gguf", "q4_1") in listed
    assert Store().resolve("my-smol:q4_1").artifacts[0].main_path == default_gguf.resolve()
    with pytest.raises(ModelNotFound):
        Store().resolve("my-smol:q8_0")
    r = runner.invoke(cli, ["rm", "my-smol", "-y"])
    assert r.output == "Removed my-smol (1 artifact).\n"


def test_manifest_detects_truncation(tmp_path, default_gguf):
    import shutil

    from edge.errors import ManifestMismatch

    copy = tmp_path / "copy.gguf"
    shutil.copy(default_gguf, copy)
    art = Store().import_path(copy, name="copy-smol")
    with open(copy, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ManifestMismatch, match="truncated or replaced"):
        Store().resolve("copy-smol").artifacts[0].verify()
    Store().remove("copy-smol")
    assert art.folder is not None and not art.folder.exists()


def test_stop_matcher_holds_back_partial_matches():
    s = StopMatcher(["</end>"])
    out = [s.feed(p) for p in ["Hello </", "en", "d> more"]]
    assert out == ["Hello ", "", ""]
    assert s.stopped
    s = StopMatcher(["STOP"])
    assert s.feed("ST") == "" and s.feed("ay") == "STay" and not s.stopped


def test_sampler():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert Sampler(GenerationOptions(temperature=0))(logits, []) == 1
    assert Sampler(GenerationOptions(temperature=0))(logits, [], banned=[1]) == 2

    def hook(ids, lg):
        lg[:3] = -np.inf

    assert Sampler(GenerationOptions(temperature=0, logits_hook=hook))(logits, []) == 3
    draws = lambda seed: [Sampler(GenerationOptions(temperature=1.0, top_k=0, seed=seed))(logits, []) for _ in range(5)]  # noqa: E731
    assert draws(7) == draws(7)
    assert {Sampler(GenerationOptions(temperature=1.0, top_k=2, seed=s))(logits, []) for s in range(50)} == {1, 2}
    with pytest.raises(InvalidOption):
        GenerationOptions(top_p=0)


def test_misspelt_generation_option_names_the_nearest():
    from edge.config import GenerationOptions
    from edge.errors import InvalidOption

    with pytest.raises(InvalidOption) as err:
        GenerationOptions.from_kwargs(max_token=5)
    assert str(err.value) == "Unknown generation option 'max_token'. Did you mean 'max_tokens'?"
    with pytest.raises(InvalidOption) as err:
        GenerationOptions.from_kwargs(max_tokens=5, colour="red")
    assert str(err.value).startswith("Unknown generation option 'colour'. Valid generation options: ")
    assert GenerationOptions.from_kwargs(max_tokens=5, seed=None).max_tokens == 5


def test_misspelt_load_option_fails_before_loading():
    import edge
    from edge.errors import InvalidOption

    with pytest.raises(InvalidOption) as err:
        edge.load("no-such-model", n_ctxx=512)
    assert str(err.value) == "Unknown load option 'n_ctxx'. Did you mean 'n_ctx'?"


def test_missing_quant_names_what_exists_and_how_to_make_it():
    with pytest.raises(ModelNotFound) as err:
        Store().resolve("smollm2-135m-instruct:q4_k_m")
    assert str(err.value) == ("smollm2-135m-instruct has no 'q4_k_m' artifact; it has gguf-q4_1. "
                              "Make it with `edge convert smollm2-135m-instruct --to gguf --quant gguf=q4_k_m`.")


def test_imported_gguf_of_a_catalog_family_gets_its_defaults(tmp_path, monkeypatch):
    from edge.model import family_defaults
    from edge.models import catalog

    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    store = Store(tmp_path)
    original = store.resolve("smollm2-135m-instruct").runnable()[0]
    copy = tmp_path / "my-copy.gguf"
    copy.write_bytes(original.main_path.read_bytes())
    imported = store.import_path(copy, name="my-copy")
    art = imported if hasattr(imported, "main_path") else store.resolve("my-copy").runnable()[0]
    expected = catalog()["smollm2-135m-instruct"]["system_prompt"]
    assert expected and family_defaults("my-copy", art)["system_prompt"] == expected
    assert family_defaults("smollm2-135m-instruct", None)["system_prompt"] == expected


def test_conversion_source_skips_a_folder_dequantized_from_replaced_weights():
    from edge.store import Artifact, ModelRef

    def gguf(sha):
        return Artifact("m", "gguf", "q8_0", None, {"files": [{"path": "m.gguf", "sha256": sha}]})

    def hf(kind, sha):
        return Artifact("m", "hf", "fp32", None, {"source": {"kind": kind, "sha256": sha}})

    assert ModelRef("m", [hf("gguf", "a"), gguf("a")]).source().format == "hf"
    # Re-imported under the same name: the cached folder no longer matches, the GGUF is converted again.
    assert ModelRef("m", [hf("gguf", "a"), gguf("b")]).source().format == "gguf"
    # A real Hugging Face folder, or a folder whose GGUF is gone, is still the source.
    assert ModelRef("m", [hf("hf", "x"), gguf("b")]).source().format == "hf"
    assert ModelRef("m", [hf("gguf", "a")]).source().format == "hf"
