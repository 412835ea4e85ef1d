"""Will a model fit a device, and how fast will it decode: answered before any download.

A model is known by its parameter count and shape (catalog entry or config.json).
For each candidate (backend, quant) that the device's selection rule allows,
memory is weights (parameters x bits per weight) + KV cache at the chosen
context + runtime overhead, against the available RAM less selection's margin
(the same figures `edge.select` uses for artifacts that exist). Decode speed is
the device's memory bandwidth over the bytes read per token (every weight once,
plus the whole KV cache at that context), times an efficiency factor: the one
`edge tune` measured on this machine, else the assumed one in models/rules.json.
`plan` also picks the quant a pull would make, and says why.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

from . import backends, kvcache
from .device import DeviceInfo
from .formats import BITS_PER_WEIGHT

GB = 1e9


def settings() -> dict:
    from .select import rules

    return rules()["estimate"]


@dataclass
class ModelFacts:
    """What the estimate needs to know about a model; shape fields are None when unknown."""

    name: str
    parameters: int
    context_length: int | None = None
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    window: kvcache.Window = field(default_factory=kvcache.Window)

    @classmethod
    def from_catalog(cls, name: str, entry: dict) -> "ModelFacts":
        shape = entry.get("shape") or {}
        head_dim = shape.get("head_dim")
        if not head_dim and shape.get("hidden") and shape.get("heads"):
            head_dim = shape["hidden"] // shape["heads"]
        return cls(name, int(entry["parameters"]), entry.get("context_length"), shape.get("layers"),
                   shape.get("kv_heads") or shape.get("heads"), head_dim,
                   kvcache.from_shape(str(entry.get("architecture", "")), shape))

    @classmethod
    def from_config(cls, name: str, cfg: dict, parameters: int) -> "ModelFacts":
        cfg = cfg.get("text_config") or cfg
        heads = cfg.get("num_attention_heads")
        head_dim = cfg.get("head_dim") or (cfg.get("hidden_size", 0) // heads if heads else None)
        return cls(name, int(parameters), cfg.get("max_position_embeddings"), cfg.get("num_hidden_layers"),
                   cfg.get("num_key_value_heads") or heads, head_dim or None, kvcache.from_config(cfg))

    def kv_per_token(self, backend: str) -> tuple[int, str]:
        """KV-cache bytes per token of context on `backend`, and where the shape came from."""
        from .select import rules

        mem = rules()["memory"]
        value = mem["kv_bytes_per_value"].get(backend, 2)
        if self.layers and self.kv_heads and self.head_dim:
            return 2 * self.layers * self.kv_heads * self.head_dim * value, "model shape"
        est = mem["kv_bytes_per_token_per_sqrt_param"] * math.sqrt(self.parameters) * value / 2
        return int(est), "estimated from the parameter count"


@dataclass
class Estimate:
    """One candidate: memory it needs and the decode speed it would reach."""

    backend: str
    format: str
    quant: str
    weights: int
    kv_cache: int
    overhead: int
    available: int
    bytes_per_token: int
    tok_s: float | None
    bandwidth_gbs: float | None = None

    @property
    def need(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    @property
    def fits(self) -> bool:
        return self.need <= self.available

    def to_dict(self) -> dict:
        return {"backend": self.backend, "format": self.format, "quant": self.quant,
                "memory": {"need": self.need, "weights": self.weights, "kv_cache": self.kv_cache,
                           "overhead": self.overhead, "available": self.available, "fits": self.fits},
                "bytes_per_token": self.bytes_per_token, "bandwidth_gbs": self.bandwidth_gbs,
                "decode_tok_s": None if self.tok_s is None else round(self.tok_s, 1)}


@dataclass
class Plan:
    """Every candidate of a model on a device, the pick and the reasons."""

    model: str
    device: str
    n_ctx: int
    bandwidth_gbs: float | None
    bandwidth_source: str
    efficiency: dict = field(default_factory=dict)    # backend -> (value, source)
    rows: list[Estimate] = field(default_factory=list)
    pick: Estimate | None = None
    why: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "device": self.device, "n_ctx": self.n_ctx,
                "bandwidth_gbs": self.bandwidth_gbs, "bandwidth_source": self.bandwidth_source,
                "efficiency": {b: {"value": round(v, 3), "source": s} for b, (v, s) in self.efficiency.items()},
                "candidates": [r.to_dict() for r in self.rows],
                "pick": self.pick.to_dict() if self.pick else None, "why": self.why}


# -- bandwidth and efficiency ------------------------------------------------------------
@lru_cache(maxsize=1)
def measure_bandwidth(seconds: float = 0.25, mib: int = 64) -> float:
    """This machine's memory bandwidth in GB/s: the best of repeated numpy copies of a buffer
    larger than the CPU caches (bytes read + bytes written per second). Bounded by `seconds`."""
    import numpy as np

    src = np.ones((mib << 20) // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page first, so page faults are not timed
    best, end = 0.0, time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        np.copyto(dst, src)
        dt = time.perf_counter() - t0
        best = max(best, 2 * src.nbytes / dt)
        if time.perf_counter() > end:
            return best / GB


def bandwidth(device: DeviceInfo) -> tuple[float | None, str]:
    """(GB/s, source) of the device: the profile's figure, or a measurement on this machine."""
    if device.memory_bandwidth_gbs:
        return float(device.memory_bandwidth_gbs), device.bandwidth_source or "device profile"
    if device.name == "this device":
        return round(measure_bandwidth(), 1), "measured on this machine (numpy copy)"
    return None, "unknown: the profile gives no memory_bandwidth_gbs"


