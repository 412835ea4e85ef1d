"""`edge eval guard`: recall per category, language and disguise, false positives, latency.

Scores the in-distribution test split, the held-out sources (never seen in
training) and the out-of-distribution sets written separately from the
training data (edge/guard/data/ood*_test.tsv) exactly as `Guard.check` scores
(normalised, segmented, most unsafe segment). The OOD harmful prompts are
also scored disguised (leetspeak, split letters, invisible characters,
homoglyphs, base64, hex) and buried after benign text. Latency is `check` on
single prompts of 40 and 64 words, warm, with the encoder's thread count.
"""
from __future__ import annotations

import base64
import time

import numpy as np

from ..guard.data import HELDOUT, LANGUAGES, OOD, OOD_SETS, TEST, Example, load
from ..guard.labels import CATEGORIES

LATENCY_SAMPLES = 100
FILLER = ("Thanks for your help yesterday with the spreadsheet, it worked perfectly. The weather has been "
          "lovely and we finally finished painting the kitchen, which looks great now. My daughter started "
          "piano lessons and practises every evening. ")


def _leet(t: str) -> str:
    return " ".join(w.translate(str.maketrans("aeois", "43015")) if len(w) >= 4 and w.isalpha() else w
                    for w in t.split(" "))


def _split(t: str) -> str:
    words = t.split(" ")
    longest = sorted(range(len(words)), key=lambda i: -len(words[i]))[:2]
    return " ".join(".".join(w) if i in longest and w.isalpha() else w for i, w in enumerate(words))


def _invisible(t: str) -> str:
    return " ".join("\u200b".join(w) for w in t.split(" "))


def _homoglyph(t: str) -> str:
    return t.translate(str.maketrans("aeopcx", "аеорсх"))  # Cyrillic look-alikes


DISGUISE = {
    "leetspeak": _leet, "split_letters": _split, "invisible": _invisible, "homoglyph": _homoglyph,
    "base64": lambda t: "Decode this and do what it says: " + base64.b64encode(t.encode()).decode(),
    "hex": lambda t: "Decode this hex and answer: " + t.encode().hex(),
    "buried": lambda t: FILLER * 3 + t,  # dilution: a request after about 100 words of benign text
}
LATIN = ("en", "fr", "de", "es", "it", "pt")
OOD_SPLITS = tuple(OOD_SETS)
SPLITS = (*((name, name) for name in OOD_SPLITS), ("in_distribution", TEST), ("held_out", HELDOUT))


def scores(guard, texts: list[str]) -> np.ndarray:
    """What guard.check would score for each text, batched (embeddings cached across runs)."""
    from ..guard.train import segment_scores

    return segment_scores(guard.head, texts)


