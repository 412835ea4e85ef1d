"""Typed, documented options shared by the library, the CLI and the server.

Each field carries its help text in `metadata["help"]`; the CLI builds its
options from these so the two never drift apart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, asdict
from typing import Callable, Optional, Sequence

import numpy as np

# A logits hook receives the ids generated so far and the next-token logits
# (float32, writable, vocab-sized) and masks them in place, e.g. by setting
# forbidden tokens to -inf. Constrained decoding plugs in here.
LogitsHook = Callable[[Sequence[int], np.ndarray], None]


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


def check_names(given, valid, what: str) -> None:
    """Raise InvalidOption for any name in `given` not in `valid`, naming the nearest valid one."""
    import difflib

    from .errors import InvalidOption

    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    name = unknown[0]
    near = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    hint = f"Did you mean '{near[0]}'?" if near else f"Valid {what}s: {', '.join(sorted(valid))}."
    raise InvalidOption(f"Unknown {what} '{name}'." if len(unknown) == 1
                        else f"Unknown {what}s: {', '.join(unknown)}.", hint)


@dataclass
class GenerationOptions:
    """How to sample a completion."""

    max_tokens: int = _opt(256, "Maximum number of tokens to generate.")
    temperature: float = _opt(0.7, "Sampling temperature; 0 means greedy decoding.")
    top_p: float = _opt(0.95, "Nucleus sampling: keep the smallest set of tokens whose probability sums to this.")
    top_k: int = _opt(40, "Keep only the k most likely tokens (0 disables).")
    repeat_penalty: float = _opt(1.0, "Penalty for tokens already generated (1.0 disables).")
    seed: Optional[int] = _opt(None, "Random seed for reproducible sampling.")
    stop: list[str] = _opt(None, "Strings that end generation; they are not included in the output.")
    ignore_eos: bool = _opt(False, "Keep generating past the end-of-sequence token (for benchmarks).")
    logits_hook: Optional[LogitsHook] = _opt(None, "Called with (ids, logits) before each sampling step to mask logits.")

    def __post_init__(self):
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        else:
            self.stop = list(self.stop)
        from .errors import InvalidOption

        if self.max_tokens is None or self.max_tokens < 1:
            raise InvalidOption(f"max_tokens must be at least 1 (got {self.max_tokens}).")
        if self.temperature < 0:
            raise InvalidOption(f"temperature must be >= 0 (got {self.temperature}).")
        if not 0 < self.top_p <= 1:
            raise InvalidOption(f"top_p must be in (0, 1] (got {self.top_p}).")
        if self.top_k < 0:
            raise InvalidOption(f"top_k must be >= 0 (got {self.top_k}).")

    @classmethod
    def from_kwargs(cls, **kw) -> "GenerationOptions":
        """Build from keyword arguments, ignoring None values; an unknown name is an error."""
        names = {f.name for f in fields(cls)}
        check_names(kw, names, "generation option")
        return cls(**{k: v for k, v in kw.items() if v is not None})


def default_threads() -> int:
    """Physical cores: llama.cpp decodes fastest with one thread per physical core."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover
        n = None
    return max(1, n or os.cpu_count() or 1)


@dataclass
class LoadOptions:
    """How to load a model; shared by every backend."""

    n_ctx: int = _opt(2048, "Context length in tokens (prompt plus completion).")
    threads: Optional[int] = _opt(None, "CPU threads; default: physical cores.")
    gpu_layers: int = _opt(0, "Layers to offload to a GPU (llama.cpp; -1 for all).")
    verify: bool = _opt(False, "Hash every file again at load, even when unchanged since it was last verified.")
    batch_size: int = _opt(512, "Prompt tokens processed per batch.")
    parallel: int = _opt(1, "Sequences decoded together, each with its own n_ctx (llama.cpp; the server's slots); "
                            "0: the device's default.")
    rpc: Optional[list[str]] = _opt(None, "RPC workers (`edge worker`) to split the model across: HOST:PORT,... (llama.cpp).")
    rpc_timeout: float = _opt(120.0, "Seconds one step may wait for the RPC workers before they count as gone.")

    def __post_init__(self):
        if self.threads is None:
            self.threads = default_threads()
        if self.parallel is None or self.parallel < 0:
            from .errors import InvalidOption

            raise InvalidOption(f"parallel must be 0 (the device's default) or more (got {self.parallel}).")
        if self.rpc is not None:
            from .rpc import parse_endpoints

            self.rpc = parse_endpoints(self.rpc) or None

    def as_dict(self) -> dict:
        return asdict(self)
