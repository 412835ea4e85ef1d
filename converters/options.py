"""Options and results of `edge convert`, and the quant tables the converter uses.

Kept free of heavy imports: the CLI builds its options from these dataclasses.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edge.errors import InvalidOption
from edge.formats import DEFAULT_QUANTS, FORMATS, ONNX_GRAPHS, QUANTS, check_quant


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


# Quants from least to most precise, per format: a warning below the quality
# threshold names the next one up.
PRECISION_ORDER = {
    "gguf": ("q2_k", "q3_k_m", "q4_0", "q4_1", "q4_k_s", "q4_k_m", "q5_0", "q5_1", "q5_k_s", "q5_k_m",
             "q6_k", "q8_0", "bf16", "f16", "f32"),
    "onnx": ("int4", "int8", "fp16", "fp32"),
    "mlx": ("4bit", "6bit", "8bit", "bf16", "fp16"),
}

# Libraries each format needs, and the extra that installs them.
EXTRAS = {
    "source": (("torch", "convert"), ("transformers", "convert"), ("safetensors", "convert")),
    "gguf": (("torch", "convert"), ("gguf", "convert"), ("conversion", "convert"), ("llama_cpp", "base")),
    "onnx": (("optimum.exporters.onnx", "convert"), ("onnx", "onnx"), ("onnxruntime", "onnx")),
    "mlx": (("mlx_lm", "mlx"),),
}


def higher_precision(fmt: str, quant: str) -> str | None:
    """The next more precise quant of `fmt`, or None when `quant` is the most precise."""
    order = PRECISION_ORDER[fmt]
    i = order.index(quant) if quant in order else -1
    return order[i + 1] if 0 <= i < len(order) - 1 else None


def parse_targets(to) -> tuple[str, ...]:
    """'gguf,onnx' or a sequence -> validated format names, in the given order."""
    items = to.split(",") if isinstance(to, str) else list(to or FORMATS)
    out = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item not in FORMATS:
            raise InvalidOption(f"Unknown target format '{item}'.", f"Choose from: {', '.join(FORMATS)}.")
        if item not in out:
            out.append(item)
    if not out:
        raise InvalidOption("No target format given.", f"Pass --to with some of: {', '.join(FORMATS)}.")
    return tuple(out)


def parse_quants(spec, targets: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """'gguf=q4_k_m,onnx=int8' (repeat a format for several quants) -> {format: quants}.

    A bare quant ('q4_k_m') applies to the one target format that knows it.
    Formats not named get their DEFAULT_QUANTS.
    """
    chosen: dict[str, list[str]] = {}
    if isinstance(spec, dict):
        pairs = [(f, q) for f, qs in spec.items() for q in ([qs] if isinstance(qs, str) else qs)]
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec or ())
        pairs = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            fmt, sep, q = item.partition("=")
            if not sep:
                q = fmt
                owners = [f for f in targets if _knows(f, q)]
                if len(owners) != 1:
                    raise InvalidOption(f"Cannot tell which format quant '{q}' is for.",
                                        "Write it as FORMAT=QUANT, e.g. gguf=q4_k_m.")
                fmt = owners[0]
            pairs.append((fmt.strip().lower(), q.strip()))
    for fmt, q in pairs:
        if fmt not in targets:
            raise InvalidOption(f"--quant names '{fmt}', which is not a target.",
                                f"Add it to --to or drop it from --quant (targets: {', '.join(targets)}).")
        q = check_quant(fmt, q)
        if q not in chosen.setdefault(fmt, []):
            chosen[fmt].append(q)
    return {f: tuple(chosen.get(f) or DEFAULT_QUANTS[f]) for f in targets}


def _knows(fmt: str, quant: str) -> bool:
    try:
        check_quant(fmt, quant)
        return True
    except InvalidOption:
        return False


@dataclass
class ConvertOptions:
    """What `edge convert` does; the CLI forwards its flags here unchanged."""

    source: Optional[str] = _opt(None, "Hugging Face folder, GGUF file, or model name (default: the embedded SmolLM2-135M-Instruct).")
    to: tuple = _opt(FORMATS, "Target formats, e.g. gguf,onnx,mlx.")
    quant: object = _opt(None, "Quant per format, e.g. gguf=q4_k_m,onnx=int8,mlx=8bit; repeat a format for several.")
    name: Optional[str] = _opt(None, "Model name in the store (default: from the source).")
    force: bool = _opt(False, "Replace artifacts that already exist.")
    strict: bool = _opt(False, "Fail when an artifact's top-1 agreement is below the threshold.")
    threshold: float = _opt(0.90, "Minimum top-1 next-token agreement with the source model.")
    allow_below_threshold: bool = _opt(False, "Let an artifact below the threshold (or not checked) become a default "
                                              "and enter the tune cache.")
    progress: bool = _opt(True, "Show progress bars on stderr.")
    mlx_group_size: int = _opt(64, "Group size of MLX quantization.")
    onnx_block_size: int = _opt(32, "Block size of ONNX int8/int4 (MatMulNBits) quantization.")
    onnx_graph: str = _opt("fused", "ONNX graph: fused (onnxruntime's fused kernels; llama-family models, "
                                    "else optimum) or optimum (the traced export).")
    quality: bool = _opt(True, "Run the quality check (perplexity, top-1 agreement) on each artifact.")

    def __post_init__(self):
        self.to = parse_targets(self.to)
        self.quants = parse_quants(self.quant, self.to)
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidOption(f"threshold must be between 0 and 1 (got {self.threshold}).")
        if self.mlx_group_size not in (32, 64, 128):
            raise InvalidOption(f"mlx_group_size must be 32, 64 or 128 (got {self.mlx_group_size}).")
        if self.onnx_block_size < 16 or self.onnx_block_size & (self.onnx_block_size - 1):
            raise InvalidOption(f"onnx_block_size must be a power of two >= 16 (got {self.onnx_block_size}).")
        if self.onnx_graph not in ONNX_GRAPHS:
            raise InvalidOption(f"Unknown ONNX graph '{self.onnx_graph}'.", f"Choose one of: {', '.join(ONNX_GRAPHS)}.")


@dataclass
class Result:
    """One artifact written by the converter."""

    model: str
    format: str
    quant: str
    path: Path
    size: int
    seconds: float
    quality: Optional[dict] = None
    warning: Optional[str] = None
    status: str = "converted"   # or "present": already converted from the same source, left as it was

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d
