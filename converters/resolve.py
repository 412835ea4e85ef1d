"""Turn SOURCE (Hugging Face folder, GGUF file, or store/catalog name) into a `Source`.

A GGUF source is dequantized into an fp32 Hugging Face checkpoint with
transformers (`gguf_file=`), keeping its tokenizer and chat template, and
cached in the store as `<model>/hf-fp32/` (manifest format "hf") so later
conversions reuse it.
"""
from __future__ import annotations

from pathlib import Path

from edge import manifest as mf
from edge.errors import BadModelFile, ConversionError, ModelNotFound
from edge.formats import GGUF
from edge.store import HF, Store, artifact_from_folder, artifact_name

from .from_gguf import from_gguf
from .source import Source, from_hf_folder


def resolve(ref: str | None, store: Store, name: str | None = None, progress=None) -> Source:
    """Find or build the Hugging Face folder for `ref`."""
    from edge.models import catalog, default_model

    ref = ref or default_model()
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir() and (path / mf.FILENAME).is_file():
            art = artifact_from_folder(path)
            return _from_artifact(art, store, name, progress)
        if path.is_dir():
            return from_hf_folder(path, name or artifact_name(path), kind=HF, origin=str(path.resolve()))
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


def check_supported(ref: str | None, store: Store) -> None:
    """Refuse an unsupported architecture from config.json or the GGUF header alone.

    Runs before the converter imports torch and friends or reads any weight, so a model it
    cannot take fails at once. Anything else unusual is left for resolve() to report.
    """
    from edge.errors import EdgeError
    from edge.gguf_header import MAGIC, read_info

    from .source import check_architecture, check_gguf_architecture, read_config

    path = Path(ref).expanduser() if ref else None
    if path is None or not path.exists():
        try:
            art = store.resolve((ref or "").partition(":")[0]).source() if ref else None
        except EdgeError:
            return
        if art is None or art.format not in (HF, GGUF):
            return
        path = Path(art.main_path)
    try:
        if path.is_file():
            with open(path, "rb") as f:
                if f.read(4) != MAGIC:
                    return
            check_gguf_architecture(read_info(path))
        elif (path / "config.json").is_file() and not (path / mf.FILENAME).is_file():
            check_architecture(read_config(path), path)
    except (BadModelFile, OSError):
        return


def _from_artifact(art, store: Store, name: str | None, progress) -> Source:
    name = name or art.model
    if art.format == HF:
        src = art.manifest.get(mf.K_SOURCE) or {}
        out = from_hf_folder(art.main_path, name, kind=src.get("kind", HF), origin=src.get("path") or str(art.main_path),
                             sha256=src.get("sha256"))
        out.license = art.manifest.get(mf.K_LICENSE)
        return out
    if art.format == GGUF:
        return from_gguf(art.main_path, name, store, progress, license=art.manifest.get(mf.K_LICENSE),
                         parameters=art.manifest.get(mf.K_PARAMS))
    raise ConversionError(f"{art.label} is a {art.format} artifact, which cannot be converted from.",
                          "Convert from a Hugging Face folder or a GGUF file.")
