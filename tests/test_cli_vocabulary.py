"""One CLI vocabulary: renamed flags keep working for a release with a warning, every
command takes -m/--model, and --json errors are JSON on stdout with a non-zero exit."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edge.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_json_error_is_json_on_stdout():
    r = invoke("which", "-m", "no-such-model", "--json")
    assert r.exit_code == 1
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "ModelNotFound" and err["exit_code"] == 1
    assert "no-such-model" in err["message"] and err["hint"]


def test_plain_error_is_one_line():
    r = invoke("which", "-m", "no-such-model")
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1


def test_renamed_flag_warns_and_still_works():
    new = invoke("bench", "--to", "foo")
    old = invoke("bench", "--formats", "foo")
    assert new.exit_code == old.exit_code == 1
    error = "Error: Unknown target format 'foo'. Choose from: gguf, onnx, mlx.\n"
    assert new.stderr == error
    assert old.stderr == "Warning: --formats is deprecated and will be removed; use --to.\n" + error
    old = invoke("bench", "--threshold", "2")
    assert old.stderr == ("Warning: --threshold is deprecated and will be removed; use --min-agreement.\n"
                          "Error: --min-agreement must be between 0 and 1 (got 2.0).\n")


def test_bare_model_argument_is_deprecated_but_works():
    new = invoke("which", "-m", "no-such-model")
    old = invoke("which", "no-such-model")
    assert old.exit_code == new.exit_code == 1
    assert old.stderr == ("Warning: a bare MODEL argument is deprecated and will be removed; use -m/--model.\n"
                          + new.stderr)


def test_renamed_flags_are_hidden_from_help():
    for cmd, old, new in (("bench", "--formats", "--to"), ("bench", "--quants", "--quant"),
                          ("convert", "--threshold", "--min-agreement"), ("tune", "--tokens", "--max-tokens"),
                          ("export", "--format", "--to"), ("guard", "--threshold", "--guard-threshold")):
        out = invoke(cmd, "--help").output
        assert new in out and old + " " not in out, (cmd, old)


def test_model_option_everywhere():
    for cmd in ("run", "chat", "which", "tune", "bench", "export", "call", "assistant", "serve"):
        out = invoke(cmd, "--help").output
        assert "-m, --model" in out, cmd


def test_run_help_shows_the_library_defaults():
    out = " ".join(invoke("run", "--help").output.split())
    for text in ("Maximum number of tokens to generate. [default: 256]", "[default: 0.7]", "[default: 2048]"):
        assert text in out
    assert "[default: False]" not in out