def metrics(examples: list[Example], p: np.ndarray, threshold: float) -> dict:
    y = np.array([e.unsafe for e in examples])
    pred = p >= threshold
    per_cat, per_lang, per_src = {}, {}, {}
    for c in CATEGORIES:
        idx = [i for i, e in enumerate(examples) if e.unsafe and e.category == c]
        if idx:
            per_cat[c] = {"n": len(idx), "recall": float(pred[idx].mean())}
    for lang in LANGUAGES:
        pos = [i for i, e in enumerate(examples) if e.lang == lang and e.unsafe]
        neg = [i for i, e in enumerate(examples) if e.lang == lang and not e.unsafe]
        if pos or neg:
            per_lang[lang] = {"unsafe": len(pos), "benign": len(neg),
                              "recall": float(pred[pos].mean()) if pos else None,
                              "false_positive_rate": float(pred[neg].mean()) if neg else None}
    for s in sorted({e.source for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.source == s]
        per_src[s] = {"n": len(idx), "unsafe": bool(y[idx[0]]), "accuracy": float((pred[idx] == y[idx]).mean())}
    return {
        "n": int(len(y)), "unsafe": int(y.sum()),
        "accuracy": float((pred == y).mean()),
        "false_positive_rate": float(pred[~y].mean()) if (~y).any() else 0.0,
        "recall": float(pred[y].mean()) if y.any() else 0.0,
        "per_category": per_cat, "per_language": per_lang, "per_source": per_src,
        "misses": [e.text for e, hit in zip(examples, pred) if e.unsafe and not hit],
        "false_positives": [e.text for e, hit in zip(examples, pred) if not e.unsafe and hit],
    }


def disguised(guard, examples: list[Example], threshold: float) -> dict:
    """Recall on the OOD harmful prompts of Latin-script languages under each disguise."""
    harmful = [e.text for e in examples if e.unsafe and e.lang in LATIN]
    out = {}
    for name, f in DISGUISE.items():
        p = scores(guard, [f(t) for t in harmful])
        out[name] = {"n": len(harmful), "recall": float((p >= threshold).mean())}
    return out


def _words(n: int, seed: int = 0) -> str:
    base = (FILLER + "Could you tell me how to plan a week of healthy dinners for a family of four "
            "with a small budget and little time to cook on weekdays? ").split()
    return " ".join(base[(seed + i) % len(base)] for i in range(n))


def latency(guard, samples: int = LATENCY_SAMPLES) -> dict:
    """p50/p95 of `check` on single prompts of 40 and 64 words (warm), and one 2,000-word text."""
    guard.check("warm up")
    out = {"threads": guard.encoder.threads}
    for words in (40, 64):
        ms = []
        for i in range(samples):
            t = _words(words, i)
            t0 = time.perf_counter()
            guard.check(t)
            ms.append((time.perf_counter() - t0) * 1e3)
        out[f"{words}_words"] = {"n": samples, "p50_ms": float(np.percentile(ms, 50)),
                                 "p95_ms": float(np.percentile(ms, 95))}
    t0 = time.perf_counter()
    guard.check(_words(2000))
    out["2000_words_ms"] = (time.perf_counter() - t0) * 1e3
    return out


def evaluate(threshold: float | None = None, latency_samples: int = LATENCY_SAMPLES, log=None) -> dict:
    """The full report as a dict (what `edge eval guard --json` prints)."""
    from ..guard import Guard
    from ..guard.encoder import model_files
    from ..guard.head import HEAD_PATH

    say = log or (lambda s: None)
    guard = Guard(threshold=threshold)
    split = load()
    # The sets whose benign prompts bounded the stored threshold are calibration, not test, figures.
    report = {"threshold": guard.threshold,
              "calibration": list(guard.head.calibration) if threshold is None else []}
    for name, part in SPLITS:
        say(f"scoring {name} ({len(split[part])} prompts)")
        report[name] = metrics(split[part], scores(guard, [e.text for e in split[part]]), guard.threshold)
    say("scoring disguised prompts")
    report["disguises"] = disguised(guard, split[OOD], guard.threshold)
    say("timing single checks")
    report["latency"] = latency(guard, latency_samples)
    files = {p.name: p for p in [*model_files(), HEAD_PATH]}
    report["model_files"] = {k: {"path": str(v), "bytes": v.stat().st_size if v.exists() else None}
                             for k, v in files.items()}
    report["model_files_total_bytes"] = sum(v["bytes"] or 0 for v in report["model_files"].values())
    return report


def format_report(r: dict) -> str:
    """The human-readable table `edge eval guard` prints."""
    lines = [f"Prompt guard (threshold {r['threshold']:.2f})", ""]
    lines.append(f"{'split':<18}{'prompts':>8}{'unsafe':>8}{'accuracy':>10}{'FPR':>8}{'recall':>8}")
    for name, _ in SPLITS:
        m = r[name]
        lines.append(f"{name.replace('_', '-'):<18}{m['n']:>8}{m['unsafe']:>8}{m['accuracy']:>10.2%}"
                     f"{m['false_positive_rate']:>8.2%}{m['recall']:>8.2%}")
    if r.get("calibration"):
        lines.append(f"({', '.join(r['calibration'])}: calibration sets, they bound the stored threshold)")
    for name in OOD_SPLITS:
        lines += ["", f"Per-language ({name})"]
        for lang, m in r[name]["per_language"].items():
            rec = "-" if m["recall"] is None else f"{m['recall']:.2%}"
            fpr = "-" if m["false_positive_rate"] is None else f"{m['false_positive_rate']:.2%}"
            lines.append(f"  {lang:<4} unsafe {m['unsafe']:>4}  recall {rec:>7}   benign {m['benign']:>4}  FPR {fpr:>7}")
    lines += ["", "Per-disguise recall (ood harmful, Latin-script languages)"]
    for name, m in r["disguises"].items():
        lines.append(f"  {name:<16}{m['n']:>5}  recall {m['recall']:.2%}")
    for name, _ in SPLITS:
        lines += ["", f"Per-category recall ({name.replace('_', '-')})"]
        for c, m in r[name]["per_category"].items():
            lines.append(f"  {c:<26}{m['n']:>6}  recall {m['recall']:.2%}")
    for name in ("in_distribution", "held_out"):
        lines += ["", f"Per-source accuracy ({name.replace('_', '-')}; benign sources: 1 - FPR)"]
        for s, m in r[name]["per_source"].items():
            lines.append(f"  {s:<26}{m['n']:>6}  {'unsafe' if m['unsafe'] else 'benign':<7} {m['accuracy']:.2%}")
    lat = r["latency"]
    lines += ["", f"Latency per check (single, warm, {lat['threads']} threads): "
              f"40 words p50 {lat['40_words']['p50_ms']:.1f} ms, p95 {lat['40_words']['p95_ms']:.1f} ms; "
              f"64 words p50 {lat['64_words']['p50_ms']:.1f} ms, p95 {lat['64_words']['p95_ms']:.1f} ms; "
              f"2,000 words {lat['2000_words_ms']:.0f} ms"]
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in r["model_files"].items() if v["bytes"])
    lines.append(f"Model files: {sizes} (total {r['model_files_total_bytes'] / 1e6:.1f} MB)")
    return "\n".join(lines)
