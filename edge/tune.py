"""Autotune: measure each candidate backend/artifact on this device, cache the fastest.

`tune` runs a short prompt plus N greedy decode tokens through `edge.load`
for every (backend, artifact) that is installed and fits memory, then stores
all figures per (device fingerprint, model) in `$EDGE_HOME/tune.json`.
`select.choose` ranks measured candidates by these figures before any rule.
The cache is reused until the set of candidates changes or `retune=True`.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import EdgeError

CACHE_VERSION = 1
PROMPT = "The history of the printing press begins"


@dataclass
class Measurement:
    backend: str
    artifact: str            # artifact label, e.g. smollm2-135m-instruct:gguf-q4_1
    size: int                # artifact bytes, so a replaced artifact is not mistaken for this one
    decode_tok_s: float | None = None
    ttft_s: float | None = None
    tokens: int = 0
    error: str | None = None


@dataclass
class TuneResult:
    model: str
    fingerprint: str
    date: str
    threads: int
    n_ctx: int
    results: list[Measurement] = field(default_factory=list)
    cached: bool = False

    @property
    def winner(self) -> Measurement | None:
        ok = [m for m in self.results if m.decode_tok_s]
        return max(ok, key=lambda m: m.decode_tok_s) if ok else None

    def to_dict(self) -> dict:
        w = self.winner
        return {"model": self.model, "fingerprint": self.fingerprint, "date": self.date, "threads": self.threads,
                "n_ctx": self.n_ctx, "cached": self.cached,
                "winner": {"backend": w.backend, "artifact": w.artifact, "decode_tok_s": w.decode_tok_s} if w else None,
                "results": [asdict(m) for m in self.results]}


# -- the cache --------------------------------------------------------------------------
def cache_path() -> Path:
    from .store import home

    return home() / "tune.json"


def read_cache() -> dict:
    """The whole cache; an unreadable file counts as empty (the next tune rewrites it)."""
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {"version": CACHE_VERSION, "devices": {}}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("devices"), dict):
        return {"version": CACHE_VERSION, "devices": {}}
    return data


def _write_cache(data: dict) -> None:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tune.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def lookup(fingerprint: str, model: str) -> TuneResult | None:
    entry = read_cache()["devices"].get(fingerprint, {}).get("models", {}).get(model)
    if not isinstance(entry, dict):
        return None
    try:
        results = [Measurement(**m) for m in entry["results"]]
        return TuneResult(model, fingerprint, entry["date"], entry["threads"], entry["n_ctx"], results, cached=True)
    except (KeyError, TypeError):
        return None


def store(result: TuneResult, device_label: str = "") -> None:
    data = read_cache()
    dev = data["devices"].setdefault(result.fingerprint, {"device": device_label, "models": {}})
    d = result.to_dict()
    dev["models"][result.model] = {k: d[k] for k in ("date", "threads", "n_ctx", "winner", "results")}
    _write_cache(data)


def measured_speeds(fingerprint: str, model: str) -> tuple[dict, str | None]:
    """{(backend, artifact label, size): decode tok/s} of the cached run, and its date."""
    res = lookup(fingerprint, model)
    if res is None:
        return {}, None
    return {(m.backend, m.artifact, m.size): m.decode_tok_s for m in res.results if m.decode_tok_s}, res.date


# -- measuring ----------------------------------------------------------------------------
def measure(art, backend: str, threads: int, n_ctx: int, tokens: int) -> Measurement:
    """Load one artifact on one backend and time a short greedy generation."""
    from .model import load

    m = Measurement(backend, art.label, art.size)
    try:
        model = load(str(art.folder or art.main_path), backend=backend, n_ctx=n_ctx, threads=threads)
    except EdgeError as exc:
        m.error = str(exc)
        return m
    try:
        model.generate(PROMPT, max_tokens=2, temperature=0, ignore_eos=True)  # warm-up: pages in weights, lazy init
        model.generate(PROMPT, max_tokens=tokens, temperature=0, ignore_eos=True)
        st = model.stats
        m.decode_tok_s, m.ttft_s, m.tokens = round(st.decode_tok_s, 2), round(st.ttft_s, 4), st.completion_tokens
    except EdgeError as exc:
        m.error = str(exc)
    finally:
        model.close()
    return m


def tune(model: str | None = None, retune: bool = False, tokens: int = 32, n_ctx: int = 512,
         device=None, progress: Callable[[str], None] | None = None) -> TuneResult:
    """Measure every candidate that fits (or reuse the cache) and store the figures."""
    from .config import LoadOptions
    from .device import probe
    from .select import _candidates, _threads, match_rule
    from .store import Store

    ref = Store().resolve(model)
    device = device or probe()
    threads, _ = _threads(match_rule(device), device)
    viable, _rejected = _candidates(ref, None, LoadOptions(n_ctx=n_ctx, threads=threads).n_ctx, device)
    if not viable:
        from .select import choose

        choose(ref, None, LoadOptions(n_ctx=n_ctx), device, tuned=False)  # raises the reason
    keys = sorted((c.backend, c.label, c.artifact.size) for c in viable)
    cached = lookup(device.fingerprint, ref.name)
    if cached and not retune and sorted((m.backend, m.artifact, m.size) for m in cached.results) == keys:
        return cached
    result = TuneResult(ref.name, device.fingerprint, time.strftime("%Y-%m-%d %H:%M"), threads, n_ctx)
    for c in viable:
        if progress:
            progress(f"measuring {c.backend} {c.label}")
        result.results.append(measure(c.artifact, c.backend, threads, n_ctx, tokens))
    store(result, f"{device.cpu_model} {device.arch}, {device.physical_cores} cores")
    return result
