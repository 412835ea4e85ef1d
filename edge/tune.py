"""Autotune: measure each candidate backend/artifact on this device, cache the fastest.

`tune` runs a short prompt plus N greedy decode tokens through `edge.load`
for every (backend, artifact) that is installed and fits memory, then stores
all figures per (device fingerprint, model) in the tune cache (tune_cache.py).
`select.choose` ranks measured candidates by these figures before any rule.
The cache is reused until the set of candidates changes or `retune=True`. Each
backend's fastest decode is also stored as an efficiency (share of the measured
memory bandwidth) for edge.estimate.
Converted artifacts below the quality gate are listed but never measured.
"""
from __future__ import annotations

import time
from typing import Callable

from .errors import EdgeError
from .manifest import gate
from .tune_cache import Measurement, TuneResult, lookup, store

PROMPT = "The history of the printing press begins"


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
    from .select import candidates, match_rule, threads_for
    from .store import Store

    ref = Store().resolve(model)
    device = device or probe()
    threads, _ = threads_for(match_rule(device), device)
    viable, _rejected = candidates(ref, None, LoadOptions(n_ctx=n_ctx, threads=threads).n_ctx, device)
    if not viable:
        from .select import choose

        choose(ref, None, LoadOptions(n_ctx=n_ctx), device, tuned=False)  # raises the reason
    keys = sorted((c.backend, c.label, c.artifact.size) for c in viable)
    cached = lookup(device.fingerprint, ref.name)
    if cached and not retune and sorted((m.backend, m.artifact, m.size) for m in cached.results) == keys:
        return cached
    result = TuneResult(ref.name, device.fingerprint, time.strftime("%Y-%m-%d %H:%M"), threads, n_ctx)
    for c in viable:
        ok, why = gate(c.artifact.manifest)
        if not ok:  # never measured, so never ranked first by speed
            result.results.append(Measurement(c.backend, c.label, c.artifact.size, error=f"quality gate: {why}"))
            continue
        if progress:
            progress(f"measuring {c.backend} {c.label}")
        result.results.append(measure(c.artifact, c.backend, threads, n_ctx, tokens))
    label = f"{device.cpu_model} {device.arch}, {device.physical_cores} cores"
    store(result, label)
    _store_efficiency(result, viable, device, label)
    return result


def _store_efficiency(result: TuneResult, viable, device, label: str) -> None:
    """Per backend, the share of this machine's memory bandwidth its fastest decode used (edge.estimate)."""
    from .estimate import efficiency_of, measure_bandwidth
    from .select import kv_per_token
    from .tune_cache import store_efficiency

    arts = {(c.backend, c.label): c.artifact for c in viable}
    best: dict = {}
    for m in result.results:
        if m.decode_tok_s and (m.backend not in best or m.decode_tok_s > best[m.backend].decode_tok_s):
            best[m.backend] = m
    if not best:
        return
    bw = measure_bandwidth()
    for backend, m in best.items():
        art = arts[(backend, m.artifact)]
        per_token, _ = kv_per_token(art, backend)
        bytes_per_token = art.size + per_token * m.tokens  # every weight, plus the KV cache the decode reached
        store_efficiency(device.fingerprint, backend, efficiency_of(m.decode_tok_s, bytes_per_token, bw),
                         result.model, result.date, bw, label)
