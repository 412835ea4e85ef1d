"""A Hugging Face folder ready to convert (`Source`), and the checks made on it.

resolve.py turns what the user named into a Source; from_gguf.py builds the
folder from a GGUF file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edge import manifest as mf
from edge.errors import BadModelFile, ConversionError
from edge.store import safe_name

from . import adapt


@dataclass(frozen=True)
class Arch:
    """One architecture the converter takes, and how each target handles it."""

    family: str          # short name kept in manifests (llama.cpp's name where it has one)
    gguf: str            # llama.cpp's `general.architecture` for it
    onnx: str            # "fused": edge's own graph (onnx_graph.py); "optimum": optimum's traced export
    mlx: str             # the mlx-lm model module that runs it


# Hugging Face architecture -> how GGUF (llama.cpp's converter), ONNX and MLX (mlx-lm) handle it.
# Each one has a tiny-model parity test (tests/test_parity.py) through all three backends.
SUPPORTED = {
    "LlamaForCausalLM": Arch("llama", "llama", "fused", "llama"),        # Llama 3.2, SmolLM2
    "MistralForCausalLM": Arch("mistral", "llama", "fused", "mistral"),
    "Qwen2ForCausalLM": Arch("qwen2", "qwen2", "fused", "qwen2"),        # Qwen2.5
    "Qwen3ForCausalLM": Arch("qwen3", "qwen3", "fused", "qwen3"),
    "Gemma2ForCausalLM": Arch("gemma2", "gemma2", "fused", "gemma2"),
    "Gemma3ForCausalLM": Arch("gemma3", "gemma3", "fused", "gemma3_text"),
    "Phi3ForCausalLM": Arch("phi3", "phi3", "optimum", "phi3"),          # Phi-3.5-mini, Phi-4-mini
    "MiniCPMForCausalLM": Arch("minicpm", "minicpm", "fused", "minicpm"),  # MiniCPM 1B/2B, MiniCPM4-0.5B
    # Converted as the Llama it is (adapt.py): a "llama" GGUF, Llama's ONNX graph and mlx-lm module.
    "MobileLLMForCausalLM": Arch("mobilellm", "llama", "fused", "llama"),
}

# Architectures of the same families that the converter does not take, and why (said in the refusal).
REFUSED = {
    "MiniCPM3ForCausalLM": "MiniCPM3's multi-head latent attention",
    "Llama4ForCausalLM": "the Llama 4 text architecture, as MobileLLM-R1 has",
}
GGUF_REFUSED = {"minicpm3": REFUSED["MiniCPM3ForCausalLM"], "llama4": REFUSED["Llama4ForCausalLM"]}

# llama.cpp's `general.architecture` -> the Hugging Face architecture a GGUF file dequantizes to
# (the first one in SUPPORTED: a Mistral model converts to a "llama" GGUF, which comes back as Llama).
GGUF_ARCHITECTURES: dict[str, str] = {}
for _hf, _arch in SUPPORTED.items():
    GGUF_ARCHITECTURES.setdefault(_arch.gguf, _hf)


def supported_list() -> str:
    return ", ".join(f"{hf} ({a.family})" for hf, a in SUPPORTED.items())


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
    """The family of a config.json's architecture, or ConversionError naming the supported ones."""
    archs = cfg.get("architectures") or []
    for a in archs:
        if a in SUPPORTED:
            adapt.source_config(cfg)  # refuses what its config adapter cannot take (MobileLLM's layer sharing)
            return SUPPORTED[a].family
    got = ", ".join(archs) or cfg.get("model_type") or "unknown"
    why = next((f" ({REFUSED[a]})" for a in archs if a in REFUSED), "")
    raise ConversionError(f"Architecture {got}{why} in {folder} is not supported by the converter.",
                          f"Supported: {supported_list()}.")