def efficiencies() -> dict[str, tuple[float, str]]:
    """backend -> (efficiency, source): measured by `edge tune` on this machine, else assumed."""
    out = {b: (float(v), "assumed; `edge tune` measures it here") for b, v in settings()["efficiency"].items()}
    try:
        from .device import probe
        from .tune_cache import efficiencies as measured

        lo, hi = settings()["plausible_efficiency"]
        for b, m in measured(probe().fingerprint).items():
            value = float(m["value"])
            if lo <= value <= hi:
                out[b] = (value, f"measured by `edge tune` on this machine ({m['model']}, {m['date']})")
            elif b in out:
                # A decode slowed by other work on the machine would make every estimate far too low.
                out[b] = (out[b][0], f"assumed; the {value:.3f} `edge tune` measured on {m['date']} is outside "
                                     f"{lo}-{hi} (a busy machine?): run `edge tune --retune`")
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return out


def efficiency_of(tok_s: float, bytes_per_token: int, bandwidth_gbs: float) -> float:
    """The share of the memory bandwidth a measured decode speed used."""
    return tok_s * bytes_per_token / (bandwidth_gbs * GB)


# -- the plan ---------------------------------------------------------------------------------
def _gpu_bandwidth(device: DeviceInfo, backend: str, need: int) -> float | None:
    """A discrete GPU's bandwidth when llama.cpp offloads every layer to it and the model fits there."""
    from .select import rules

    if backend != "llama.cpp" or not device.gpu_offload or not device.nvidia:
        return None
    gpu = device.nvidia[0]
    if not gpu.get("memory_bandwidth_gbs") or need > device.vram_total * (1 - rules()["memory"]["margin"]):
        return None
    return float(gpu["memory_bandwidth_gbs"])


