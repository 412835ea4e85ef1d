"""The MLX backend: an mlx-lm model folder with mlx-lm's KV cache, our own loop.

Runs the output of `mlx_lm.convert` (config.json, model*.safetensors,
tokenizer files; float or 4/6/8-bit). Weights load through mlx-lm's own
`mlx_lm.utils.load_model` (its architecture remapping, sanitizing and
quantization handling) and the cache comes from `mlx_lm.models`; tokenization
uses edge's tokenizers-based tokenizer. mlx-lm's package and its tokenizer
wrapper import transformers, so the modules edge needs are imported without
them, and neither transformers nor torch is loaded. Logits go to numpy for
the shared loop.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackendUnavailable, BadModelFile, ContextTooLong
from ..formats import MLX
from ..hf_tokenizer import HFTokenizer
from . import base

_HINT = "Re-convert the model with `edge convert MODEL --to mlx`."


@dataclass
class Options(base.BaseOptions):
    """MLX settings."""

    device: str = field(default="default", metadata={"help": "MLX device: default, cpu or gpu."})


def _mlx_lm(module: str):
    """Import `mlx_lm.<module>` without running mlx_lm/__init__ (which imports transformers)."""
    name = f"mlx_lm.{module}"
    if name in sys.modules:
        return sys.modules[name]
    if "mlx_lm" in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("mlx-lm is not installed.", "Install it with: pip install 'edge[mlx]'")
    stub = types.ModuleType("mlx_lm")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["mlx_lm"] = stub
    try:
        return importlib.import_module(name)
    finally:
        # Drop the stub so a later `import mlx_lm` runs the real package; the
        # model modules stay cached under their full names.
        if sys.modules.get("mlx_lm") is stub:
            del sys.modules["mlx_lm"]


def _models(module: str):
    return _mlx_lm(f"models.{module}")


_UTILS = []


def _utils():
    """mlx_lm.utils, whose loader edge uses; its tokenizer wrapper (transformers) is held out.

    The module object is kept here, not in sys.modules, so that a later real
    `import mlx_lm` (the converter, a user) gets a complete one."""
    if "mlx_lm.utils" in sys.modules and "mlx_lm" in sys.modules:
        return sys.modules["mlx_lm.utils"]
    if not _UTILS:
        placeholder = types.ModuleType("mlx_lm.tokenizer_utils")
        placeholder.TokenizerWrapper = placeholder.load = None  # names utils imports; edge never calls them
        inserted = sys.modules.setdefault("mlx_lm.tokenizer_utils", placeholder) is placeholder
        try:
            _UTILS.append(_mlx_lm("utils"))
        finally:
            if inserted:
                del sys.modules["mlx_lm.tokenizer_utils"]
            if "mlx_lm" not in sys.modules:
                sys.modules.pop("mlx_lm.utils", None)
    return _UTILS[0]


def _classes(config: dict):
    """mlx-lm's architecture lookup (with its own remapping table), imported the transformers-free way."""
    remap = getattr(_utils(), "MODEL_REMAPPING", {})
    model_type = config.get("model_type", "")
    model_type = remap.get(model_type, model_type)
    try:
        arch = _models(model_type)
    except ImportError:
        raise BackendUnavailable(f"mlx-lm cannot run '{model_type}' models.",
                                 "Use the gguf or onnx artifact (--backend llama.cpp).") from None
    return arch.Model, arch.ModelArgs


def load_model(folder: Path):
    """Check the folder's config and weight files, then load through mlx_lm.utils.load_model."""
    from safetensors import SafetensorError, safe_open

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadModelFile(f"{folder} has no config.json; it is not an MLX model folder.", _HINT) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadModelFile(f"{folder}/config.json is not valid JSON ({exc}).", _HINT) from None
    files = sorted(glob.glob(str(folder / "model*.safetensors")))
    if not files:
        raise BadModelFile(f"{folder} holds no model*.safetensors.", _HINT)
    for f in files:
        try:
            with safe_open(f, framework="numpy"):
                pass
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadModelFile(f"{f} cannot be read ({str(exc).splitlines()[0][:120]}).", _HINT) from None
    _classes(config)  # an unknown architecture is BackendUnavailable before any weights load
    try:
        return _utils().load_model(folder, get_model_classes=_classes)
    except ValueError as exc:
        raise BadModelFile(f"The weights in {folder} do not match its config.json ({str(exc).splitlines()[0][:120]}).",
                           _HINT) from exc
    except (RuntimeError, OSError, KeyError) as exc:  # mlx raises these with long texts
        raise BadModelFile(f"{folder} cannot be loaded by mlx-lm ({str(exc).splitlines()[0][:120]}).", _HINT) from exc