def check_gguf_architecture(info) -> str:
    """The Hugging Face architecture a GGUF file (header only) dequantizes to, checked before any weight is read."""
    arch = info.architecture
    if arch not in GGUF_ARCHITECTURES:
        why = f" ({GGUF_REFUSED[arch]})" if arch in GGUF_REFUSED else ""
        raise ConversionError(
            f"{info.path} is a GGUF of architecture '{arch}'{why}, which the converter does not support.",
            f"Supported GGUF architectures: {', '.join(GGUF_ARCHITECTURES)}. Run it as it is with `edge run -m {info.path}`.")
    return GGUF_ARCHITECTURES[arch]


def weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors weights or, without them, its transformers PyTorch weights
    (pytorch_model.bin or its shards; the work copy turns them into safetensors, workcopy.py)."""
    from . import workcopy

    # consolidated.safetensors is a second copy of the weights in Mistral's own layout.
    files = sorted(p for p in Path(folder).glob("*.safetensors") if not p.name.startswith("consolidated"))
    files = files or workcopy.pickle_weights(folder)
    if not files:
        others = workcopy.other_pickles(folder)
        if others:
            raise BadModelFile(f"{folder} has no safetensors weights, only PyTorch pickles edge does not load "
                               f"({', '.join(others)}).",
                               "Use the model's transformers weights: model.safetensors, or pytorch_model.bin "
                               "(read with torch's weights-only loader).")
        raise BadModelFile(f"{folder} has no .safetensors weights.",
                           "Save the model with safe_serialization=True, or convert from a .gguf file.")
    return files


def check_safetensors(files: list[Path]) -> int:
    """Open every safetensors file (the library checks its header and that it holds all its
    tensors) and return the parameter count."""
    from safetensors import SafetensorError, safe_open

    total = 0
    for f in files:
        try:
            with safe_open(str(f), framework="numpy") as st:
                for key in st.keys():
                    count = 1
                    for d in st.get_slice(key).get_shape():
                        count *= d
                    total += count
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadModelFile(f"{f} is not a valid safetensors file ({str(exc).splitlines()[0][:120]}).",
                               "Re-download or re-save the model weights.") from None
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
    # PyTorch weights are counted once the work copy holds them as safetensors (pipeline.py).
    params = check_safetensors(files) if files[0].suffix == ".safetensors" else None
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        raise BadModelFile(f"{folder} has neither tokenizer.json nor a SentencePiece tokenizer.model.",
                           "Save the tokenizer with the model (tokenizer.save_pretrained(folder)).")
    return Source(
        name=safe_name(name), hf_dir=folder, kind=kind, path=origin, sha256=sha256 or hash_files(files),
        architecture=arch, parameters=params, context_length=cfg.get("max_position_embeddings"),
    )


def _template_in(path: Path) -> str | None:
    """The default chat template a file holds: chat_template.jinja as it is, chat_template.json's or
    tokenizer_config.json's "chat_template" (a list of named ones: the default)."""
    if not path.is_file():
        return None
    if path.suffix == ".jinja":
        return path.read_text(encoding="utf-8") or None
    try:
        tpl = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if isinstance(tpl, list):
        tpl = next((t.get("template") for t in tpl if isinstance(t, dict) and t.get("name") == "default"), None)
    return tpl if isinstance(tpl, str) and tpl else None


def write_chat_template(folder: Path, source: Path | None = None) -> Path | None:
    """Make sure `folder` has `chat_template.jinja`: its own, else the source folder's template file
    (chat_template.jinja, or chat_template.json as multimodal repos ship it), else tokenizer_config.json's.

    Recent repos keep the template in chat_template.jinja only, which a converter that copies
    tokenizer_config.json alone leaves behind; transformers prefers that file, so it comes first."""
    folder = Path(folder)
    target = folder / "chat_template.jinja"
    if target.is_file():
        return target
    places = [folder / "tokenizer_config.json"]
    if source is not None:
        source = Path(source)
        places = [source / "chat_template.jinja", source / "chat_template.json", *places, source / "tokenizer_config.json"]
    for place in places:
        tpl = _template_in(place)
        if tpl:
            target.write_text(tpl, encoding="utf-8")
            return target
    return None
