"""Choosing the backend and artifact that run a model on a device, and saying why.

`choose` filters every (backend, artifact) pair of a model: the backend must
be installed on the device, the artifact's context must hold the request,
and weights + KV cache + runtime overhead must fit the available memory with
a margin. Survivors are ranked by `edge tune` measurements first, then by the
first rule of `models/rules.json` that matches the device. The `Choice`
carries the winner, its thread count and GPU layers, the reasons, and every
rejected candidate with why. Selection knows backends only through the
registry table; it never measures (that is `edge tune`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import backends, kvcache
from . import manifest as mf
from .config import LoadOptions
from .device import DeviceInfo, load_profile, probe
from .errors import BackendUnavailable, BadModelFile, ContextTooLong, DoesNotFit, ModelNotFound
from .formats import BITS_PER_WEIGHT, QUANTS
from .store import Artifact, ModelRef

GB = 1e9

# Why a candidate was turned down; the worst kind present explains a failure.
NOT_INSTALLED, NO_ARTIFACT, CONTEXT, MEMORY, RANKED, MEASURED, NO_RPC, QUALITY = (
    "not installed", "no artifact", "context too long", "does not fit memory", "ranked lower", "measured slower",
    "cannot use RPC workers", "below the quality gate")
# Order of the rejected list: the closest contenders first.
KIND_ORDER = (MEASURED, RANKED, QUALITY, MEMORY, CONTEXT, NOT_INSTALLED, NO_RPC, NO_ARTIFACT)


def rules() -> dict:
    """The rules table (models/rules.json)."""
    from edge import models
    return models.rules()


def match_rule(device: DeviceInfo) -> dict:
    """The first rule whose conditions all hold for the device."""
    facts = device.facts()
    for rule in rules()["rules"]:
        if all(facts.get(k) in (v if isinstance(v, list) else [v]) for k, v in rule["when"].items()):
            return rule
    raise RuntimeError("models/rules.json needs a last rule with an empty 'when'")


# -- memory --------------------------------------------------------------------------
@dataclass
class Fit:
    """Memory a candidate needs against what the device has, in bytes."""

    weights: int
    kv_cache: int
    overhead: int
    available: int      # usable RAM after the margin
    n_ctx: int
    kv_source: str      # where the KV-cache shape came from
    kv_per_token: int = 0
    remote: int = 0     # of `available`, what RPC workers lend after the margin
    sequences: int = 1  # sequences decoded together (the server's slots), each with n_ctx tokens of KV
    window: str = ""    # how a sliding window shrinks the cache, when it does

    @property
    def need(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    @property
    def ok(self) -> bool:
        return self.need <= self.available

    def describe(self) -> str:
        remote = f" ({gb(self.remote)} of it on RPC workers)" if self.remote else ""
        tokens = f"{self.sequences} x {self.n_ctx}" if self.sequences > 1 else f"{self.n_ctx}"
        tokens += f" ({self.window})" if self.window else ""
        return (f"needs {gb(self.need)} ({gb(self.weights)} weights + {gb(self.kv_cache)} KV cache for "
                f"{tokens} tokens + {gb(self.overhead)} runtime), {gb(self.available)} usable{remote}")

    def to_dict(self) -> dict:
        return {"need": self.need, "weights": self.weights, "kv_cache": self.kv_cache, "overhead": self.overhead,
                "available": self.available, "remote": self.remote, "n_ctx": self.n_ctx,
                "sequences": self.sequences, "kv_source": self.kv_source, "ok": self.ok}


def gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def _config_layout(cfg: dict) -> tuple[tuple[int, int, int] | None, kvcache.Window]:
    try:
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        shape = cfg["num_hidden_layers"], cfg.get("num_key_value_heads") or heads, head_dim
    except (KeyError, TypeError, ZeroDivisionError):
        shape = None
    try:
        return shape, kvcache.from_config(cfg)
    except (TypeError, AttributeError):
        return shape, kvcache.Window()


def _gguf_layout(path: Path) -> tuple[tuple[int, int, int] | None, kvcache.Window]:
    from .gguf_header import read_info

    try:
        info = read_info(path)
    except BadModelFile:
        return None, kvcache.Window()
    m, a = info.metadata, info.architecture
    window = kvcache.from_gguf(m, a)
    layers, heads, kv = m.get(f"{a}.block_count"), m.get(f"{a}.attention.head_count"), m.get(f"{a}.attention.head_count_kv")
    kv = kv if isinstance(kv, int) else heads
    if not isinstance(layers, int) or not isinstance(heads, int) or not heads:
        return None, window
    head_dim = m.get(f"{a}.attention.key_length") or (m.get(f"{a}.embedding_length") or 0) // heads
    return ((layers, kv, head_dim) if head_dim else None), window


@lru_cache(maxsize=64)
def _file_layout(path: str, stamp: tuple[int, int]) -> tuple[tuple[int, int, int] | None, kvcache.Window]:
    """(layers, KV heads, head dim) and sliding window of a GGUF file or a config.json, read
    once per version of the file (`stamp`): selection asks for every candidate and backend."""
    if not path.endswith(".json"):
        return _gguf_layout(Path(path))
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None, kvcache.Window()
    return _config_layout(cfg) if isinstance(cfg, dict) else (None, kvcache.Window())


def _sources(art: Artifact) -> list[tuple[Path, str]]:
    """Where an artifact's KV-cache layout can be read, best first, with the name of each."""
    out = [(Path(art.main_path), "GGUF header")] if art.format == "gguf" else []
    for folder in (art.folder, art.main_path if art.main_path.is_dir() else art.main_path.parent):
        if folder is not None:
            out.append((Path(folder) / "config.json", "config.json"))
    return out


