"""Turn SOURCE (Hugging Face folder, GGUF file, or store/catalog name) into a Hugging Face folder.

A GGUF source is dequantized into an fp32 Hugging Face checkpoint with
transformers (`gguf_file=`), keeping its tokenizer and chat template, and
cached in the store as `<model>/hf-fp32/` (manifest format "hf") so later
conversions reuse it.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from edge import manifest as mf
from edge.errors import BadModelFile, ConversionError, ModelNotFound
from edge.formats import GGUF
from edge.store import HF, Store, artifact_from_folder, artifact_name, safe_name


# Hugging Face architectures that all three targets (llama.cpp's converter,
# optimum's ONNX exporter, mlx-lm) support. llama and qwen2 are tested here.
SUPPORTED = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


@dataclass
class Source:
    """A Hugging Face folder ready to convert, and where it came from."""

    name: str
    hf_dir: Path
    kind: str            # "hf" or "gguf"
    path: str            # what the user pointed at
    sha256: str          # hash of the source weights
    architecture: str
    parameters: int | None
    context_length: int | None
    license: str | None = None

    def manifest_source(self) -> dict:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256}


def resolve(ref: str | None, store: Store, name: str | None = None, progress=None) -> Source:
    """Find or build the Hugging Face folder for `ref`."""
    from models import catalog, default_model

    ref = ref or default_model()
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir() and (path / mf.FILENAME).is_file():
            art = artifact_from_folder(path)
            return _from_artifact(art, store, name, progress)
        if path.is_dir():
            return from_hf_folder(path, name or artifact_name(path), kind=HF, origin=str(path.resolve()))
        from .from_gguf import from_gguf

        return from_gguf(path.resolve(), name or artifact_name(path), store, progress)
    if "/" in ref or ref.endswith((".gguf", ".safetensors")):
        raise ModelNotFound(f"No file or folder at {ref}.", "Pass a Hugging Face folder, a .gguf file or a model name.")
    ref_name, _, _ = ref.partition(":")
    try:
        model = store.resolve(ref_name)
    except ModelNotFound:
        raise
    # A cached hf-fp32 folder wins over the catalog's GGUF.
    src = model.source()
    if src is None:
        raise ModelNotFound(f"'{ref}' has no Hugging Face folder or GGUF file to convert from.",
                            "Import one with `edge import PATH`.")
    out = _from_artifact(src, store, name or model.name, progress)
    entry = catalog().get(model.name, {})
    out.license = out.license or entry.get("license")
    out.parameters = out.parameters or entry.get("parameters")
    return out


def _from_artifact(art, store: Store, name: str | None, progress) -> Source:
    name = name or art.model
    if art.format == HF:
        src = art.manifest.get(mf.K_SOURCE) or {}
        out = from_hf_folder(art.main_path, name, kind=src.get("kind", HF), origin=src.get("path") or str(art.main_path),
                             sha256=src.get("sha256"))
        out.license = art.manifest.get(mf.K_LICENSE)
        return out
    if art.format == GGUF:
        from .from_gguf import from_gguf

        return from_gguf(art.main_path, name, store, progress, license=art.manifest.get(mf.K_LICENSE),
                         parameters=art.manifest.get(mf.K_PARAMS))
    raise ConversionError(f"{art.label} is a {art.format} artifact, which cannot be converted from.",
                          "Convert from a Hugging Face folder or a GGUF file.")


def read_config(folder: Path) -> dict:
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise BadModelFile(f"{folder} has no config.json, so it is not a Hugging Face model folder.",
                           "Pass a folder with config.json, safetensors weights and tokenizer files, or a .gguf file.")
    try:
        return json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadModelFile(f"{cfg_path} is not valid JSON ({exc}).", "Fix or replace config.json.")


def check_architecture(cfg: dict, folder: Path) -> str:
    archs = cfg.get("architectures") or []
    for a in archs:
        if a in SUPPORTED:
            return SUPPORTED[a]
    got = ", ".join(archs) or cfg.get("model_type") or "unknown"
    raise ConversionError(f"Architecture {got} in {folder} is not supported by the converter.",
                          f"Supported: {', '.join(SUPPORTED)}.")


def weight_files(folder: Path) -> list[Path]:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise BadModelFile(f"{folder} has no .safetensors weights.",
                           "Save the model with safe_serialization=True, or convert from a .gguf file.")
    return files


def check_safetensors(files: list[Path]) -> int:
    """Read every safetensors header and check the file holds all its tensors; return the parameter count."""
    import struct

    total = 0
    for f in files:
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > size - 8 or n > 100_000_000:
                    raise ValueError("header length past the end of the file")
                header = json.loads(fh.read(n))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise BadModelFile(f"{f} is not a valid safetensors file ({exc}).",
                               "Re-download or re-save the model weights.") from None
        end = 0
        for key, t in header.items():
            if key == "__metadata__":
                continue
            end = max(end, t["data_offsets"][1])
            count = 1
            for d in t["shape"]:
                count *= d
            total += count
        if 8 + n + end > size:
            raise BadModelFile(f"{f} is truncated: it has {size} bytes, its header needs {8 + n + end}.",
                               "Re-download or re-save the model weights.")
    return total


def hash_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(mf.sha256_file(f).encode())
    return h.hexdigest()


def from_hf_folder(folder: Path, name: str, kind: str, origin: str, sha256: str | None = None) -> Source:
    folder = Path(folder)
    cfg = read_config(folder)
    arch = check_architecture(cfg, folder)
    files = weight_files(folder)
    params = check_safetensors(files)
    if not (folder / "tokenizer.json").is_file():
        raise BadModelFile(f"{folder} has no tokenizer.json.",
                           "Save the tokenizer with the model (tokenizer.save_pretrained(folder)).")
    return Source(
        name=safe_name(name), hf_dir=folder, kind=kind, path=origin, sha256=sha256 or hash_files(files),
        architecture=arch, parameters=params, context_length=cfg.get("max_position_embeddings"),
    )


def write_chat_template(folder: Path) -> Path | None:
    """Make sure `chat_template.jinja` exists, taking it from tokenizer_config.json when needed."""
    folder = Path(folder)
    target = folder / "chat_template.jinja"
    if target.is_file():
        return target
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        tpl = json.loads(cfg.read_text()).get("chat_template")
        if isinstance(tpl, list):  # named templates: keep the default one
            tpl = next((t["template"] for t in tpl if t.get("name") == "default"), None)
        if tpl:
            target.write_text(tpl)
            return target
    return None