# mlx-lm model types that attend over the whole context on layers the model limits to a sliding
# window: they compute the model exactly only up to the window, so the context stops there.
FULL_ATTENTION_ONLY = ("gemma2",)


class Backend(base.HFTokens, base.Backend):
    name = "mlx"
    format = MLX
    Options = Options

    def __init__(self, artifact, load=None, options=None):
        super().__init__(artifact, load, options)
        import mlx.core as mx

        self._mx = mx
        if self.options.device != "default":
            dev = {"cpu": mx.cpu, "gpu": mx.gpu}.get(self.options.device)
            if dev is None:
                from ..errors import InvalidOption

                raise InvalidOption(f"Unknown MLX device '{self.options.device}'.", "Choose default, cpu or gpu.")
            mx.set_default_device(dev)
        folder = Path(artifact.main_path)
        if not folder.is_dir():
            raise BadModelFile(f"The MLX model folder {folder} is missing.", _HINT)
        tok_path = artifact.file("tokenizer") or folder / "tokenizer.json"
        self.tok = HFTokenizer(tok_path, folder)
        self.model, cfg = load_model(folder)
        self._cache_mod = _models("cache")
        self.n_vocab = int(cfg.get("vocab_size") or self.tok.vocab_size)
        if cfg.get("model_type") in FULL_ATTENTION_ONLY and cfg.get("sliding_window"):
            window = int(cfg["sliding_window"])
            cfg = {**cfg, "max_position_embeddings": min(int(cfg.get("max_position_embeddings") or window), window)}
        self._adopt_hf_files(self.tok, artifact, folder, cfg, "the model", _HINT)
        self._cache = self._cache_mod.make_prompt_cache(self.model)
        self._len = 0

    def _logits(self, ids: Sequence[int], cache) -> "mx.array":
        mx = self._mx
        return self.model(mx.array([list(ids)], dtype=mx.int32), cache=cache)[0]

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        mx = self._mx
        if self._len + len(ids) > self.n_ctx:
            raise ContextTooLong(f"{self._len + len(ids)} tokens do not fit the context of {self.n_ctx}.",
                                 "Shorten the prompt or raise the context length (--ctx).")
        step = max(1, int(self.load_options.batch_size))
        ids = list(ids)
        for i in range(0, len(ids), step):
            last = self._logits(ids[i:i + step], self._cache)[-1]
        self._len += len(ids)
        return np.asarray(last.astype(mx.float32))

    def _rewind(self, n: int) -> int:
        if n >= self._len:
            return n
        if self._cache_mod.can_trim_prompt_cache(self._cache):
            self._cache_mod.trim_prompt_cache(self._cache, self._len - n)
            self._len = n
        else:
            # Caches that cannot trim (rotating windows) are rebuilt from the kept ids.
            kept = self._cached[:n]
            self._reset_cache()
            if kept:
                self._forward(kept)
        return n

    def _reset_cache(self) -> None:
        self._cache = self._cache_mod.make_prompt_cache(self.model)
        self._len = 0

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position in one batched pass per batch_size tokens."""
        mx = self._mx
        self.reset()
        cache = self._cache_mod.make_prompt_cache(self.model)
        step = max(1, int(self.load_options.batch_size))
        ids = list(ids)
        rows = [np.asarray(self._logits(ids[i:i + step], cache).astype(mx.float32)) for i in range(0, len(ids), step)]
        self.reset()
        return np.concatenate(rows)

    def close(self) -> None:
        self.model = None
        self._cache = None


def self_check() -> str:
    """doctor's check, run in a child process: a tiny model through MLX."""
    import mlx.core as mx
    import mlx.nn as nn

    from . import installed

    # mlx_lm itself imports transformers (seconds); a tiny embedding+linear model
    # exercises the same kernels without it.
    mx.random.seed(0)
    emb, head = nn.Embedding(16, 8), nn.Linear(8, 16)
    probs = mx.softmax(head(emb(mx.array([1, 2, 3]))), axis=-1)
    mx.eval(probs)
    if probs.shape != (3, 16) or abs(probs.sum().item() - 3.0) > 1e-3:
        raise RuntimeError(f"wrong result from a tiny model: shape {probs.shape}")
    lm = "mlx-lm found" if installed("mlx") else "mlx-lm missing"
    return f"ran a tiny model on {mx.default_device()} ({lm})"
