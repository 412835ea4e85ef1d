"""Config adapters: config.json rewritten in a work copy of a model folder before conversion.

Some checkpoints name a remote-code class that is, weight for weight, one the converters
know (MobileLLM is a Llama): SOURCE rewrites their config.json once, and every target
and the quality reference then see that architecture. TARGET rewrites it for one
converter only, where that converter reads the config differently from the model's
own code. A work copy holds links to the original files and the new config.json;
nothing in the user's folder changes.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from edge.errors import ConversionError


def _mobilellm(cfg: dict) -> dict:
    """MobileLLM (facebook/MobileLLM-125M .. 1.5B): a Llama whose tied embeddings are `share_embedding`."""
    if cfg.get("layer_sharing"):
        raise ConversionError("This MobileLLM checkpoint repeats its blocks (layer_sharing), which the converter "
                              "does not support.", "Use a MobileLLM checkpoint with layer_sharing false.")
    out = {k: v for k, v in cfg.items() if k not in ("auto_map", "share_embedding", "layer_sharing")}
    out.update(architectures=["LlamaForCausalLM"], model_type="llama",
               tie_word_embeddings=bool(cfg.get("share_embedding", cfg.get("tie_word_embeddings", False))))
    return out


def _minicpm_mlx(cfg: dict) -> dict:
    # mlx-lm's MiniCPM skips the logit scale when the embeddings are tied (its untied head copies
    # the table, so nothing is lost), its rope base default differs from MiniCPM's 10000, and it
    # requires num_key_value_heads, which MiniCPM's code defaults to the number of heads.
    return {**cfg, "tie_word_embeddings": False, "rope_theta": cfg.get("rope_theta", 10000.0),
            "num_key_value_heads": cfg.get("num_key_value_heads") or cfg["num_attention_heads"]}


# Hugging Face architecture -> the config the whole conversion sees.
SOURCE = {"MobileLLMForCausalLM": _mobilellm}
# target format -> Hugging Face architecture -> the config that target's converter sees.
TARGET = {"mlx": {"MiniCPMForCausalLM": _minicpm_mlx}}


def _arch(cfg: dict) -> str:
    return (cfg.get("architectures") or [""])[0]


def source_config(cfg: dict) -> dict:
    """`cfg` as the conversion sees it (itself when no adapter applies)."""
    fix = SOURCE.get(_arch(cfg))
    return fix(cfg) if fix else cfg


def target_config(cfg: dict, target: str) -> dict:
    fix = TARGET.get(target, {}).get(_arch(cfg))
    return fix(cfg) if fix else cfg


def read(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))


def needs_copy(folder: Path, target: str | None = None) -> bool:
    cfg = read(folder)
    return _arch(cfg) in (TARGET.get(target, {}) if target else SOURCE)


def write_copy(folder: Path, dest: Path, target: str | None = None) -> Path:
    """`dest`: links to every file of `folder`, and its adapted config.json."""
    folder, dest = Path(folder), Path(dest)
    cfg = read(folder)
    new = target_config(cfg, target) if target else source_config(cfg)
    link_files(folder, dest, skip=("config.json",))
    (dest / "config.json").write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
    return dest


def link_files(folder: Path, dest: Path, skip: tuple = ()) -> None:
    """Fill `dest` with links to the files of `folder` (copies where links cannot be made)."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in Path(folder).iterdir():
        if p.name in skip or not p.is_file():
            continue
        try:
            os.symlink(p.resolve(), dest / p.name)
        except OSError:  # no symlinks here (some Windows setups): copy instead
            shutil.copy2(p, dest / p.name)


@contextmanager
def for_target(folder: Path, target: str, scratch: Path):
    """The folder `target`'s converter should read: `folder` itself, or an adapted copy under `scratch`."""
    if not needs_copy(folder, target):
        yield Path(folder)
        return
    dest = Path(scratch) / f"adapted-{target}"
    try:
        yield write_copy(folder, dest, target)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
