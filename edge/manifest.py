"""The artifact manifest: keys, writing, reading and verification.

Every artifact folder in the store holds `manifest.json`. The converter writes
it; the runtime verifies it at load. A file with a sha256 is hashed whole the
first time (at import, or at the first load) and its (size, mtime, inode) is
then remembered in a side-car, `verified.json`; later loads hash it again only
when those change, so corrupt weights fail before any output and a warm start
costs a `stat`. `verify=True` hashes every file regardless.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import BadModelFile, ManifestMismatch
from .fsutil import atomic_write

FILENAME = "manifest.json"
SCHEMA_VERSION = 1

# Manifest keys, in one place.
K_SCHEMA = "schema_version"
K_NAME = "name"                      # model name, e.g. smollm2-135m-instruct
K_FORMAT = "format"                  # gguf | onnx | mlx
K_QUANT = "quant"                    # one of formats.QUANTS[format]
K_ARCH = "architecture"              # e.g. llama, qwen2
K_PARAMS = "parameters"              # parameter count
K_CONTEXT = "context_length"
K_LICENSE = "license"
K_SOURCE = "source"                  # {"path":…, "sha256":…, "kind": "hf"|"gguf"|"package"}
K_FILES = "files"                    # [{"path": relative or absolute, "size":…, "sha256":…, "head_sha256":…}]
K_MAIN = "main"                      # the file a backend opens (gguf file, onnx model, mlx folder ".")
K_TOKENIZER = "tokenizer"            # path of tokenizer.json ("embedded" for GGUF)
K_CHAT_TEMPLATE = "chat_template"    # path of the template file, or "embedded"
K_CONVERTER = "converter"            # {"edge": version, libraries…}
K_SECONDS = "seconds"                # time the conversion took
K_QUALITY = "quality"                # {"perplexity":…, "source_perplexity":…, "top1_agreement":…, "tokens":…}
K_CREATED = "created"
K_GATE = "gate"                      # {"threshold":…, "passed": true|false|null (not checked), "allow_below": bool}

DEFAULT_THRESHOLD = 0.90             # top-1 agreement an artifact needs to become a default

HEAD_BYTES = 1 << 20
SIDECAR = "verified.json"            # {"files": {abs path: {"sha256", "size", "mtime_ns", "inode"}}}
_HINT = "Re-convert or re-import the model (or delete the folder from the store)."


def sha256_file(path: Path, limit: int | None = None, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while True:
            n = chunk if left is None else min(chunk, left)
            if n == 0:
                break
            b = f.read(n)
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h.hexdigest()


def describe_file(root: Path, path: Path, full_hash: bool = True) -> dict:
    """The manifest entry of one file: path relative to root when inside it."""
    path = Path(path)
    try:
        rel = str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        rel = str(path.resolve())
    entry = {"path": rel, "size": path.stat().st_size, "head_sha256": sha256_file(path, HEAD_BYTES)}
    if full_hash:
        entry["sha256"] = sha256_file(path)
    return entry


def write(folder: Path, manifest: dict) -> Path:
    """Write manifest.json atomically (temp file + rename)."""
    folder = Path(folder)
    manifest = {K_SCHEMA: SCHEMA_VERSION, **manifest}
    return atomic_write(folder / FILENAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read(folder: Path) -> dict:
    """The manifest of an artifact folder; BadModelFile naming the file when it is missing or corrupt."""
    path = Path(folder) / FILENAME
    redo = "Delete the folder and convert or import the model again."
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BadModelFile(f"No {FILENAME} in {folder}.", "Re-run the conversion or `edge import` it.") from None
    except OSError as exc:
        raise BadModelFile(f"{path} cannot be read ({exc.strerror or exc}).", redo) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadModelFile(f"The manifest {path} is corrupt (not valid JSON: {str(exc)[:80]}).", redo) from None
    problem = _problem(data)
    if problem:
        raise BadModelFile(f"The manifest {path} is corrupt ({problem}).", redo)
    return data


def _problem(data) -> str | None:
    """What is wrong with a parsed manifest's shape, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key in (K_FORMAT, K_FILES):
        if key not in data:
            return f"no '{key}' entry"
    for key in (K_FORMAT, K_NAME, K_QUANT, K_MAIN, K_TOKENIZER, K_CHAT_TEMPLATE):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"'{key}' is not a string"
    for key in (K_CONTEXT, K_PARAMS):
        v = data.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            return f"'{key}' is not a count"
    if data.get(K_QUALITY) is not None and not isinstance(data[K_QUALITY], dict):
        return f"'{K_QUALITY}' is not an object"
    if not isinstance(data[K_FILES], list):
        return f"'{K_FILES}' is not a list"
    for e in data[K_FILES]:
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not e["path"]:
            return f"a '{K_FILES}' entry without a path"
        size = e.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            return f"the size of {e['path'][:80]} is not a byte count"
        for h in ("sha256", "head_sha256"):
            if e.get(h) is not None and not isinstance(e[h], str):
                return f"the {h} of {e['path'][:80]} is not a string"
    return None


