"""Build a Raspberry Pi bundle: a folder (or .tar.gz) that installs and serves a model.

    bundle/
      BUNDLE.json                content hashes of every file (what changed between deploys)
      config.json                what the service runs: model, host, port, context, threads
      model/                     the chosen artifact and its manifest (paths relative)
      src/edge/                  the runtime, its catalog and profiles, and edge.apps.pi
      requirements-aarch64.txt   pinned dependencies; requirements-data.txt: --no-deps data packages
      edge.service  run.sh  install.sh
      edge-worker.service  worker.sh   with --worker: an `edge worker` service (--worker-only: it alone, no model)

The artifact is the one selection picks for the Pi profile. Building into an
existing folder rewrites only files whose content changed, so rsync sends
only those on re-deploy.

Safe by default: the server binds loopback only; `lan=True` binds the network
and always with an API key (one is generated, and kept across re-builds of the
same folder, when none is given). The systemd unit runs as a dedicated user
with the memory cap of the profile and systemd's sandboxing.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge import manifest as mf
from edge.errors import InvalidOption

HERE = Path(__file__).parent
TEMPLATES = ("install.sh", "run.sh", "edge.service")
WORKER_TEMPLATES = ("worker.sh", "edge-worker.service")
EXECUTABLE = ("install.sh", "run.sh", "worker.sh")
# Source shipped to the Pi: the runtime, the catalog/profiles, the service entry point.
# Benchmarks, evaluations, guard training and the converter stay on the build machine.
SOURCE_PACKAGES = ("edge", "edge.models", "edge.apps.pi")
LEFT_BEHIND = ("edge/bench", "edge/eval", "edge/guard/train.py", "edge/guard/data", "edge/guard/data.py",
               "edge/converters", "edge/apps", "edge/models")
SKIP = ("__pycache__", ".pyc", ".DS_Store")


def _o(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class PiOptions:
    """What to deploy and how the Pi serves it."""

    model: str | None = _o(None, "Model to deploy (default: the embedded SmolLM2-135M-Instruct).")
    profile: str = _o("pi5-8gb", "Device profile the artifact must fit (models/profiles/<name>.json).")
    port: int = _o(8080, "Port the server listens on, on the Pi.")
    host: str | None = _o(None, "Address the server binds on the Pi (default: 127.0.0.1, or 0.0.0.0 with lan).")
    lan: bool = _o(False, "Serve the local network, not only the Pi itself; needs an API key (generated if not given).")
    n_ctx: int = _o(2048, "Context length the server loads the model with.")
    threads: int | None = _o(None, "CPU threads on the Pi (default: what selection picks for the profile).")
    guard: bool = _o(True, "Run the prompt guard in front of the model on the Pi.")
    api_key: str | None = _o(None, "Require this bearer key on /v1 requests.")
    service: str = _o("edge", "systemd service name.")
    python: str = _o("3.11", "Python version on the Pi, for the pinned requirements (bookworm: 3.11).")
    worker: bool = _o(False, "Also install an `edge worker` service that lends the Pi's memory to another edge (--rpc).")
    worker_only: bool = _o(False, "Install only the worker service: no model, no server.")
    worker_host: str = _o("127.0.0.1", "Address the worker binds on the Pi (loopback: reach it through an ssh tunnel).")
    worker_port: int = _o(50052, "Port the worker listens on, on the Pi.")
    worker_mem: int | None = _o(None, "Memory the worker lends, in MB (default: all).")
    i_understand_no_auth: bool = _o(False, "Let the worker bind a non-loopback address (it has no authentication).")

    @property
    def serves(self) -> bool:
        return not self.worker_only

    @property
    def has_worker(self) -> bool:
        return self.worker or self.worker_only

    def __post_init__(self):
        if self.host is None:
            self.host = "0.0.0.0" if self.lan else "127.0.0.1"
        if not self.lan and not loopback(self.host):
            raise InvalidOption(f"Binding {self.host} would open the server to the network.",
                                "Pass --lan as well (an API key is generated unless you give --api-key), "
                                "or leave --bind out to serve the Pi itself only.")
        if not 0 < self.port < 65536:
            raise InvalidOption(f"port must be in 1..65535 (got {self.port}).")
        if not self.service.replace("-", "").replace("_", "").isalnum():
            raise InvalidOption(f"Service name '{self.service}' may only hold letters, digits, - and _.")
        if self.has_worker:
            from edge.rpc.worker import WorkerOptions

            WorkerOptions(host=self.worker_host, port=self.worker_port, mem=self.worker_mem,
                          i_understand_no_auth=self.i_understand_no_auth).check()
            if self.serves and self.worker_port == self.port:
                raise InvalidOption(f"The server and the worker cannot share port {self.port}.", "Pick another --worker-port.")


def loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Built:
    """A built bundle: where it is, what it serves, which files changed in this build."""

    path: Path
    artifact: str
    backend: str
    reasons: list
    changed: list
    files: int
    bytes: int
    api_key_generated: str | None = None  # set when lan needed a key and none was given

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def choose(opts: PiOptions):
    """The selection Choice for the model on the Pi profile (fits its memory, its backends)."""
    from edge.config import LoadOptions
    from edge.select import choose as select_choose
    from edge.store import Store

    ref = Store().resolve(opts.model)
    # tuned=False: speeds measured on this machine say nothing about the Pi.
    return select_choose(ref, None, LoadOptions(n_ctx=opts.n_ctx), profile=opts.profile, tuned=False)


def sha256(path: Path) -> str:
    return mf.sha256_file(path)


class _Writer:
    """Writes into the bundle folder, touching only files whose content differs."""

    def __init__(self, root: Path):
        self.root = root
        self.changed: list[str] = []
        self.kept: set[str] = set()

    def text(self, rel: str, content: str, mode: int = 0o644) -> None:
        self.bytes(rel, content.encode("utf-8"), mode)

    def bytes(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        dest = self.root / rel
        self.kept.add(rel)
        if not (dest.is_file() and dest.read_bytes() == data):
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            self.changed.append(rel)
        os.chmod(dest, mode)

    def file(self, rel: str, src: Path) -> None:
        dest = self.root / rel
        self.kept.add(rel)
        if dest.is_file() and dest.stat().st_size == src.stat().st_size and sha256(dest) == sha256(src):
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            os.link(src, tmp)  # model files are large: share the blocks when on one disk
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        self.changed.append(rel)

    def prune(self) -> None:
        """Remove files a previous build left that this one did not write."""
        for path in sorted(self.root.rglob("*"), reverse=True):
            rel = str(path.relative_to(self.root))
            if path.is_file() and rel not in self.kept:
                path.unlink()
                self.changed.append(rel)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _model_files(w: _Writer, artifact) -> str:
    """Copy the artifact into model/ with a manifest whose paths are relative."""
    man = dict(artifact.manifest)
    entries = []
    for entry in man.get(mf.K_FILES, []):
        src = mf.resolve_file(artifact.folder, entry["path"]) if artifact.folder else Path(entry["path"])
        if src.is_dir():
            raise InvalidOption(f"{src} is a folder inside the artifact's file list.", "Re-convert the model.")
        rel = src.name
        w.file(f"model/{rel}", src)
        entries.append({**entry, "path": rel})
    main = Path(man.get(mf.K_MAIN, "."))
    man[mf.K_FILES] = entries
    man[mf.K_MAIN] = main.name if main.name and main.name != "." else "."
    for key in (mf.K_TOKENIZER, mf.K_CHAT_TEMPLATE):
        value = man.get(key)
        if value and value != "embedded":
            man[key] = Path(value).name
    man.pop(mf.K_SCHEMA, None)
    man = {mf.K_SCHEMA: mf.SCHEMA_VERSION, **man}
    w.text("model/manifest.json", json.dumps(man, indent=2) + "\n")
    return man[mf.K_MAIN]


def _source(w: _Writer) -> None:
    import importlib

    for pkg in SOURCE_PACKAGES:
        base = Path(importlib.import_module(pkg).__file__).resolve().parent
        dest = pkg.replace(".", "/")
        for path in sorted(base.rglob("*")):
            rel = f"{dest}/{path.relative_to(base).as_posix()}"
            if pkg == "edge" and any(rel == d or rel.startswith(d + "/") for d in LEFT_BEHIND):
                continue
            if path.is_file() and not any(s in path.name or s in path.parts for s in SKIP):
                w.file(f"src/{rel}", path)
    apps = importlib.import_module("edge.apps")
    w.file("src/edge/apps/__init__.py", Path(apps.__file__))


def build(opts: PiOptions, folder: str | Path) -> Built:
    """Build (or update in place) the bundle folder for `opts`."""
    from . import requirements
    from edge import backends, __version__

    from edge.device import load_profile

    choice = choose(opts) if opts.serves else None
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    api_key, generated = opts.api_key, None
    if opts.lan and not api_key:
        api_key = generated = _kept_key(root) or secrets.token_urlsafe(24)
    w = _Writer(root)
    if choice:
        _model_files(w, choice.artifact)
    _source(w)
    # A worker runs llama.cpp's RPC server, so it needs llama-cpp-python whatever the server uses.
    package = backends.REGISTRY[choice.backend].package if choice else backends.REGISTRY["llama.cpp"].package
    w.text("requirements-aarch64.txt", requirements.render(extra_packages=(package,), python=opts.python))
    w.text("requirements-data.txt", requirements.render_data())
    config = {
        "edge": __version__,
        "profile": opts.profile,
        "artifact": choice.artifact.label if choice else None,
        "backend": choice.backend if choice else None,
        "service": opts.service,
    }
    if choice:
        config["serve"] = {"model": "model", "host": opts.host, "port": opts.port, "n_ctx": opts.n_ctx,
                           "threads": opts.threads or choice.threads, "guard": opts.guard, "api_key": api_key}
    if opts.has_worker:
        config["worker"] = {"host": opts.worker_host, "port": opts.worker_port, "mem": opts.worker_mem,
                            "threads": opts.threads, "cache": "state/rpc-cache",
                            "i_understand_no_auth": opts.i_understand_no_auth}
    w.text("config.json", json.dumps(config, indent=2) + "\n", 0o600 if api_key else 0o644)
    unit = {"@SERVICE@": opts.service, "@MEMORY_MAX@": str(load_profile(opts.profile).ram_available),
            # Loopback only: the kernel drops traffic from anywhere else too.
            "@IP_RULES@": "# --lan: reachable from the network" if opts.lan else "IPAddressAllow=localhost\nIPAddressDeny=any"}
    names = [n for n in TEMPLATES if choice or n == "install.sh"] + (list(WORKER_TEMPLATES) if opts.has_worker else [])
    for name in names:
        text = (HERE / name).read_text()
        for key, value in unit.items():
            text = text.replace(key, value)
        w.text(name, text, 0o755 if name in EXECUTABLE else 0o644)
    w.kept.add("BUNDLE.json")
    w.prune()
    listing = {rel: sha256(root / rel) for rel in sorted(w.kept - {"BUNDLE.json"})}
    label = choice.artifact.label if choice else None
    w.text("BUNDLE.json", json.dumps({"edge": __version__, "artifact": label, "files": listing}, indent=1) + "\n")
    size = sum((root / rel).stat().st_size for rel in w.kept)
    reasons = choice.reasons if choice else ["worker only: no model and no server on the Pi"]
    return Built(root, label, choice.backend if choice else None, reasons, sorted(set(w.changed)), len(w.kept), size,
                 generated)


def _kept_key(root: Path) -> str | None:
    """The key generated by an earlier build of this folder: re-deploying must not change it."""
    try:
        key = json.loads((root / "config.json").read_text())["serve"]["api_key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) and key else None


def build_archive(opts: PiOptions, out: str | Path) -> Built:
    """Build the bundle as a .tar.gz (written to a temp name, renamed when complete)."""
    out = Path(out)
    if out.is_dir():
        raise InvalidOption(f"{out} is a folder.", "Pass a file name such as bundle.tar.gz.")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".edge-bundle.") as tmp:
        built = build(opts, Path(tmp) / "edge-bundle")
        part = out.with_name(f".{out.name}.part")
        with tarfile.open(part, "w:gz", compresslevel=1) as tar:
            tar.add(built.path, arcname="edge-bundle")
        os.replace(part, out)
    built.path = out
    built.bytes = out.stat().st_size
    return built


def digest(folder: Path) -> str:
    """One hash over BUNDLE.json: equal digests mean equal bundles."""
    return hashlib.sha256((Path(folder) / "BUNDLE.json").read_bytes()).hexdigest()[:16]