def _layout(path: Path) -> tuple[tuple[int, int, int] | None, kvcache.Window] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _file_layout(str(path), (st.st_mtime_ns, st.st_size)) if path.is_file() else None


def kv_window(art: Artifact) -> kvcache.Window:
    """The sliding window of a model's local layers, from the GGUF header or config.json."""
    for path, _ in _sources(art):
        found = _layout(path)
        if found is not None:
            return found[1]
    return kvcache.Window()


def model_shape(art: Artifact) -> tuple[tuple[int, int, int] | None, str]:
    """(layers, KV heads, head dim) from the GGUF header or config.json, and where it came from."""
    for path, label in _sources(art):
        found = _layout(path)
        if found is not None and found[0]:
            return found[0], label
    return None, ""


def parameters(art: Artifact) -> int:
    """The manifest's parameter count, else one estimated from the file size and quant."""
    if art.parameters:
        return int(art.parameters)
    bits = BITS_PER_WEIGHT.get(art.quant, 16)
    return int(art.size * 8 / bits)


def kv_per_token(art: Artifact, backend: str) -> tuple[int, str]:
    """KV-cache bytes per token of context for this artifact on this backend."""
    mem = rules()["memory"]
    value = mem["kv_bytes_per_value"].get(backend, 2)
    shape, source = model_shape(art)
    if shape:
        layers, kv_heads, head_dim = shape
        return 2 * layers * kv_heads * head_dim * value, source
    # No shape: small models of this family need about c * sqrt(parameters) bytes per token at fp16.
    est = mem["kv_bytes_per_token_per_sqrt_param"] * math.sqrt(parameters(art)) * value / 2
    return int(est), "estimated from the parameter count"


def fit(art: Artifact, backend: str, n_ctx: int, device: DeviceInfo, workers=(), sequences: int = 1) -> Fit:
    """Memory `art` needs on `backend` with `sequences` contexts of `n_ctx` tokens (a backend that
    does not batch serves one at a time, so one); `workers` (edge.rpc.WorkerInfo) add the memory they lend."""
    sequences = sequences if backends.REGISTRY[backend].batches else 1
    window = kv_window(art)
    mem = rules()["memory"]
    per_token, source = kv_per_token(art, backend)
    size = art.size or int(parameters(art) * BITS_PER_WEIGHT.get(art.quant, 16) / 8)
    remote = sum(int(w.free * (1 - mem["margin"])) for w in workers)
    return Fit(
        weights=int(size * mem["weights_factor"].get(backend, 1.0)),
        kv_cache=int(per_token * window.tokens(n_ctx, backend)) * sequences,
        overhead=int(mem["overhead_mib"].get(backend, 128)) << 20,
        available=int(device.ram_available * (1 - mem["margin"])) + remote,
        n_ctx=n_ctx, kv_source=source, kv_per_token=per_token, remote=remote, sequences=sequences,
        window=window.note(n_ctx, backend),
    )


