"""The artifact manifest: keys, writing, reading and verification.

Every artifact folder in the store holds `manifest.json`. The converter writes
it; the runtime verifies it at load: cheaply by default (sizes and a hash of
the first MiB of each file), fully with `verify=True`.
"""
from __future__ import annotations

import hashlib
import json
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

HEAD_BYTES = 1 << 20


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
    path = Path(folder) / FILENAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadModelFile(f"No {FILENAME} in {folder}.", "Re-run the conversion or `edge import` it.")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadModelFile(f"{path} is not valid JSON ({exc}).", "Delete the folder and convert again.")
    for key in (K_FORMAT, K_FILES):
        if key not in data:
            raise BadModelFile(f"{path} has no '{key}' entry.", "Delete the folder and convert again.")
    return data


def resolve_file(folder: Path, entry_path: str) -> Path:
    p = Path(entry_path)
    return p if p.is_absolute() else Path(folder) / p


def verify(folder: Path, manifest: dict, full: bool = False) -> None:
    """Raise ManifestMismatch when a file is missing or differs from its entry."""
    hint = "Re-convert or re-import the model (or delete the folder from the store)."
    for entry in manifest[K_FILES]:
        path = resolve_file(folder, entry["path"])
        if not path.exists():
            raise ManifestMismatch(f"{path} listed in the manifest is missing.", hint)
        size = path.stat().st_size
        if "size" in entry and size != entry["size"]:
            raise ManifestMismatch(
                f"{path} has {size} bytes, the manifest says {entry['size']} (truncated or replaced?).", hint
            )
        if full and entry.get("sha256"):
            if sha256_file(path) != entry["sha256"]:
                raise ManifestMismatch(f"{path} does not match its sha256 in the manifest.", hint)
        elif entry.get("head_sha256"):
            if sha256_file(path, HEAD_BYTES) != entry["head_sha256"]:
                raise ManifestMismatch(f"{path}: its first MiB does not match the manifest.", hint)
