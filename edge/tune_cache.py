"""The tune cache: decode speeds measured by `edge tune`, per device fingerprint and model.

`edge tune` writes it, selection reads it to rank measured candidates first, and
edge.estimate reads the decode efficiency it measured (share of memory bandwidth).
It lives in `$EDGE_HOME/tune.json`; an unreadable file counts as empty.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fsutil import atomic_write

CACHE_VERSION = 1


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
    atomic_write(cache_path(), json.dumps(data, indent=2) + "\n")


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


def store_efficiency(fingerprint: str, backend: str, value: float, model: str, date: str,
                     bandwidth_gbs: float, device_label: str = "") -> None:
    """Record the share of this machine's memory bandwidth a backend's decode reached (edge.estimate)."""
    data = read_cache()
    dev = data["devices"].setdefault(fingerprint, {"device": device_label, "models": {}})
    dev.setdefault("efficiency", {})[backend] = {"value": round(value, 4), "model": model, "date": date,
                                                 "bandwidth_gbs": round(bandwidth_gbs, 2)}
    _write_cache(data)


def efficiencies(fingerprint: str) -> dict:
    """backend -> {"value", "model", "date", "bandwidth_gbs"} measured by `edge tune` on this device."""
    eff = read_cache()["devices"].get(fingerprint, {}).get("efficiency", {})
    return {b: m for b, m in eff.items() if isinstance(m, dict) and isinstance(m.get("value"), (int, float))}
