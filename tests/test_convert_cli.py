"""`edge convert` through click's CliRunner: exact error lines, the summary table, --json."""
from __future__ import annotations

import json
import os

from click.testing import CliRunner

from edge.cli import cli
from tiny_models import tiny_hf_cached

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(*args):
    return CliRunner().invoke(cli, ["convert", *args])


def test_missing_path_is_one_line():
    r = run("/nonexistent/model-dir")
    assert r.exit_code == 1
    assert r.output == ("Error: No file or folder at /nonexistent/model-dir. "
                        "Pass a Hugging Face folder, a .gguf file or a model name.\n")


def test_unknown_quant_is_one_line():
    r = run("--to", "gguf", "--quant", "gguf=q9")
    assert r.exit_code == 1
    assert r.output == ("Error: Unknown gguf quant 'q9'. Choose one of: f32, f16, bf16, q8_0, q6_k, q5_k_m, "
                        "q5_k_s, q5_0, q5_1, q4_k_m, q4_k_s, q4_0, q4_1, q3_k_m, q2_k.\n")


def test_unknown_target_is_one_line():
    r = run("--to", "tflite")
    assert r.exit_code == 1
    assert r.output == "Error: Unknown target format 'tflite'. Choose from: gguf, onnx, mlx.\n"


def test_folder_without_config_is_one_line(tmp_path):
    r = run(str(tmp_path), "--to", "gguf")
    assert r.exit_code == 1
    assert r.output == (f"Error: {tmp_path} has no config.json, so it is not a Hugging Face model folder. "
                        "Pass a folder with config.json, safetensors weights and tokenizer files, or a .gguf file.\n")


def test_help_lists_the_options():
    r = CliRunner().invoke(cli, ["convert", "--help"])
    assert r.exit_code == 0
    for opt in ("--to", "--quant", "--name", "--force", "--strict", "--min-agreement", "--json"):
        assert opt in r.output


def test_json_summary_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    src = str(tiny_hf_cached("llama"))
    r = CliRunner().invoke(
        cli, ["convert", src, "--to", "gguf", "--quant", "gguf=q8_0,gguf=q4_0", "--name", "cli-tiny", "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["model"] == "cli-tiny" and out["total_seconds"] > 0
    assert [(a["format"], a["quant"]) for a in out["artifacts"]] == [("gguf", "q8_0"), ("gguf", "q4_0")]
    for a in out["artifacts"]:
        assert set(a) == {"model", "format", "quant", "path", "size", "seconds", "quality", "warning", "status"}
        assert a["status"] == "converted"
        assert a["path"] == str(tmp_path / "home" / "models" / "cli-tiny" / f"gguf-{a['quant']}")
        assert a["quality"]["tokens"] == 512 and a["size"] > 0
    # The same run again: the artifact is up to date and reported as present, in JSON too.
    again = run(src, "--to", "gguf", "--quant", "gguf=q8_0", "--name", "cli-tiny", "-q", "--json")
    assert again.exit_code == 0, again.output
    present = json.loads(again.stdout)["artifacts"]
    assert [(a["quant"], a["status"], a["quality"]) for a in present] == [("q8_0", "present", out["artifacts"][0]["quality"])]
    # From other weights under the same name: refused without --force, as JSON with --json.
    other = run(str(tiny_hf_cached("llama", seed=1)), "--to", "gguf", "--quant", "gguf=q8_0", "--name", "cli-tiny",
                "-q", "--json")
    assert other.exit_code == 1
    err = json.loads(other.stdout)["error"]
    assert err["type"] == "ConversionError" and err["message"].startswith("cli-tiny already has a gguf-q8_0 artifact at ")
    forced = run(src, "--to", "gguf", "--quant", "gguf=q8_0", "--name", "cli-tiny", "-q", "--force")
    assert forced.exit_code == 0, forced.output
    lines = forced.output.splitlines()
    assert "cli-tiny: 1 artifact(s) in" in lines[0]
    assert any(line.split("│")[1:3] == [" gguf   ", " q8_0  "] for line in lines if "│" in line)
    assert f"gguf-q8_0: {tmp_path / 'home' / 'models' / 'cli-tiny' / 'gguf-q8_0'}" in lines
