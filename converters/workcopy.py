"""The work copy of a model folder: a real checkpoint completed for every converter.

Real Hugging Face repos do not all hold what llama.cpp's converter, the ONNX exporter,
mlx-lm and the quality reference read: older ones ship PyTorch `pytorch_model.bin`
weights (one file, or shards with `pytorch_model.bin.index.json`) instead of
safetensors, SentencePiece ones only `tokenizer.model` without `tokenizer.json`, and
remote-code architectures a config.json to adapt (adapt.py). The work copy links every
file of the user's folder and writes what is adapted or missing in place of the links
(a link is removed before its file is written, so nothing is written through it): the
user's folder is never changed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.errors import BadModelFile, ConversionError
from edge.formats import PICKLE_INDEX, PICKLE_WEIGHTS

from . import adapt

# Other PyTorch pickles a repo may carry (original checkpoints, training state): never loaded.
OTHER_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Buffers older PyTorch checkpoints saved with the weights (Llama 2 era rotary tables): computed, not loaded.
BUFFERS = (".rotary_emb.inv_freq",)
# Text the slow and the fast tokenizer must split alike before tokenizer.json is kept.
TOKENIZER_CHECK = ("Hello world! The quick brown fox, 1234 jumps over   the lazy dog.\n"
                   "  Leading spaces, café, naïve, 東京, emoji 🙂 and code: def f(x):\n\treturn x * 2\n")


def pickle_weights(folder: Path) -> list[Path]:
    """The folder's PyTorch weight files, in shard order (the index's files when it has one)."""
    folder = Path(folder)
    index = folder / PICKLE_INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise BadModelFile(f"{index} is not a valid weight index ({exc}).", "Re-download the model.") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise BadModelFile(f"{folder} lacks {', '.join(missing)}, which {PICKLE_INDEX} lists.",
                               "Download every weight shard of the model.")
        return [folder / n for n in names]
    return sorted(p for p in folder.iterdir() if p.is_file() and PICKLE_WEIGHTS.fullmatch(p.name))


def other_pickles(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.is_file() and p.name.endswith(OTHER_PICKLES) and not PICKLE_WEIGHTS.fullmatch(p.name))


def load_pickle(path: Path) -> dict:
    """A PyTorch weights file as {name: tensor}, through torch's weights-only unpickler (no code runs)."""
    import pickle

    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # files of torch's legacy (pre-zip) format cannot be mapped
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise BadModelFile(
            f"{path} is not a plain PyTorch weights file: torch's weights-only loader refused it "
            f"({str(exc).splitlines()[0][:160]}).",
            "Use safetensors weights (save_pretrained(safe_serialization=True)); edge never runs code from a pickle.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadModelFile(f"{path} holds no table of named tensors.", "Use the model's transformers weights (safetensors).")
    return state


def pickle_parameters(folder: Path) -> int:
    """Parameter count of a folder's PyTorch weights (memory-mapped: no tensor is read)."""
    total, seen = 0, set()
    for f in pickle_weights(folder):
        for name, t in load_pickle(f).items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if key not in seen and not name.endswith(BUFFERS):  # tied weights: saved once, shared under two names
                seen.add(key)
                total += t.numel()
    return total


# -- the steps ---------------------------------------------------------------------------------

def _replace(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)  # a link to the user's file: never write through it
    path.write_text(text, encoding="utf-8")


def _config(folder: Path, dest: Path) -> None:
    _replace(dest / "config.json", json.dumps(adapt.source_config(adapt.read(folder)), indent=2) + "\n")


def _needs_safetensors(folder: Path) -> bool:
    return not any(p for p in Path(folder).glob("*.safetensors") if not p.name.startswith("consolidated")) \
        and bool(pickle_weights(folder))


def _safetensors(folder: Path, dest: Path) -> None:
    """Each PyTorch shard as a safetensors shard, and the index to match."""
    from safetensors.torch import save_file

    shards = pickle_weights(folder)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors, seen = {}, set()
        for key, t in load_pickle(shard).items():
            if key.endswith(BUFFERS):
                continue
            ptr = t.untyped_storage().data_ptr()
            # safetensors refuses tensors that share memory (tied weights are saved once, under two names).
            t = t.clone() if ptr in seen else t.contiguous()
            seen.add(ptr)
            tensors[key] = t
            total += t.numel() * t.element_size()
        save_file(tensors, str(dest / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        (dest / shard.name).unlink(missing_ok=True)
    (dest / PICKLE_INDEX).unlink(missing_ok=True)
    if len(shards) > 1:
        _replace(dest / "model.safetensors.index.json",
                 json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")


def _needs_tokenizer_json(folder: Path) -> bool:
    folder = Path(folder)
    return not (folder / "tokenizer.json").is_file() and (folder / "tokenizer.model").is_file()


def _tokenizer_json(folder: Path, dest: Path) -> None:
    """tokenizer.json from tokenizer.model by transformers' slow -> fast conversion, kept only when
    both tokenizers give the same ids (the ONNX and MLX runtimes read tokenizer.json)."""
    from transformers import AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        try:  # the class tokenizer_config.json names; a remote-code or unnamed one is read as Llama's
            fast = AutoTokenizer.from_pretrained(dest, use_fast=True, trust_remote_code=False)
            slow_cls = fast.slow_tokenizer_class if fast.is_fast else None
        except (ValueError, OSError, KeyError, AttributeError):
            fast, slow_cls = None, None
        if fast is None or not fast.is_fast or slow_cls is None:
            fast, slow_cls = LlamaTokenizerFast.from_pretrained(dest, from_slow=True), LlamaTokenizer
        slow = slow_cls.from_pretrained(dest)
    except Exception as exc:  # sentencepiece, protobuf and transformers raise many kinds here
        raise ConversionError(f"Could not build tokenizer.json from {folder / 'tokenizer.model'} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}).",
                              "Save the tokenizer as tokenizer.json (tokenizer.save_pretrained) and convert again.") from None
    from .quality import eval_text

    for text in (TOKENIZER_CHECK, eval_text()[:4000]):
        if fast(text).input_ids != slow(text).input_ids:
            raise ConversionError(f"The tokenizer.json built from {folder / 'tokenizer.model'} splits text differently "
                                  "from the SentencePiece tokenizer.",
                                  "Save the tokenizer as tokenizer.json (tokenizer.save_pretrained) and convert again.")
    fast.backend_tokenizer.save(str(dest / "tokenizer.json"))


def _tokenizer_config(folder: Path) -> dict:
    try:
        cfg = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _needs_tokenizer_class(folder: Path) -> bool:
    """AutoTokenizer (the quality reference, optimum, mlx-lm and llama.cpp's BPE vocabulary all use it)
    cannot pick a class: tokenizer_config.json names a remote-code one, or none for a model type
    transformers does not know (remote-code architectures)."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cfg = _tokenizer_config(folder)
    name = cfg.get("tokenizer_class")
    if name:
        return not hasattr(transformers, name) or "AutoTokenizer" in (cfg.get("auto_map") or {})
    model_type = adapt.source_config(adapt.read(folder)).get("model_type")
    return model_type not in CONFIG_MAPPING


def _tokenizer_class(folder: Path, dest: Path) -> None:
    """Name transformers' generic fast tokenizer, which reads tokenizer.json (the work copy has one by now)."""
    cfg = {k: v for k, v in _tokenizer_config(folder).items() if k != "auto_map"}
    _replace(dest / "tokenizer_config.json", json.dumps({**cfg, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n")


@dataclass(frozen=True)
class Step:
    label: str
    needed: Callable[[Path], bool]
    write: Callable[[Path, Path], None]


# In order: the tokenizer step reads the adapted config (AutoTokenizer looks up its model type).
STEPS = (
    Step("config adapted", adapt.needs_copy, _config),
    Step("PyTorch weights to safetensors", _needs_safetensors, _safetensors),
    Step("tokenizer.json from tokenizer.model", _needs_tokenizer_json, _tokenizer_json),
    Step("tokenizer class named", _needs_tokenizer_class, _tokenizer_class),
)


def needed(folder: Path) -> list[str]:
    """What the work copy of `folder` would do (nothing: the converters read the folder itself)."""
    return [s.label for s in STEPS if s.needed(folder)]


def write(folder: Path, dest: Path) -> Path:
    """`dest`: links to every file of `folder`, with each needed step's files in place of links."""
    folder, dest = Path(folder), Path(dest)
    steps = [s for s in STEPS if s.needed(folder)]
    adapt.link_files(folder, dest)
    for step in steps:
        step.write(folder, dest)
    return dest