# -- splitting across RPC workers ----------------------------------------------------------
def split_layers(art: Artifact, f: Fit, workers) -> list[dict]:
    """Layers per device, this device first, in proportion to the memory each one lends.

    llama.cpp keeps the first layers and the input embeddings here and puts the
    rest in order on the workers, the output layer on the last one; each layer
    costs an equal share of weights + KV cache. Raises DoesNotFit when the
    layers cannot be placed although the total fits.
    """
    shape, _ = model_shape(art)
    if not shape:
        raise DoesNotFit(f"The layer count of {art.label} is unknown, so it cannot be split across workers.",
                         "Drop --rpc.")
    n = shape[0]
    per_layer = (f.weights + f.kv_cache) / (n + 1)
    # This device also holds the input embeddings (one layer's share) and the runtime.
    usable = [f.available - f.remote] + [int(w.free * (1 - rules()["memory"]["margin"])) for w in workers]
    fixed = [f.overhead + per_layer] + [0] * len(workers)
    fixed[-1] += per_layer  # the output layer
    caps = [max(0, u - x) for u, x in zip(usable, fixed)]
    most = [int(c // per_layer) if per_layer else n for c in caps]
    total = sum(caps) or 1
    share = [n * c / total for c in caps]
    layers = [min(int(x), m) for x, m in zip(share, most)]
    order = sorted(range(len(caps)), key=lambda i: -(share[i] - int(share[i])))
    while sum(layers) < n:
        room = [i for i in order if layers[i] < most[i]]
        if not room:
            raise DoesNotFit(f"{art.label} needs about {gb(per_layer)} per layer and the devices cannot hold all "
                             f"{n} layers between them.", "Add a worker, lend more memory (--mem), or use a smaller quant.")
        layers[room[0]] += 1
        order = order[1:] + order[:1]
    while sum(layers) > n:
        layers[max(range(len(layers)), key=lambda i: layers[i])] -= 1
    out, first = [], 0
    for i, k in enumerate(layers):
        w = workers[i - 1] if i else None
        out.append({"name": f"RPC{i - 1}" if w else "local", "endpoint": w.endpoint if w else None,
                    "layers": [first, first + k - 1] if k else [], "n_layers": k,
                    "output": i == len(layers) - 1 and bool(workers),
                    "usable": int(usable[i]), "need": int(k * per_layer + fixed[i])})
        first += k
    return out


def describe_split(split: list[dict]) -> str:
    parts = []
    for d in split:
        where = "this device" if d["endpoint"] is None else d["endpoint"]
        held = f"layers {d['layers'][0]}-{d['layers'][1]}" if d["n_layers"] else "no layers"
        parts.append(f"{where} {held}" + (" + output" if d["output"] else ""))
    return "split: " + ", ".join(parts)


# -- the choice -------------------------------------------------------------------------
@dataclass
class Candidate:
    backend: str
    artifact: Artifact | None
    ok: bool = True
    reason: str = ""
    kind: str = ""
    fit: Fit | None = None
    tok_s: float | None = None

    @property
    def label(self) -> str:
        return self.artifact.label if self.artifact else "-"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "artifact": self.artifact.label if self.artifact else None,
                "kind": self.kind, "reason": self.reason, "decode_tok_s": self.tok_s,
                "memory": self.fit.to_dict() if self.fit else None}


@dataclass
class Choice:
    backend: str
    artifact: Artifact
    reasons: list[str] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    threads: int = 1
    gpu_layers: int = 0
    rule: str = ""
    device: str = "this device"
    fit: Fit | None = None
    measured: bool = False
    export_only: bool = False
    split: list[dict] | None = None  # with RPC workers: each device and the layers it holds
    parallel: int = 1

    def to_dict(self) -> dict:
        return {
            "backend": self.backend, "artifact": self.artifact.to_dict(), "device": self.device,
            "rule": self.rule, "threads": self.threads, "gpu_layers": self.gpu_layers, "parallel": self.parallel,
            "measured": self.measured, "export_only": self.export_only,
            "memory": self.fit.to_dict() if self.fit else None, "split": self.split,
            "reasons": self.reasons, "rejected": [c.to_dict() for c in self.rejected],
        }


def _device(device, profile: str | None) -> DeviceInfo:
    if isinstance(device, DeviceInfo):
        return device
    if isinstance(device, str):
        return load_profile(device)
    return load_profile(profile) if profile else probe()


def _install_hint(name: str, device: DeviceInfo) -> str:
    entry = backends.REGISTRY[name]
    if device.name != "this device":
        return f"not installed on {device.name}"
    return f"{entry.package} is not installed (pip install " + (
        "edge)" if entry.extra == "base" else f"'edge[{entry.extra}]')")


def candidates(ref: ModelRef, forced: str | None, n_ctx: int, device: DeviceInfo, workers=(), sequences: int = 1):
    arts = ref.runnable()
    viable, rejected = [], []
    for name, entry in backends.REGISTRY.items():
        if forced and name != forced:
            continue
        if workers and not entry.rpc:
            rejected.append(Candidate(name, None, False, "only llama.cpp splits a model across RPC workers", NO_RPC))
            continue
        mine = [a for a in arts if a.format == entry.format]
        if not mine:
            rejected.append(Candidate(name, None, False, f"no {entry.format} artifact of {ref.name}", NO_ARTIFACT))
            continue
        if not device.installed(name):
            rejected += [Candidate(name, a, False, _install_hint(name, device), NOT_INSTALLED) for a in mine]
            continue
        for a in mine:
            if a.context_length and n_ctx > a.context_length:
                rejected.append(Candidate(name, a, False, f"context {n_ctx} is over its maximum of {a.context_length}", CONTEXT))
                continue
            f = fit(a, name, n_ctx, device, workers, sequences)
            if f.ok:
                viable.append(Candidate(name, a, fit=f))
            else:
                rejected.append(Candidate(name, a, False, f"does not fit memory: {f.describe()}", MEMORY, f))
    # Converted artifacts below the quality gate (or never checked) only run when nothing else can,
    # or when asked for by name: they never win by speed or by rule.
    gated = {id(c): mf.gate(c.artifact.manifest) for c in viable}
    if any(ok for ok, _ in gated.values()):
        rejected += [Candidate(c.backend, c.artifact, False, gated[id(c)][1], QUALITY, c.fit)
                     for c in viable if not gated[id(c)][0]]
        viable = [c for c in viable if gated[id(c)][0]]
    return viable, rejected


def _quant_order(rule: dict, fmt: str) -> list[str]:
    return (rule.get("quant_order") or {}).get(fmt) or rules()["quant_order"].get(fmt) or list(QUANTS.get(fmt, ()))


def _rank(viable: list[Candidate], rule: dict, measured: dict) -> list[Candidate]:
    order = rule["backends"]

    def key(c: Candidate):
        tok_s = measured.get((c.backend, c.label, c.artifact.size))
        c.tok_s = tok_s
        if tok_s is not None:
            return (0, -tok_s, 0, 0)
        quants = _quant_order(rule, c.artifact.format)
        b = order.index(c.backend) if c.backend in order else len(order)
        q = quants.index(c.artifact.quant) if c.artifact.quant in quants else len(quants)
        return (1, 0.0, b, q)

    return sorted(viable, key=key)


def _why_lower(c: Candidate, best: Candidate, rule: dict) -> Candidate:
    if c.tok_s is not None and best.tok_s is not None:
        c.kind, c.reason = MEASURED, f"measured slower: {c.tok_s:.1f} tok/s vs {best.tok_s:.1f} tok/s"
    elif best.tok_s is not None:
        c.kind, c.reason = RANKED, "not measured by `edge tune`; the measured winner ranks first"
    elif c.backend != best.backend:
        c.kind, c.reason = RANKED, f"fits, but rule '{rule['name']}' prefers {best.backend}"
    else:
        c.kind, c.reason = RANKED, f"fits, but rule '{rule['name']}' prefers {best.artifact.quant} over {c.artifact.quant}"
    c.ok = False
    return c


def threads_for(rule: dict, device: DeviceInfo) -> tuple[int, str]:
    if rule.get("threads") == "performance" and device.performance_cores:
        return device.performance_cores, "one per performance core"
    return max(1, device.physical_cores), "one per physical core"


def parallel_for(rule: dict, device: DeviceInfo) -> tuple[int, str]:
    """Sequences to decode together when serving: the rule's, else by RAM (rules.json 'parallel')."""
    if rule.get("parallel"):
        return int(rule["parallel"]), f"rule '{rule['name']}'"
    p = rules().get("parallel") or {}
    below = float(p.get("one_below_ram_gib", 0)) * (1 << 30)
    if device.ram_total and device.ram_total < below:
        return 1, f"under {p['one_below_ram_gib']} GiB of RAM"
    return int(p.get("sequences", 1)), "the default for this much RAM"


def _gpu_layers(rule: dict, best: Candidate, device: DeviceInfo) -> tuple[int, str | None]:
    layers = (rule.get("gpu_layers") or {}).get(best.backend, 0)
    if not layers or not device.gpu_offload:
        return 0, None
    if device.nvidia and device.vram_total:
        usable = device.vram_total * (1 - rules()["memory"]["margin"])
        need = best.fit.weights + best.fit.kv_cache
        shape, _ = model_shape(best.artifact)
        if need > usable and shape:
            n = int(shape[0] * usable / need)
            return n, f"gpu layers: {n} of {shape[0]} (the model needs {gb(need)}, the GPU has {gb(usable)} usable)"
        return -1, f"gpu layers: all (needs {gb(need)} of {gb(usable)} usable GPU memory)"
    where = "Metal" if device.metal else "GPU"
    return -1, f"gpu layers: all, on {where}"


def _does_not_fit(ref: ModelRef, rejected: list[Candidate], n_ctx: int, device: DeviceInfo, rule: dict) -> DoesNotFit:
    """Say what would fit: a shorter context with an existing artifact, or a smaller quant."""
    mem = rules()["memory"]
    tight = sorted((c for c in rejected if c.kind == MEMORY), key=lambda c: c.fit.need)
    smallest = tight[0]
    options = []
    c = smallest
    room = c.fit.available - c.fit.weights - c.fit.overhead
    if c.fit.sequences > 1 and c.fit.kv_per_token and room // (c.fit.kv_per_token * c.fit.n_ctx) >= 1:
        options.append(f"--parallel {room // (c.fit.kv_per_token * c.fit.n_ctx)}")
    for c in tight:
        room = c.fit.available - c.fit.weights - c.fit.overhead
        ctx = room // (c.fit.kv_per_token * c.fit.sequences) if c.fit.kv_per_token else 0
        ctx = int(ctx) // 256 * 256
        if ctx >= mem["min_ctx"]:
            options.append(f"--ctx {ctx} with {c.label}")
            break
    have = {(c.artifact.format, c.artifact.quant) for c in rejected if c.artifact}
    for c in tight:
        fmt = c.artifact.format
        params = parameters(c.artifact)
        for q in sorted(QUANTS[fmt], key=lambda q: -BITS_PER_WEIGHT.get(q, 0)):
            if (fmt, q) in have or q not in BITS_PER_WEIGHT:
                continue
            size = int(params * BITS_PER_WEIGHT[q] / 8 * mem["weights_factor"].get(c.backend, 1.0))
            if size + c.fit.kv_cache + c.fit.overhead <= c.fit.available:
                options.append(f"a {fmt} {q} artifact (about {gb(size)}; edge convert {ref.name} --to {fmt} --quant {fmt}={q})")
                break
        else:
            continue
        break
    hint = ("Use " + " or ".join(options) + ".") if options else "No quant or context of it fits: use a smaller model."
    return DoesNotFit(
        f"{ref.name} does not fit {device.name}: the smallest candidate, {smallest.label} on {smallest.backend}, "
        f"{smallest.fit.describe()}.", hint)


def _fail(ref: ModelRef, forced: str | None, rejected: list[Candidate], n_ctx: int, device: DeviceInfo, rule: dict):
    kinds = {c.kind for c in rejected}
    if MEMORY in kinds:
        raise _does_not_fit(ref, rejected, n_ctx, device, rule)
    if CONTEXT in kinds:
        limit = max(c.artifact.context_length for c in rejected if c.kind == CONTEXT)
        raise ContextTooLong(f"Context length {n_ctx} is over {ref.name}'s maximum of {limit}.", f"Pass --ctx {limit} or less.")
    if forced and rejected and rejected[0].kind == NO_RPC:
        raise BackendUnavailable(f"Backend {forced} cannot use RPC workers.", "Drop --backend or --rpc.")
    if forced:
        why = rejected[0].reason if rejected else "no candidate"
        hint = ("Install it, or drop --backend to let edge choose." if NOT_INSTALLED in kinds else
                f"Convert it (edge convert {ref.name} --to {backends.REGISTRY[forced].format}), or drop --backend.")
        raise BackendUnavailable(f"Backend {forced} cannot run {ref.name} on {device.name}: {why}.", hint)
    raise BackendUnavailable(f"No installed backend can run {ref.name} on {device.name}.",
                             "Run `edge doctor` to see what is installed, or convert the model to another format.")


def choose(ref: ModelRef, backend: str | None = None, load: LoadOptions | None = None, device=None, *,
           profile: str | None = None, export: bool = False, tuned: bool = True, workers=None) -> Choice:
    """Pick backend + artifact for `ref` on `device` (a DeviceInfo or profile name; default: probe this
    machine). `export=True` allows export-only devices; `tuned=False` ignores `edge tune` results.
    With `load.rpc`, the workers' memory (`workers`, else asked over the network) counts too."""
    load = load or LoadOptions()
    if load.rpc and workers is None:
        from .rpc import probe_all

        workers = probe_all(load.rpc)
    workers = list(workers or ())
    device = _device(device, profile)
    forced = backends.canonical(backend) if backend else None
    if not ref.runnable():
        raise ModelNotFound(f"'{ref.name}' has no runnable artifact (only a conversion source).",
                            f"Convert it first: edge convert {ref.name}")
    if device.export_only and not export:
        raise BackendUnavailable(f"No Python backend runs on {device.name} (export only).",
                                 f"See what would be exported with `edge which --profile {device.name}`, then use `edge export`.")
    rule = match_rule(device)
    parallel, parallel_why = (load.parallel, "asked for") if load.parallel else parallel_for(rule, device)
    viable, rejected = candidates(ref, forced, load.n_ctx, device, workers, parallel)
    shrunk = not viable and parallel > 1 and not load.parallel
    if shrunk:
        # The device's default number of server slots is a preference: one slot that fits beats none.
        viable, rejected = candidates(ref, forced, load.n_ctx, device, workers, 1)
        parallel, parallel_why = 1, f"{parallel} sequences of {load.n_ctx} tokens do not fit memory"
    if not viable:
        _fail(ref, forced, rejected, load.n_ctx, device, rule)
    measured, when = {}, None
    if tuned:
        from .tune_cache import measured_speeds

        measured, when = measured_speeds(device.fingerprint, ref.name)
    ranked = _rank(viable, rule, measured)
    best = ranked[0]
    rejected = sorted([_why_lower(c, best, rule) for c in ranked[1:]] + rejected, key=lambda c: KIND_ORDER.index(c.kind))
    threads, threads_why = threads_for(rule, device)
    gpu_layers, gpu_why = _gpu_layers(rule, best, device)
    split = split_layers(best.artifact, best.fit, workers) if workers else None
    if split:
        gpu_layers, gpu_why = 0, describe_split(split)

    reasons = ["forced with --backend"] if forced else []
    reasons.append(f"rule '{rule['name']}' for {device.name}: {rule['why']}")
    if best.tok_s is not None:
        others = [c for c in ranked[1:] if c.tok_s is not None]
        vs = f" vs {others[0].tok_s:.1f} tok/s ({others[0].backend} {others[0].label})" if others else ""
        reasons.append(f"measured: {best.tok_s:.1f} tok/s{vs} by `edge tune` on {when}")
    reasons.append(f"memory: {best.fit.describe()} (KV shape from {best.fit.kv_source})")
    reasons.append(f"threads: {threads} ({threads_why})")
    if best.fit.sequences > 1 or shrunk:
        reasons.append(f"parallel: {parallel} ({parallel_why})")
    if gpu_why:
        reasons.append(gpu_why)
    if device.export_only:
        detail = device.backends[best.backend].detail or best.backend
        reasons.append(f"export only: the app runs it with {detail}")
    return Choice(best.backend, best.artifact, reasons, rejected, threads, gpu_layers, rule["name"], device.name,
                  best.fit, best.tok_s is not None, device.export_only, split, parallel)
