"""`edge eval guard`: accuracy, false positives, per-category recall and latency.

Scores the in-distribution test split and the held-out sources (never seen
in training) with exactly what `Guard.check` computes (long texts windowed),
then times `check` on single prompts, warm.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..guard.data import HELDOUT, TEST, Example, load
from ..guard.labels import CATEGORIES

LATENCY_SAMPLES = 200


def _scores(guard, examples: list[Example]) -> tuple[np.ndarray, list]:
    from ..guard import clean
    from ..guard.train import embed

    p, q = guard.head(embed(examples), [clean(e.text) for e in examples])
    cats = [guard.head.categories[i] for i in q.argmax(axis=1)]
    limit = guard.encoder.max_tokens - 2
    for i, e in enumerate(examples):
        if len(guard.encoder.token_ids(e.text)) > limit:  # windowed in check(): score it the same way
            v = guard.check(e.text, threshold=0.0)
            p[i], cats[i] = v.score, v.category
    return p, cats


def metrics(examples: list[Example], p: np.ndarray, cats: list, threshold: float) -> dict:
    y = np.array([e.unsafe for e in examples])
    pred = p >= threshold
    per_cat = {}
    for c in CATEGORIES:
        idx = [i for i, e in enumerate(examples) if e.unsafe and e.category == c]
        if idx:
            per_cat[c] = {"n": len(idx), "recall": float(pred[idx].mean()),
                          "category_accuracy": float(np.mean([cats[i] == c for i in idx if pred[i]] or [0.0]))}
    per_src = {}
    for s in sorted({e.source for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.source == s]
        per_src[s] = {"n": len(idx), "unsafe": bool(y[idx[0]]), "accuracy": float((pred[idx] == y[idx]).mean())}
    neg, posi = ~y, y
    return {
        "n": int(len(y)), "unsafe": int(y.sum()),
        "accuracy": float((pred == y).mean()),
        "false_positive_rate": float(pred[neg].mean()) if neg.any() else 0.0,
        "recall": float(pred[posi].mean()) if posi.any() else 0.0,
        "per_category": per_cat, "per_source": per_src,
    }


def latency(guard, texts: list[str]) -> dict:
    """Percentiles of `check` on each text, warm; with the sample's lengths in word pieces and the threads used."""
    guard.check("warm up")
    ms = []
    for t in texts:
        t0 = time.perf_counter()
        guard.check(t)
        ms.append((time.perf_counter() - t0) * 1e3)
    tokens = [len(guard.encoder.token_ids(t)) for t in texts]
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(np.max(ms)), "tokens_p50": float(np.percentile(tokens, 50)),
            "tokens_p95": float(np.percentile(tokens, 95)), "threads": guard.encoder.threads}


def evaluate(threshold: float | None = None, latency_samples: int = LATENCY_SAMPLES) -> dict:
    """The full report as a dict (what `edge eval guard --json` prints)."""
    from ..embed import cache_path
    from ..guard import Guard
    from ..guard.head import HEAD_PATH

    guard = Guard(threshold=threshold)
    split = load()
    report = {"threshold": guard.threshold}
    for name, part in (("in_distribution", TEST), ("held_out", HELDOUT)):
        p, cats = _scores(guard, split[part])
        report[name] = metrics(split[part], p, cats, guard.threshold)
    # Latency on real prompts of ordinary length: an even sample of the held-out split.
    held = split[HELDOUT]
    step = max(1, len(held) // latency_samples)
    short = [e.text for e in held[::step] if len(e.text) < 2000][:latency_samples]
    report["latency"] = latency(guard, short)
    files = {"encoder": cache_path(), "head": Path(HEAD_PATH)}
    report["model_files"] = {k: {"path": str(v), "bytes": v.stat().st_size if v.exists() else None} for k, v in files.items()}
    report["model_files_total_bytes"] = sum(v["bytes"] or 0 for v in report["model_files"].values())
    return report


def format_report(r: dict) -> str:
    """The human-readable table `edge eval guard` prints."""
    lines = [f"Prompt guard (threshold {r['threshold']:.2f})", ""]
    lines.append(f"{'split':<18}{'prompts':>8}{'unsafe':>8}{'accuracy':>10}{'FPR':>8}{'recall':>8}")
    for name in ("in_distribution", "held_out"):
        m = r[name]
        lines.append(f"{name.replace('_', '-'):<18}{m['n']:>8}{m['unsafe']:>8}{m['accuracy']:>10.2%}"
                     f"{m['false_positive_rate']:>8.2%}{m['recall']:>8.2%}")
    for name in ("in_distribution", "held_out"):
        lines += ["", f"Per-category recall ({name.replace('_', '-')})"]
        for c, m in r[name]["per_category"].items():
            lines.append(f"  {c:<26}{m['n']:>6}  recall {m['recall']:.2%}  category right {m['category_accuracy']:.2%}")
        lines += ["", f"Per-source accuracy ({name.replace('_', '-')})"]
        for s, m in r[name]["per_source"].items():
            lines.append(f"  {s:<26}{m['n']:>6}  {'unsafe' if m['unsafe'] else 'benign':<7} {m['accuracy']:.2%}")
    lat = r["latency"]
    lines += ["", f"Latency per prompt (single, warm, n={lat['n']}, {lat['threads']} threads): p50 {lat['p50_ms']:.1f} ms, "
              f"p95 {lat['p95_ms']:.1f} ms, max {lat['max_ms']:.1f} ms",
              f"  prompt length in word pieces: p50 {lat['tokens_p50']:.0f}, p95 {lat['tokens_p95']:.0f}"]
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in r["model_files"].items() if v["bytes"])
    lines.append(f"Model files: {sizes} (total {r['model_files_total_bytes'] / 1e6:.1f} MB)")
    return "\n".join(lines)
