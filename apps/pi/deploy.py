"""Deploy a bundle to a Raspberry Pi over ssh: rsync, install, start, check /health.

The bundle is built in a staging folder under $EDGE_HOME/deploy/ that is
updated in place, and rsync (--checksum) sends only the files whose content
changed, so re-deploying an unchanged model sends nothing and leaves the
running service alone.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import EdgeError, InvalidOption

from .bundle import Built, PiOptions, build

HEALTH_TIMEOUT_S = 180.0  # a Pi loads a small GGUF in seconds; a 3B model takes a minute
SSH_DEFAULT = "ssh -o ConnectTimeout=10"
# [user@]host: a name, an IPv4 address or a bracketed IPv6 one; nothing may start with '-'.
HOST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])")


class DeployError(EdgeError):
    """ssh, rsync, the install script or the health check failed on the target."""


@dataclass
class Target:
    """Where the bundle goes."""

    host: str = field(metadata={"help": "ssh destination, user@host."})
    prefix: str = field(default="edge", metadata={"help": "Install folder on the Pi (relative: under the user's home)."})
    ssh: str = field(default=SSH_DEFAULT, metadata={"help": "ssh command (add -p PORT, -i KEY as needed)."})
    health_timeout: float = field(default=HEALTH_TIMEOUT_S, metadata={"help": "Seconds to wait for /health."})

    def __post_init__(self):
        # Neither part may start with '-': ssh and rsync would read it as an option.
        if not HOST.fullmatch(self.host or ""):
            raise InvalidOption(f"'{self.host}' is not an ssh destination.", "Pass --host user@host, e.g. pi@raspberrypi.local.")
        # '~/x' means x under the user's home, which is where a relative prefix goes; quoting
        # it for the remote shell would make a folder literally named '~'.
        if self.prefix == "~" or self.prefix.startswith("~/"):
            self.prefix = self.prefix[2:].strip("/") or "."
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", self.prefix) or self.prefix.startswith("-"):
            raise InvalidOption(f"Install folder '{self.prefix}' holds unsafe characters.",
                                "Use letters, digits, /, ., _ and - (and ~/ at the start for the home folder).")


@dataclass
class Deployed:
    host: str
    prefix: str
    bundle: Built
    sent: list          # files rsync transferred or deleted on the Pi
    install_log: str
    health: dict | None
    worker: dict | None = None   # what the worker on the Pi reported (edge.rpc.probe), when one was installed

    def to_dict(self) -> dict:
        return {"host": self.host, "prefix": self.prefix, "artifact": self.bundle.artifact,
                "backend": self.bundle.backend, "sent": self.sent, "install": self.install_log.strip().splitlines(),
                "health": self.health, "worker": self.worker}


def staging_dir(host: str, service: str) -> Path:
    from edge.store import home

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", host)
    return home() / "deploy" / f"{safe}-{service}" / "edge-bundle"


def _run(argv: list[str], what: str, stdin: str | None = None, timeout: float = 3600) -> str:
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DeployError(f"{argv[0]} is not installed here, so {what} cannot run.",
                          f"Install it (apt install {'openssh-client' if argv[0] == 'ssh' else argv[0]}).") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what} took longer than {timeout:.0f} s.", "Check the Pi is reachable and not overloaded.") from None
    if out.returncode != 0:
        last = ((out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["no output"])[0].rstrip()
        end = "" if last.endswith((".", "!", "?")) else "."
        raise DeployError(f"{what} failed (exit {out.returncode}): {last}{end}", "Fix that and deploy again.")
    return out.stdout


def sync(folder: Path, target: Target) -> list[str]:
    """rsync the bundle to the Pi; return what was sent or deleted there."""
    if shutil.which("rsync") is None:
        raise DeployError("rsync is not installed here.", "Install it (apt install rsync / brew install rsync).")
    ssh = shlex.split(target.ssh)
    _run(ssh + ["--", target.host, f"mkdir -p -- {shlex.quote(target.prefix)}"], f"ssh to {target.host}")
    out = _run(["rsync", "-az", "--checksum", "--delete", "--itemize-changes", "--exclude", "/venv", "--exclude", "__pycache__",
                "--exclude", "/state", "--exclude", "/model/verified.json", "-e", shlex.join(ssh), "--", f"{folder}/", f"{target.host}:{target.prefix}/"],
               f"rsync to {target.host}")
    sent = []
    for line in out.splitlines():
        flags, _, path = line.partition(" ")
        # '<f' a file sent, '*deleting' a file removed; directory attribute lines are noise.
        if flags.startswith("<f") or flags.startswith("*deleting"):
            sent.append(path.strip())
    return sent


_HEALTH = """
import sys, time, urllib.request
deadline = time.time() + {timeout}
while True:
    try:
        print(urllib.request.urlopen("http://127.0.0.1:{port}/health", timeout=5).read().decode())
        break
    except Exception as exc:
        if time.time() > deadline:
            sys.exit(f"no answer from /health: {{exc}}")
        time.sleep(1)
"""


def health(target: Target, port: int) -> dict:
    """GET /health on the Pi, from the Pi (the port need not be open to this machine)."""
    ssh = shlex.split(target.ssh)
    script = _HEALTH.format(timeout=target.health_timeout, port=port)
    python = f"{shlex.quote(target.prefix)}/venv/bin/python"
    out = _run(ssh + ["--", target.host, python, "-"], f"the health check on {target.host}", stdin=script,
               timeout=target.health_timeout + 30)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise DeployError(f"/health on {target.host} answered something that is not JSON: {out.strip()[:80]}",
                          f"Look at {target.prefix}/state/server.log or `journalctl -u edge` on the Pi.") from None


_WORKER_CHECK = """
import json, sys, time
sys.path.insert(0, {src!r})
from edge.rpc import probe
from edge.errors import WorkerUnreachable
deadline = time.time() + {timeout}
while True:
    try:
        print(json.dumps(probe({endpoint!r}).to_dict()))
        break
    except WorkerUnreachable as exc:
        if time.time() > deadline:
            sys.exit(str(exc))
        time.sleep(1)
"""


def worker_health(target: Target, opts: PiOptions) -> dict:
    """Ask the worker on the Pi for its memory, from the Pi (as a client would)."""
    ssh = shlex.split(target.ssh)
    host = "127.0.0.1" if opts.worker_host in ("0.0.0.0", "::") else opts.worker_host
    script = _WORKER_CHECK.format(src=f"{target.prefix}/src", timeout=target.health_timeout,
                                  endpoint=f"{host}:{opts.worker_port}")
    out = _run(ssh + ["--", target.host, f"cd && {shlex.quote(target.prefix)}/venv/bin/python", "-"],
               f"the worker check on {target.host}", stdin=script, timeout=target.health_timeout + 30)
    return json.loads(out.strip().splitlines()[-1])


def deploy(opts: PiOptions, target: Target, env: dict | None = None) -> Deployed:
    """Build (incrementally), send the changes, install, start and check /health."""
    built = build(opts, staging_dir(target.host, opts.service))
    sent = sync(built.path, target)
    ssh = shlex.split(target.ssh)
    assignments = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
    command = f"{assignments} sh {shlex.quote(target.prefix)}/install.sh".strip()
    log = _run(ssh + ["--", target.host, command], f"the install script on {target.host}")
    return Deployed(target.host, target.prefix, built, sent, log, health(target, opts.port) if opts.serves else None,
                    worker_health(target, opts) if opts.has_worker else None)
