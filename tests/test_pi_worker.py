"""`edge deploy pi --worker`: the worker service in the Pi bundle, installed into a temporary root and started."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.apps.pi import bundle, worker
from edge.cli import cli
from edge.errors import EdgeError, WorkerUnreachable
from edge.rpc import probe
from edge.rpc.lab import free_port

from test_pi import sshd, stop  # noqa: F401  (the loopback sshd fixture)

VENV = Path(sys.executable).parent.parent


def install(folder: Path, root: Path) -> str:
    env = {**os.environ, "EDGE_ROOT": str(root), "EDGE_PREFIX": "/opt/edge", "EDGE_VENV": str(VENV)}
    return subprocess.run(["sh", str(folder / "install.sh")], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_worker_only_bundle_installs_and_serves(tmp_path):
    port = free_port()
    opts = bundle.PiOptions(worker_only=True, worker_port=port, worker_mem=256)
    built = bundle.build(opts, tmp_path / "edge-bundle")
    assert built.artifact is None and not (built.path / "model").exists()
    assert not (built.path / "edge.service").exists() and os.access(built.path / "worker.sh", os.X_OK)
    config = json.loads((built.path / "config.json").read_text())
    assert "serve" not in config
    assert config["worker"] == {"host": "127.0.0.1", "port": port, "mem": 256, "threads": None,
                                "cache": "state/rpc-cache", "i_understand_no_auth": False}
    root = tmp_path / "root"
    assert install(built.path, root) == f"installed in {root}/opt/edge (not started)"
    units = sorted(p.name for p in (root / "etc/systemd/system").iterdir())
    assert units == ["edge-worker.service"]
    unit = (root / "etc/systemd/system/edge-worker.service").read_text().splitlines()
    assert "ExecStart=/opt/edge/worker.sh" in unit
    # The service command, run from inside the temporary root.
    proc = subprocess.Popen([str(root / "opt/edge/worker.sh")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGE_HOME")})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                info = probe(f"127.0.0.1:{port}")
                break
            except WorkerUnreachable:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.2)
        assert info.total == 256 << 20
        assert (root / "opt/edge/state/rpc-cache").is_dir()
    finally:
        proc.kill()
        proc.wait()


def test_worker_alongside_the_server(tmp_path):
    opts = bundle.PiOptions(worker=True, port=free_port(), host="127.0.0.1", n_ctx=512)
    built = bundle.build(opts, tmp_path / "edge-bundle")
    assert built.artifact == "smollm2-135m-instruct:gguf-q4_1"
    root = tmp_path / "root"
    install(built.path, root)
    assert sorted(p.name for p in (root / "etc/systemd/system").iterdir()) == ["edge-worker.service", "edge.service"]
    config = json.loads((built.path / "config.json").read_text())
    assert config["serve"]["port"] == opts.port and config["worker"]["port"] == 50052


def test_worker_argv_from_config(tmp_path):
    config = {"worker": {"host": "10.0.0.5", "port": 50052, "mem": 512, "threads": 4, "cache": "state/rpc-cache",
                         "i_understand_no_auth": True}}
    assert worker.argv(config, tmp_path) == ["worker", "--host", "10.0.0.5", "--port", "50052", "--threads", "4",
                                             "--mem", "512", "--cache", str(tmp_path / "state/rpc-cache"),
                                             "--i-understand-no-auth"]


def test_worker_on_the_lan_needs_the_flag():
    with pytest.raises(EdgeError, match="Refusing to listen on 0.0.0.0"):
        bundle.PiOptions(worker_only=True, worker_host="0.0.0.0")
    assert bundle.PiOptions(worker_only=True, worker_host="0.0.0.0", i_understand_no_auth=True).has_worker


def test_cli_builds_a_worker_only_archive(tmp_path):
    out = tmp_path / "w.tar.gz"
    r = CliRunner().invoke(cli, ["deploy", "pi", "--out", str(out), "--worker-only"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[:2] == ["Worker only: no model in the bundle",
                                         "  worker only: no model and no server on the Pi"]


def test_deploy_worker_only_over_ssh(sshd, tmp_path):
    from edge.apps.pi import deploy

    prefix = tmp_path / "pi-home" / "edge"
    port = free_port()
    target = deploy.Target(host="root@127.0.0.1", prefix=str(prefix), ssh=sshd, health_timeout=60)
    opts = bundle.PiOptions(worker_only=True, worker_port=port, worker_mem=300, threads=1, service="edge-test")
    done = deploy.deploy(opts, target, env={"EDGE_VENV": str(VENV)})
    try:
        assert done.health is None
        assert done.worker == {"endpoint": f"127.0.0.1:{port}", "free": 300 << 20, "total": 300 << 20, "devices": 1}
        assert done.install_log.strip() == f"started edge-test-worker (background, log in {prefix}/state/worker.log)"
        assert probe(f"127.0.0.1:{port}").total == 300 << 20
    finally:
        stop(int((prefix / "state/worker.pid").read_text()))
