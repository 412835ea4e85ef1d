"""Workers on this machine, for tests and `edge bench --rpc`: on loopback or in network namespaces.

`local_workers(n)` starts n `edge worker`s on free loopback ports. `netns_workers(n)`
puts each worker in its own network namespace joined to this one by a veth pair
(10.200.<i>.1/30 here, 10.200.<i>.2/30 inside), so RPC traffic crosses a real
network stack; it needs root and iproute2, and removes what it made on exit.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
import time

from ..errors import EdgeError, WorkerUnreachable
from . import probe


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_worker(host: str, port: int, mem: int | None = None, threads: int | None = None,
                 netns: str | None = None, timeout: float = 30.0) -> subprocess.Popen:
    """Start `python -m edge.rpc.worker` and wait until it answers."""
    cmd = [sys.executable, "-m", "edge.rpc.worker", "--host", host, "--port", str(port)]
    cmd += ["--mem", str(mem)] if mem else []
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--i-understand-no-auth"] if netns else []
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe(f"{host}:{port}", timeout=1.0)
            return proc
        except WorkerUnreachable:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise EdgeError(f"The worker on {host}:{port} did not start: {err[-1] if err else 'no message'}.")
            time.sleep(0.1)


def stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@contextlib.contextmanager
def local_workers(n: int, mem: int | None = None, threads: int | None = None):
    """n workers on loopback; yields their endpoints."""
    procs, endpoints = [], []
    try:
        for _ in range(n):
            port = free_port()
            procs.append(start_worker("127.0.0.1", port, mem, threads))
            endpoints.append(f"127.0.0.1:{port}")
        yield endpoints, procs
    finally:
        stop(procs)


@functools.lru_cache(maxsize=1)
def netns_missing() -> str | None:
    """Why network-namespace workers cannot run here, or None when they can (tries making one)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "the `ip` tool (iproute2) is not installed"
    name = f"edgeprobe{os.getpid() % 100000}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        return f"this system does not allow creating network namespaces ({r.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _tag() -> str:
    return f"edge{os.getpid() % 100000}"


def set_link(endpoint: str, up: bool) -> None:
    """Bring the veth link to a netns worker of this process down or up (a cable pulled, put back)."""
    i = int(endpoint.split(":")[0].split(".")[2])
    _ip("link", "set", f"{_tag()}a{i}", "up" if up else "down")


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise EdgeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}.")


@contextlib.contextmanager
def netns_workers(n: int, mem: int | None = None, threads: int | None = None, port: int = 50052):
    """n workers, each in its own network namespace behind a veth pair; yields their endpoints."""
    why = netns_missing()
    if why:
        raise EdgeError(f"Cannot make network namespaces: {why}.")
    tag = _tag()
    names = [f"{tag}w{i}" for i in range(n)]
    procs, endpoints = [], []
    try:
        for i, ns in enumerate(names):
            here, there = f"{tag}a{i}", f"{tag}b{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", here, "type", "veth", "peer", "name", there)
            _ip("link", "set", there, "netns", ns)
            _ip("addr", "add", f"10.200.{i}.1/30", "dev", here)
            _ip("link", "set", here, "up")
            _ip("-n", ns, "addr", "add", f"10.200.{i}.2/30", "dev", there)
            _ip("-n", ns, "link", "set", there, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            procs.append(start_worker(f"10.200.{i}.2", port, mem, threads, netns=ns))
            endpoints.append(f"10.200.{i}.2:{port}")
        yield endpoints, procs
    finally:
        stop(procs)
        for i, ns in enumerate(names):
            subprocess.run(["ip", "link", "del", f"{tag}a{i}"], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
