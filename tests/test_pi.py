"""Raspberry Pi deploy: build the bundle, install it into a temporary root, serve
from the bundle's own config and check /health; the ssh path runs against a
local sshd on loopback when one is installed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.apps.pi import bundle, deploy, serve
from edge.cli import cli
from edge.errors import InvalidOption

VENV = Path(sys.executable).parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port: int, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pi") / "edge-bundle"
    opts = bundle.PiOptions(port=free_port(), host="127.0.0.1", n_ctx=1024)
    return opts, bundle.build(opts, folder)


def test_bundle_contents(built):
    opts, b = built
    root = b.path
    assert b.artifact == "smollm2-135m-instruct:gguf-q4_1" and b.backend == "llama.cpp"
    assert any("pi5-8gb" in r for r in b.reasons)
    for name in ("BUNDLE.json", "config.json", "requirements-aarch64.txt", "requirements-data.txt", "install.sh",
                 "run.sh", "edge.service", "model/manifest.json", "src/edge/__init__.py", "src/edge/apps/pi/serve.py",
                 "src/edge/models/profiles/pi5-8gb.json"):
        assert (root / name).is_file(), name
    # The runtime only: no benchmarks, evaluations, guard training or converter on the Pi.
    for name in ("src/edge/bench", "src/edge/eval", "src/edge/guard/train.py", "src/edge/guard/data",
                 "src/edge/converters", "src/edge/apps/assistant", "src/models", "src/apps"):
        assert not (root / name).exists(), name
    assert os.access(root / "install.sh", os.X_OK) and os.access(root / "run.sh", os.X_OK)
    man = json.loads((root / "model/manifest.json").read_text())
    assert man["main"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert [f["path"] for f in man["files"]] == [man["main"]]
    from edge import manifest as mf

    mf.verify(root / "model", man, full=True)
    (root / "model" / mf.SIDECAR).unlink()  # written by this check; not part of the bundle
    config = json.loads((root / "config.json").read_text())
    assert config["serve"] == {"model": "model", "host": "127.0.0.1", "port": opts.port, "n_ctx": 1024,
                               "threads": 4, "guard": True, "api_key": None}
    pins = (root / "requirements-aarch64.txt").read_text().splitlines()
    assert "llama-cpp-python==0.3.36" in pins and any(p.startswith("fastapi==") for p in pins)
    assert any(p.startswith("gguf==") for p in pins) and any(p.startswith("safetensors==") for p in pins)
    assert not any(p.startswith(("torch", "transformers", "nvidia")) for p in pins)
    listing = json.loads((root / "BUNDLE.json").read_text())["files"]
    assert listing["config.json"] == bundle.sha256(root / "config.json")
    assert "ExecStart=@PREFIX@/run.sh" in (root / "edge.service").read_text()


def test_rebuild_rewrites_only_what_changed(built, tmp_path):
    opts, b = built
    copy = tmp_path / "b"
    shutil.copytree(b.path, copy)
    assert bundle.build(opts, copy).changed == []
    (copy / "stale.txt").write_text("left by an older build")
    moved = bundle.PiOptions(**{**opts.__dict__, "port": opts.port + 1})
    assert bundle.build(moved, copy).changed == ["BUNDLE.json", "config.json", "stale.txt"]
    assert not (copy / "stale.txt").exists()


def test_serve_argv_from_config(tmp_path):
    config = {"serve": {"model": "model", "host": "0.0.0.0", "port": 9000, "n_ctx": 512, "threads": 4,
                        "guard": False, "api_key": None}}
    assert serve.argv(config, tmp_path) == ["serve", "-m", str(tmp_path / "model"), "--host", "0.0.0.0", "--port",
                                            "9000", "--ctx", "512", "--threads", "4", "--no-guard"]


def test_install_into_temporary_root_and_serve(built, tmp_path):
    opts, b = built
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(b.path, arcname="edge-bundle")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="tar")
    root = tmp_path / "root"
    env = {**os.environ, "EDGE_ROOT": str(root), "EDGE_PREFIX": "/opt/edge", "EDGE_VENV": str(VENV)}
    out = subprocess.run(["sh", str(tmp_path / "unpacked/edge-bundle/install.sh")], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"installed in {root}/opt/edge (not started)"
    unit = (root / "etc/systemd/system/edge.service").read_text()
    assert "User=edge" in unit.splitlines()  # the dedicated user, not whoever ran install.sh
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == "/opt/edge/run.sh"
    assert (root / "opt/edge/model/SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    # The service command, run from inside the temporary root.
    proc = subprocess.Popen([str(root) + exec_start], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGE_HOME")})
    try:
        got = wait_health(opts.port)
        assert got["status"] == "ok" and got["model"] == "smollm2-135m-instruct" and got["backend"] == "llama.cpp"
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"PYTHONPATH={root}/opt/edge/src".encode() in environ  # the bundle's own copy of edge
    finally:
        stop(proc.pid)
        proc.communicate(timeout=10)
    again = subprocess.run(["sh", str(root / "opt/edge/install.sh")], env=env, capture_output=True, text=True, check=True)
    assert again.stdout.strip() == f"installed in {root}/opt/edge (not started)"


def test_cli_needs_host_or_out():
    r = CliRunner().invoke(cli, ["deploy", "pi"])
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == "Error: Pass --host user@host to deploy, or --out bundle.tar.gz to build the bundle only."
    r = CliRunner().invoke(cli, ["deploy", "pi", "--host", "pi@host; rm -rf /"])
    assert r.exit_code == 1
    assert r.output == "Error: 'pi@host; rm -rf /' is not an ssh destination. Pass --host user@host, e.g. pi@raspberrypi.local.\n"
    r = CliRunner().invoke(cli, ["deploy", "pi", "--out", "x.tar.gz", "--profile", "pi9"])
    assert r.exit_code == 1 and r.output.startswith("Error: Unknown device profile 'pi9'. Choose one of: ")


def test_cli_builds_archive(tmp_path):
    out = tmp_path / "edge-pi.tar.gz"
    r = CliRunner().invoke(cli, ["deploy", "pi", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["path"] == str(out) and report["artifact"] == "smollm2-135m-instruct:gguf-q4_1"
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {"edge-bundle/install.sh", "edge-bundle/model/manifest.json", "edge-bundle/config.json"} <= names
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers


# -- the ssh path, against sshd on loopback -------------------------------------------
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not (os.path.exists(SSHD) and shutil.which("rsync") and shutil.which("ssh-keygen")):
        pytest.skip("needs openssh-server, openssh-client and rsync (apt-get install openssh-server rsync)")
    if os.geteuid() != 0:
        pytest.skip("a loopback sshd needs root here")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    ssh = (f"ssh -p {port} -i {d}/client -o BatchMode=yes -o StrictHostKeyChecking=no "
           "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    yield ssh
    proc.terminate()
    proc.wait(timeout=10)


def test_deploy_over_ssh_is_idempotent(sshd, tmp_path):
    prefix = tmp_path / "pi-home" / "edge"
    target = deploy.Target(host="root@127.0.0.1", prefix=str(prefix), ssh=sshd, health_timeout=90)
    opts = bundle.PiOptions(port=free_port(), host="127.0.0.1", n_ctx=1024, service="edge-test")
    env = {"EDGE_VENV": str(VENV)}  # the loopback "Pi" reuses this environment instead of pip installing
    first = deploy.deploy(opts, target, env=env)
    try:
        assert "model/SmolLM2-135M-Instruct.Q4_1.gguf" in first.sent and "install.sh" in first.sent
        assert first.health["status"] == "ok" and first.health["model"] == "smollm2-135m-instruct"
        assert first.install_log.strip() == f"started edge-test (background, log in {prefix}/state/server.log)"
        pid = int((prefix / "state/server.pid").read_text())
        second = deploy.deploy(opts, target, env=env)
        assert second.sent == []
        assert second.install_log.strip() == "edge-test is up to date and running"
        assert int((prefix / "state/server.pid").read_text()) == pid
        assert second.health["status"] == "ok"
    finally:
        stop(int((prefix / "state/server.pid").read_text()))


def test_deploy_reports_unreachable_host(tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed")
    target = deploy.Target(host="nobody@127.0.0.1", prefix="edge",
                           ssh=f"ssh -p {free_port()} -o BatchMode=yes -o ConnectTimeout=3")
    with pytest.raises(deploy.DeployError, match=r"^ssh to nobody@127.0.0.1 failed \(exit 255\): .*Connection refused"):
        deploy.deploy(bundle.PiOptions(), target)


def test_failed_command_is_one_sentence_then_the_hint():
    script = "echo 'ssh: Could not resolve hostname pi5: Name or service not known' >&2; exit 255"
    with pytest.raises(deploy.DeployError) as err:
        deploy._run(["sh", "-c", script], "ssh to pi@pi5")
    assert str(err.value) == ("ssh to pi@pi5 failed (exit 255): ssh: Could not resolve hostname pi5: "
                              "Name or service not known. Fix that and deploy again.")
    with pytest.raises(deploy.DeployError) as err:
        deploy._run(["sh", "-c", "exit 3"], "rsync to pi@pi5")
    assert str(err.value) == "rsync to pi@pi5 failed (exit 3): no output. Fix that and deploy again."


# -- safe by default ---------------------------------------------------------------------
def test_default_bind_is_loopback_and_lan_needs_a_key(tmp_path):
    assert bundle.PiOptions().host == "127.0.0.1"
    with pytest.raises(InvalidOption, match=r"^Binding 0\.0\.0\.0 would open the server to the network\. Pass --lan"):
        bundle.PiOptions(host="0.0.0.0")
    out = tmp_path / "lan.tar.gz"
    r = CliRunner().invoke(cli, ["deploy", "pi", "--out", str(out), "--lan"])
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first.startswith("API key (generated; clients send 'Authorization: Bearer KEY'): ")
    key = first.rsplit(" ", 1)[1]
    assert len(key) >= 32
    with tarfile.open(out) as tar:
        member = tar.getmember("edge-bundle/config.json")
        config = json.load(tar.extractfile(member))
        unit = tar.extractfile("edge-bundle/edge.service").read().decode()
    assert member.mode & 0o077 == 0  # the key is readable by its owner only
    assert config["serve"]["host"] == "0.0.0.0" and config["serve"]["api_key"] == key
    assert "IPAddressDeny=any" not in unit
    r = CliRunner().invoke(cli, ["deploy", "pi", "--out", str(out), "--bind", "192.168.1.5"])
    assert r.exit_code == 1 and r.output.startswith("Error: Binding 192.168.1.5 would open the server to the network.")


def test_generated_key_is_kept_across_rebuilds(tmp_path):
    opts = bundle.PiOptions(lan=True, n_ctx=1024)
    b1 = bundle.build(opts, tmp_path / "b")
    b2 = bundle.build(opts, tmp_path / "b")
    assert b1.api_key_generated and b2.api_key_generated == b1.api_key_generated and b2.changed == []
    given = bundle.build(bundle.PiOptions(lan=True, n_ctx=1024, api_key="secret"), tmp_path / "c")
    assert given.api_key_generated is None


def test_hosts_and_prefixes_are_validated():
    for bad in ("-oProxyCommand=touch /tmp/x", "pi@-oProxyCommand=x", "-p22", "pi@host; rm -rf /", "pi@", ""):
        with pytest.raises(InvalidOption, match="is not an ssh destination"):
            deploy.Target(host=bad)
    for good in ("pi@raspberrypi.local", "raspberrypi", "root@127.0.0.1", "pi@[::1]", "pi_2@pi-5.lan"):
        assert deploy.Target(host=good).host == good
    assert deploy.Target(host="pi@pi", prefix="~/edge").prefix == "edge"
    assert deploy.Target(host="pi@pi", prefix="~/apps/edge/").prefix == "apps/edge"
    assert deploy.Target(host="pi@pi", prefix="/opt/edge").prefix == "/opt/edge"
    for bad in ("~root/edge", "-rf", "a b", "$(x)"):
        with pytest.raises(InvalidOption, match="holds unsafe characters"):
            deploy.Target(host="pi@pi", prefix=bad)
    r = CliRunner().invoke(cli, ["deploy", "pi", "--host", "-oProxyCommand=id"])
    assert r.exit_code == 1
    assert r.output == ("Error: '-oProxyCommand=id' is not an ssh destination. "
                        "Pass --host user@host, e.g. pi@raspberrypi.local.\n")


def test_ssh_and_rsync_get_double_dash_before_the_host(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(deploy, "_run", lambda argv, what, **kw: calls.append(argv) or "")
    monkeypatch.setattr(deploy.shutil, "which", lambda name: "/usr/bin/" + name)
    target = deploy.Target(host="pi@pi5", prefix="~/edge")
    deploy.sync(tmp_path, target)
    ssh, rsync = calls
    assert ssh[-3:] == ["--", "pi@pi5", "mkdir -p -- edge"]
    assert rsync[-3:] == ["--", f"{tmp_path}/", "pi@pi5:edge/"]


UNIT_DIRECTIVES = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "tmpfs", "PrivateTmp": "yes",
                   "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                   "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
                   "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
                   "IPAddressDeny": "any", "IPAddressAllow": "localhost"}


def test_installed_unit_is_hardened(built, tmp_path):
    _opts, b = built
    root = tmp_path / "root"
    env = {**os.environ, "EDGE_ROOT": str(root), "EDGE_PREFIX": "/opt/edge", "EDGE_VENV": str(VENV)}
    subprocess.run(["sh", str(b.path / "install.sh")], env=env, capture_output=True, text=True, check=True)
    unit_path = root / "etc/systemd/system/edge.service"
    lines = unit_path.read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    from edge.device import load_profile

    assert {k: settings.get(k) for k in UNIT_DIRECTIVES} == UNIT_DIRECTIVES
    assert settings["User"] == "edge" and settings["MemoryMax"] == str(load_profile("pi5-8gb").ram_available)
    assert settings["BindReadOnlyPaths"] == "/opt/edge" and settings["LoadCredential"] == "config.json:/opt/edge/config.json"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); the directives were checked above")
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit_path)],
                         capture_output=True, text=True, timeout=120)
    import re

    m = re.search(r"Overall exposure level for edge\.service: (\d+\.\d+)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr[-500:]
    assert float(m.group(1)) <= 4.0, out.stdout
