"""`edge doctor`: JSON and table output of the device probe, profiles listing."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edge import backends
from edge.cli import cli
from edge.device import load_profile, probe, profile_names


def test_doctor_json_checks_every_installed_backend():
    res = CliRunner().invoke(cli, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["fingerprint"] == probe().fingerprint
    assert data["physical_cores"] >= 1 and data["ram_total"] >= data["ram_available"] > 0
    for name in backends.REGISTRY:
        st = data["backends"][name]
        assert st["installed"] == backends.installed(name)
        if st["installed"]:
            assert st["version"] == backends.version(name)
            assert st["loads"] is True, st["detail"]


def test_doctor_table_quick():
    res = CliRunner().invoke(cli, ["doctor", "--quick"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    d = probe()
    lines = res.output.splitlines()
    assert lines[0].strip() == "Device"
    row = next(line for line in lines if "Cores" in line)
    assert f"{d.physical_cores} physical, {d.logical_cores} logical" in row
    assert any("Fingerprint" in line and d.fingerprint in line for line in lines)
    table = lines[next(i for i, line in enumerate(lines) if line.strip() == "Backends"):]
    for name in backends.REGISTRY:
        row = next(line for line in table if line.startswith(f"│ {name} "))
        assert ("not checked" in row) == backends.installed(name)


def test_doctor_profile_table():
    res = CliRunner().invoke(cli, ["doctor", "--profile", "pi-zero-2w"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = res.output
    assert "Raspberry Pi Zero 2 W Rev 1.0" in text and "Cortex-A53" in text
    assert "0.4 GiB total, 0.3 GiB available" in text
    mlx_row = next(line for line in text.splitlines() if line.startswith("│ mlx "))
    assert "not installed on pi-zero-2w" in mlx_row


def test_doctor_profile_json_and_list():
    runner = CliRunner()
    data = json.loads(runner.invoke(cli, ["doctor", "--profile", "iphone-15-pro", "--json"]).output)
    assert data["export_only"] is True and data["fingerprint"] == load_profile("iphone-15-pro").fingerprint
    res = runner.invoke(cli, ["doctor", "--profiles"])
    assert res.exit_code == 0
    assert [line.split()[0] for line in res.output.splitlines()] == profile_names()
    res = runner.invoke(cli, ["doctor", "--profile", "nope"])
    assert res.exit_code == 1 and res.output.startswith("Error: Unknown device profile 'nope'.")


def test_each_backend_answers_for_itself():
    """doctor's checks and the quality gate's scorer come from the backend modules via the registry."""
    import importlib

    from edge.device import check_backends

    for name, entry in backends.REGISTRY.items():
        assert callable(importlib.import_module(entry.module).self_check)
        assert backends.for_scoring(entry.format) == name
    installed = [n for n in backends.REGISTRY if backends.installed(n)]
    results = check_backends(installed)
    assert set(results) == set(installed)
    assert all(ok for ok, _ in results.values()), results
    if "llama.cpp" in installed:
        assert results["llama.cpp"][1].startswith("loaded SmolLM2-135M-Instruct.Q4_1.gguf")
    assert backends.fact("llama.cpp", "no_such_fact", "?") == "?"
    assert isinstance(backends.fact("llama.cpp", "gpu_offload"), bool)
