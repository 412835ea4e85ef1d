"""Sliding-window KV cache: how many tokens of KV a model's layers hold at a given context.

Gemma 2 and 3 mix local layers, which attend only to the last `window` tokens, with global
ones. llama.cpp keeps only the window plus one micro-batch of cells for the local layers
(its tools' default, and edge's), so at long contexts the cache is far smaller than
layers x context. Other backends keep the whole context for every layer.
"""
from __future__ import annotations

from dataclasses import dataclass

# Layers per global one when a file gives only the window: the layouts llama.cpp and
# transformers use for these families (Gemma 2 alternates; Gemma 3 has 5 local per global).
PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6}
# Backends whose cache holds only the window for local layers.
WINDOWED = ("llama.cpp",)
UBATCH = 512   # cells llama.cpp adds to the window for one micro-batch
PAD = 256      # llama.cpp rounds the window cache up to this many cells


@dataclass(frozen=True)
class Window:
    size: int = 0    # tokens a local layer attends to (0: no sliding window)
    local: int = 0   # how many of the layers are local
    layers: int = 0

    def tokens(self, n_ctx: int, backend: str) -> float:
        """KV tokens held per layer, on average over the layers, at a context of n_ctx."""
        if not (self.size and self.local and self.layers) or backend not in WINDOWED:
            return float(n_ctx)
        cells = min(n_ctx, -(-(self.size + UBATCH) // PAD) * PAD)
        return ((self.layers - self.local) * n_ctx + self.local * cells) / self.layers

    def note(self, n_ctx: int, backend: str) -> str:
        """How the window shrinks the cache at this context on this backend ("" when it does not)."""
        if self.tokens(n_ctx, backend) >= n_ctx:
            return ""
        return f"{self.local} of {self.layers} layers keep a {self.size}-token window"


def _local(family: str, layers: int, window, pattern=None, layer_types=None) -> Window:
    if not isinstance(window, int) or window <= 0 or not isinstance(layers, int) or layers <= 0:
        return Window()
    if isinstance(layer_types, list) and layer_types:
        return Window(window, sum(t == "sliding_attention" for t in layer_types), layers)
    every = pattern if isinstance(pattern, int) and pattern > 0 else PATTERN.get(family)
    if not every:
        return Window()
    return Window(window, layers - layers // every, layers)


def from_config(cfg: dict) -> Window:
    """The window of a Hugging Face config.json (its text part for multimodal configs)."""
    cfg = cfg.get("text_config") or cfg
    return _local(str(cfg.get("model_type", "")), cfg.get("num_hidden_layers"), cfg.get("sliding_window"),
                  cfg.get("sliding_window_pattern"), cfg.get("layer_types"))


def from_gguf(meta: dict, arch: str) -> Window:
    """The window of a GGUF file from its header metadata."""
    return _local(arch, meta.get(f"{arch}.block_count"), meta.get(f"{arch}.attention.sliding_window"))


def from_shape(family: str, shape: dict) -> Window:
    """The window of a catalog entry's shape (`sliding_window`, and the family's layout)."""
    return _local(family, shape.get("layers"), shape.get("sliding_window"), shape.get("sliding_window_pattern"))