def gate(manifest: dict) -> tuple[bool, str]:
    """(may this artifact be a default and enter the tune cache, why).

    Artifacts the converter made must have passed the quality gate (top-1 agreement
    with their source at or above the threshold), or have been kept with
    --allow-below-threshold. Imported and packaged files are the source itself."""
    if K_CONVERTER not in manifest:
        return True, "not converted by edge (a source model)"
    g = manifest.get(K_GATE) if isinstance(manifest.get(K_GATE), dict) else {}
    threshold = g.get("threshold", DEFAULT_THRESHOLD)
    agree = (manifest.get(K_QUALITY) or {}).get("top1_agreement")
    if not isinstance(threshold, (int, float)):
        threshold = DEFAULT_THRESHOLD
    if g.get("allow_below") is True:
        return True, "kept with --allow-below-threshold"
    if not isinstance(agree, (int, float)):
        return False, "its quality was never checked (convert it again with the quality check)"
    if agree < threshold:
        return False, f"top-1 agreement {agree:.2f} is below {threshold:.2f}"
    return True, f"top-1 agreement {agree:.2f} >= {threshold:.2f}"


def resolve_file(folder: Path, entry_path: str) -> Path:
    p = Path(entry_path)
    return p if p.is_absolute() else Path(folder) / p


# -- verification ------------------------------------------------------------------------
def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def sidecar_path(folder: Path, spare: Path | None = None) -> Path:
    """Where the verified stamps of an artifact folder live: beside its manifest when that
    folder is writable, else in `spare` (the store's verified/ folder, for a read-only install)."""
    folder = Path(folder)
    if spare is None or os.access(folder, os.W_OK):
        return folder / SIDECAR
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24]
    return Path(spare) / f"{key}.json"


def read_sidecar(folder: Path, spare: Path | None = None) -> dict:
    """{abs path: stamp}; an unreadable or odd side-car counts as empty (files get hashed again)."""
    try:
        data = json.loads(sidecar_path(folder, spare).read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def remember(folder: Path, stamps: dict, spare: Path | None = None) -> None:
    """Record files whose full hash matched; a store we cannot write to just hashes again next time."""
    try:
        atomic_write(sidecar_path(folder, spare), json.dumps({"files": stamps}, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def is_verified(stamps: dict, path: Path, sha256: str) -> bool:
    """True when `path` was hashed to `sha256` and has not changed (size, mtime, inode) since."""
    rec = stamps.get(str(Path(path).resolve()))
    try:
        return rec is not None and rec.get("sha256") == sha256 and {k: rec.get(k) for k in ("size", "mtime_ns", "inode")} == _stamp(path)
    except OSError:
        return False


def mark_verified(folder: Path, manifest: dict, spare: Path | None = None) -> None:
    """Remember the files of a manifest just written from their full hashes (import, conversion)."""
    stamps = read_sidecar(folder, spare)
    for entry in manifest[K_FILES]:
        path = resolve_file(folder, entry["path"])
        if entry.get("sha256") and path.is_file():
            stamps[str(path.resolve())] = {"sha256": entry["sha256"], **_stamp(path)}
    remember(folder, stamps, spare)


def _hash(path: Path, limit: int | None = None) -> str:
    try:
        return sha256_file(path, limit)
    except OSError as exc:
        raise ManifestMismatch(f"{path} cannot be read ({exc.strerror or exc}).",
                               "Check its permissions, or re-convert or re-import the model.") from None


def verify(folder: Path, manifest: dict, full: bool = False, spare: Path | None = None) -> None:
    """Raise ManifestMismatch when a file is missing or differs from its entry.

    A file with a sha256 is hashed whole unless the side-car says this very file (same
    size, mtime and inode) already matched; `full` hashes every file regardless."""
    stamps = read_sidecar(folder, spare)
    before = dict(stamps)
    for entry in manifest[K_FILES]:
        path = resolve_file(folder, entry["path"])
        if not path.exists():
            raise ManifestMismatch(f"{path} listed in the manifest is missing.", _HINT)
        size = path.stat().st_size
        if "size" in entry and size != entry["size"]:
            raise ManifestMismatch(
                f"{path} has {size} bytes, the manifest says {entry['size']} (truncated or replaced?).", _HINT
            )
        if entry.get("sha256"):
            if not full and is_verified(stamps, path, entry["sha256"]):
                continue
            if _hash(path) != entry["sha256"]:
                stamps.pop(str(path.resolve()), None)
                if stamps != before:
                    remember(folder, stamps, spare)
                raise ManifestMismatch(f"{path} is corrupt: its content does not match the sha256 in the manifest.", _HINT)
            stamps[str(path.resolve())] = {"sha256": entry["sha256"], **_stamp(path)}
        elif entry.get("head_sha256"):
            if _hash(path, HEAD_BYTES) != entry["head_sha256"]:
                raise ManifestMismatch(f"{path}: its first MiB does not match the manifest.", _HINT)
    if stamps != before:
        remember(folder, stamps, spare)