def estimate(facts: ModelFacts, backend: str, quant: str, n_ctx: int, device: DeviceInfo,
             bw: float | None, eff: float) -> Estimate:
    from .select import rules

    mem = rules()["memory"]
    fmt = backends.REGISTRY[backend].format
    file_bytes = int(facts.parameters * BITS_PER_WEIGHT[quant] / 8)
    per_token, _ = facts.kv_per_token(backend)
    kv = int(per_token * facts.window.tokens(n_ctx, backend))
    per_step = file_bytes + kv
    gpu_bw = _gpu_bandwidth(device, backend, file_bytes + kv)
    use_bw = gpu_bw or bw
    tok_s = use_bw * GB / per_step * eff if use_bw else None
    return Estimate(backend, fmt, quant, int(file_bytes * mem["weights_factor"].get(backend, 1.0)), kv,
                    int(mem["overhead_mib"].get(backend, 128)) << 20, int(device.ram_available * (1 - mem["margin"])),
                    per_step, tok_s, use_bw)


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def plan(facts: ModelFacts, device: DeviceInfo, n_ctx: int | None = None, formats=None, quants=None) -> Plan:
    """Estimate every candidate of `facts` on `device` and pick the quant a pull would make.

    `formats` limits the formats, `quants` ({format: [quant]}) replaces the candidate quants."""
    from .select import _quant_order, match_rule

    n_ctx = min(n_ctx or 2048, facts.context_length or n_ctx or 2048)
    bw, bw_source = bandwidth(device)
    effs = efficiencies()
    rule = match_rule(device)
    cand = settings()["candidate_quants"]
    out = Plan(facts.name, device.name, n_ctx, bw, bw_source)
    for b in rule["backends"]:
        fmt = backends.REGISTRY[b].format
        if not device.installed(b) or (formats and fmt not in formats):
            continue
        out.efficiency[b] = effs.get(b, (0.5, "assumed"))
        for q in (quants or {}).get(fmt) or cand[fmt]:
            out.rows.append(estimate(facts, b, q, n_ctx, device, bw, out.efficiency[b][0]))
    _pick(out, facts, rule, _quant_order)
    return out


def _pick(out: Plan, facts: ModelFacts, rule: dict, quant_order) -> None:
    s = settings()
    if not out.rows:
        out.why.append(f"no backend that rule '{rule['name']}' allows is installed on {out.device}")
        return
    fitting = [r for r in out.rows if r.fits]
    if not fitting:
        small = min(out.rows, key=lambda r: r.need)
        out.why.append(f"nothing fits {out.device}: the smallest, {small.format} {small.quant}, needs {_gb(small.need)} "
                       f"({_gb(small.weights)} weights + {_gb(small.kv_cache)} KV cache for {out.n_ctx} tokens + "
                       f"{_gb(small.overhead)} runtime), {_gb(small.available)} usable")
        return
    backend = next(r.backend for r in out.rows if r.fits)  # rows are in the rule's backend order
    mine = [r for r in fitting if r.backend == backend]
    eight = s["eight_bit"].get(mine[0].format)
    small_model = facts.parameters < s["prefer_8bit_below_parameters"]
    best = next((r for r in mine if small_model and r.quant == eight), None)
    if best is not None:
        reason = (f"{best.quant}: under {s['prefer_8bit_below_parameters'] / 1e6:.0f}M parameters 8-bit is preferred "
                  f"when it fits (4-bit costs small models much more agreement)")
    else:
        order = quant_order(rule, mine[0].format)
        best = min(mine, key=lambda r: order.index(r.quant) if r.quant in order else len(order))
        reason = f"{best.quant}: first of rule '{rule['name']}'s quant order that fits"
    out.pick = best
    out.why.append(f"rule '{rule['name']}' for {out.device}: {rule['why']}")
    out.why.append(reason)
    note = facts.window.note(out.n_ctx, best.backend)
    out.why.append(f"memory: needs {_gb(best.need)} ({_gb(best.weights)} weights + {_gb(best.kv_cache)} KV cache for "
                   f"{out.n_ctx} tokens{f' ({note})' if note else ''} + {_gb(best.overhead)} runtime), "
                   f"{_gb(best.available)} usable")
    if best.tok_s is not None:
        eff, src = out.efficiency[best.backend]
        out.why.append(f"speed: about {best.tok_s:.1f} tok/s = {best.bandwidth_gbs:g} GB/s / "
                       f"{best.bytes_per_token / 1e6:.0f} MB read per token x efficiency {eff:.2f} ({src})")


# -- models known before download ----------------------------------------------------------
def catalog_facts(name: str) -> ModelFacts | None:
    """ModelFacts of a catalog model, or None when the catalog does not know it or its size."""
    from edge.models import catalog

    entry = catalog().get(name)
    if not entry or not entry.get("parameters"):
        return None
    return ModelFacts.from_catalog(name, entry)


def recommendation(name: str, profile: str, n_ctx: int | None = None) -> str | None:
    """'format=quant' the estimate picks for a catalog model on a profile, or None when nothing fits."""
    from .device import load_profile

    facts = catalog_facts(name)
    if facts is None:
        return None
    p = plan(facts, load_profile(profile), n_ctx)
    return f"{p.pick.format}={p.pick.quant}" if p.pick else None
