"""Train the guard head: `edge guard train` (or `python -m edge.guard.train`).

Fits a numpy MLP on the multilingual sentence embeddings (edge/guard/encoder.py)
of the training split (edge/guard/data.py), plus a hashed word-gram logistic
regression (edge/guard/lexical.py) whose logit is added, and writes
edge/guard/head.npz. Deterministic: fixed data order and seeds. Texts are
normalised as at run time; the threshold is picked on a validation quarter of
the training sources, scored the way `Guard.check` scores (most unsafe
segment). Embeddings are cached under $EDGE_HOME/guard/, so a rerun only fits.
Measurements and the choices they led to: docs/experiments.md, "guard".
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import clean, lexical
from .data import HELDOUT, OOD, OOD2, OOD_SETS, TEST, TRAIN, WRITTEN, Example, in_validation, load
from .head import HEAD_PATH, Head
from .labels import CATEGORIES, DEFAULT_THRESHOLD


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainOptions:
    # docs/experiments.md ("guard") says which choices saw held-out figures.
    hidden: int = _help("Hidden units of the head.", 512)
    epochs: int = _help("Passes over the training data.", 30)
    batch: int = _help("Examples per Adam step.", 128)
    lr: float = _help("Adam learning rate.", 1e-3)
    weight_decay: float = _help("L2 penalty on the weights.", 1e-4)
    input_dropout: float = _help("Share of embedding features zeroed at random in each training step (0 turns it off).", 0.3)
    dropout: float = _help("Share of hidden units zeroed at random in each training step (0 turns it off).", 0.5)
    written_weight: int = _help("Weight of each prompt written for this project (edge/guard/data/*_train.txt), as if repeated.", 8)
    seed: int = _help("Random seed for the initial weights.", 0)
    ensemble: int = _help("Heads fitted with seeds seed, seed+1, ...; their logits are averaged (stored as one "
                          "wider layer, so running it is one matrix product).", 5)
    threshold: float | None = _help("Unsafe-probability threshold stored with the head; None picks it on the "
                                    "validation part of the training sources.", None)
    max_val_fpr: float = _help("When picking the threshold: the highest false-positive rate allowed on validation.", 0.015)
    max_val_fpr_hard: float = _help("When picking the threshold: the highest false-positive rate allowed on the "
                                    "benign validation prompts written for this project (alarming subjects asked "
                                    "safely, framed and everyday requests: the hard ones); 1 sets no such cap.", 1.0)
    calibration: tuple[str, ...] = _help("Out-of-distribution sets (edge/guard/data.py OOD_SETS) whose benign prompts "
                                         "together bound the threshold: written in passes apart from the training data, "
                                         "they show the false-positive rate on new prompts that validation understates.",
                                         (OOD, OOD2))
    max_calibration_fpr: float = _help("When picking the threshold: the highest false-positive rate allowed on the "
                                       "benign prompts of the calibration sets.", 0.03)
    lex_weight: float = _help("Weight of the hashed word-gram logit added to the embedding logit (0 turns it off).", 1.0)
    benign_segments: int = _help("Sentences and sentence pairs of each benign training prompt added as benign "
                                 "examples (the first ones).", 8)
    lex_l2: float = _help("L2 penalty of the word-gram logistic regression.", 1e-5)
    out: Path = _help("Where to write the head.", HEAD_PATH)

    def __post_init__(self):
        from ..errors import InvalidOption

        unknown = [c for c in self.calibration if c not in OOD_SETS]
        if unknown:
            raise InvalidOption(f"Unknown calibration set(s) {', '.join(unknown)}.",
                                f"Use some of: {', '.join(OOD_SETS)}.")
        for name in ("input_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InvalidOption(f"{name} must be at least 0 and below 1 (got {getattr(self, name)}).")


CHUNK = 2000  # texts embedded between cache saves


def embed_groups(groups: list[tuple[str, ...]], cache: bool = True, log=None) -> np.ndarray:
    """Encoder embeddings of sentence groups; a per-group cache under $EDGE_HOME makes reruns fast."""
    from ..store import home
    from .encoder import NAME, GuardEncoder

    keys = [hashlib.sha1("\x1e".join(g).encode("utf-8", "replace")).hexdigest() for g in groups]
    path = home() / "guard" / f"emb-{NAME}.npz"
    known: dict[str, np.ndarray] = {}
    if cache and path.is_file():
        with np.load(path) as z:
            known = dict(zip(z["keys"].tolist(), z["vectors"]))
    # In order of appearance: a text's segments share sentences, computed once per chunk.
    missing = list({k: g for k, g in zip(keys, groups) if k not in known}.items())
    for start in range(0, len(missing), CHUNK):
        part = missing[start: start + CHUNK]
        vecs = GuardEncoder.default().encode_groups([list(g) for _, g in part])
        known.update({k: v for (k, _), v in zip(part, vecs)})
        if log:
            log(f"  embedded {min(start + CHUNK, len(missing))} of {len(missing)} new segments")
        if cache:  # saved per chunk: an interrupted run resumes where it stopped
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(list(known)), vectors=np.array(list(known.values()), np.float32))
            tmp.replace(path)
    return np.array([known[k] for k in keys], np.float32).reshape(len(groups), -1)


def training_text(text: str) -> str:
    """What the head learns from: the text normalised as at run time (edge/guard/normalise.py)."""
    from .normalise import normalise

    return normalise(clean(text))[0]


def _segments(text: str) -> list[tuple[str, ...]]:
    from . import prepare

    return prepare(text)[0]


def whole(text: str) -> tuple[str, ...]:
    """The whole-text segment of a text, as Guard.check builds it."""
    from . import prepare

    segs = prepare(text)[0]
    return segs[0] if segs else (".",)


def embed(examples: list[Example], cache: bool = True, log=None) -> np.ndarray:
    return embed_groups([whole(e.text) for e in examples], cache, log)


def segment_scores(head: Head, texts: list[str], log=None) -> np.ndarray:
    """What Guard.check scores for each text (its most unsafe segment), from cached embeddings."""
    from . import prepare

    segs = [prepare(t)[0] for t in texts]
    flat = [s for ss in segs for s in ss]
    p = head(embed_groups(flat, log=log), [" ".join(s) for s in flat])[0] if flat else np.zeros(0)
    out, i = np.zeros(len(texts)), 0
    for k, ss in enumerate(segs):
        out[k] = float(p[i: i + len(ss)].max()) if ss else 0.0
        i += len(ss)
    return out


def fit(x: np.ndarray, unsafe: np.ndarray, cat: np.ndarray, opts: TrainOptions, log=print,
        weight: np.ndarray | None = None) -> Head:
    """Mini-batch Adam on BCE(unsafe, class-balanced) + CE(category | unsafe).

    `weight` (per example) counts an example that many times; inputs are
    standardised with the training mean and spread, folded into the first
    layer of the returned head so it takes raw features.
    """
    rng = np.random.default_rng(opts.seed)
    n, d, k = x.shape[0], x.shape[1], len(CATEGORIES)  # d: the encoder's width
    w = np.ones(n, np.float32) if weight is None else weight.astype(np.float32)
    mu = (x * w[:, None]).sum(0) / w.sum()
    sd = np.sqrt(((x - mu) ** 2 * w[:, None]).sum(0) / w.sum()) + 1e-6
    xs = ((x - mu) / sd).astype(np.float32)
    params = {
        "w1": rng.normal(0, np.sqrt(2 / d), (d, opts.hidden)).astype(np.float32),
        "b1": np.zeros(opts.hidden, np.float32),
        "wu": rng.normal(0, np.sqrt(1 / opts.hidden), opts.hidden).astype(np.float32),
        "bu": np.zeros(1, np.float32),
        "wc": rng.normal(0, np.sqrt(1 / opts.hidden), (opts.hidden, k)).astype(np.float32),
        "bc": np.zeros(k, np.float32),
    }
    m = {n_: np.zeros_like(p) for n_, p in params.items()}
    v = {n_: np.zeros_like(p) for n_, p in params.items()}
    y = unsafe.astype(np.float32)
    pos = float((w * y).sum() / w.sum())
    # Each class carries half the loss, whatever its share of the data.
    sw_all = (w * np.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))).astype(np.float32)
    is_cat = (cat >= 0).astype(np.float32)
    onehot_all = np.eye(k, dtype=np.float32)[np.maximum(cat, 0)] * is_cat[:, None]
    cw_all = w * is_cat / max(1e-9, float((w * is_cat).sum()) / n)
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    for epoch in range(1, opts.epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n, opts.batch):
            bi = order[start : start + opts.batch]
            xb, yb, sw, cw, onehot = xs[bi], y[bi], sw_all[bi] / len(bi), cw_all[bi] / len(bi), onehot_all[bi]
            step += 1
            if opts.input_dropout:
                xb = xb * _keep(rng, xb.shape, opts.input_dropout)
            pre = xb @ params["w1"] + params["b1"]
            keep = _keep(rng, pre.shape, opts.dropout) if opts.dropout else 1.0
            h = np.maximum(pre, 0) * keep
            z = h @ params["wu"] + params["bu"][0]
            p = 1 / (1 + np.exp(-np.clip(z, -40, 40)))
            logits = h @ params["wc"] + params["bc"]
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            q = e / e.sum(axis=1, keepdims=True)
            dz = (p - yb) * sw
            dlog = (q - onehot) * cw[:, None]
            dh = np.outer(dz, params["wu"]) + dlog @ params["wc"].T
            dpre = dh * (pre > 0) * keep
            grads = {
                "w1": xb.T @ dpre + opts.weight_decay * params["w1"], "b1": dpre.sum(0),
                "wu": h.T @ dz + opts.weight_decay * params["wu"], "bu": np.array([dz.sum()], np.float32),
                "wc": h.T @ dlog + opts.weight_decay * params["wc"], "bc": dlog.sum(0),
            }
            for n_ in params:
                m[n_] = b1 * m[n_] + (1 - b1) * grads[n_]
                v[n_] = b2 * v[n_] + (1 - b2) * grads[n_] ** 2
                params[n_] -= (opts.lr * (m[n_] / (1 - b1 ** step))
                               / (np.sqrt(v[n_] / (1 - b2 ** step)) + eps)).astype(np.float32)
        if log and (epoch % 5 == 0 or epoch == opts.epochs):
            p = Head(params["w1"], params["b1"], params["wu"], float(params["bu"][0]), params["wc"],
                     params["bc"], CATEGORIES, 0.5)(xs)[0]
            log(f"  epoch {epoch}: train accuracy {(((p >= 0.5) == (y > 0)) * w).sum() / w.sum():.4f}")
    # Fold the standardisation into the first layer: (x - mu) / sd @ w1 = x @ (w1 / sd) - (mu / sd) @ w1.
    w1 = (params["w1"] / sd[:, None]).astype(np.float32)
    b1_ = (params["b1"] - (mu / sd) @ params["w1"]).astype(np.float32)
    return Head(w1, b1_, params["wu"], float(params["bu"][0]), params["wc"], params["bc"],
                CATEGORIES, DEFAULT_THRESHOLD if opts.threshold is None else opts.threshold)


def _keep(rng, shape, rate: float) -> np.ndarray:
    """A dropout mask: each unit kept with probability 1 - rate and scaled up, so expected values stay."""
    return ((rng.random(shape) >= rate) / (1.0 - rate)).astype(np.float32)


def fit_all(x: np.ndarray, unsafe: np.ndarray, cat: np.ndarray, texts: list[str], weight: np.ndarray,
            opts: TrainOptions, log=print) -> Head:
    """The embedding head(s) plus, when opts.lex_weight > 0, the word-gram model on the same examples."""
    head = average([fit(x, unsafe, cat, replace(opts, seed=opts.seed + i), log=log if i == 0 else None, weight=weight)
                    for i in range(max(1, opts.ensemble))])
    if opts.lex_weight > 0:
        head.lex_w, head.lex_b = lexical.fit(texts, unsafe, weight.astype(np.float64), l2=opts.lex_l2)
        head.lex_weight = opts.lex_weight
    return head


def average(heads: list[Head]) -> Head:
    """One head whose logits are the mean of the given heads' logits: their hidden layers side by side."""
    k = len(heads)
    if k == 1:
        return heads[0]
    return Head(np.concatenate([h.w1 for h in heads], 1), np.concatenate([h.b1 for h in heads]),
                np.concatenate([h.w_unsafe for h in heads]) / k, float(np.mean([h.b_unsafe for h in heads])),
                np.concatenate([h.w_cat for h in heads], 0) / k, np.mean([h.b_cat for h in heads], axis=0),
                heads[0].categories, heads[0].threshold)


GRID = np.round(np.arange(0.30, 0.995, 0.01), 2)  # the thresholds considered


def lowest_threshold(benign_scores: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold of GRID that flags at most max_fpr of these benign scores."""
    return float(next((t for t in GRID if (benign_scores >= t).mean() <= max_fpr), GRID[-1]))


def pick_threshold(p: np.ndarray, unsafe: np.ndarray, max_fpr: float, hard: np.ndarray | None = None,
                   max_hard_fpr: float = 1.0, lowest: float = 0.0) -> tuple[float, float, float]:
    """(threshold, accuracy, FPR): the most accurate threshold of at least `lowest` whose false-positive rate
    is at most max_fpr, and at most max_hard_fpr on the benign examples marked `hard`."""
    best = (max(lowest, DEFAULT_THRESHOLD), -1.0, 1.0)
    hard = np.zeros(len(p), bool) if hard is None else hard & ~unsafe
    for t in GRID[GRID >= lowest]:
        pred = p >= t
        fpr = float(pred[~unsafe].mean())
        acc = float((pred == unsafe).mean())
        if fpr <= max_fpr and (not hard.any() or pred[hard].mean() <= max_hard_fpr) and acc > best[1]:
            best = (float(t), acc, fpr)
    return best


def arrays(examples: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    unsafe = np.array([e.unsafe for e in examples])
    cat = np.array([CATEGORIES.index(e.category) if e.unsafe else -1 for e in examples])
    return unsafe, cat


def choose_threshold(head: Head, split: dict, x, unsafe, cat, texts, weight, parent, opts: TrainOptions, log) -> float:
    """The threshold stored with the head: bounded by validation and by the calibration sets.

    Validation is a quarter of the training sources, scored by a head fitted on
    the rest (the threshold must not be picked on data the head learned). The
    calibration sets were written apart from the training data and never
    trained on; their benign prompts set the lowest threshold allowed.
    """
    lowest = 0.0
    if opts.calibration:
        benign = [e.text for part in opts.calibration for e in split[part] if not e.unsafe]
        lowest = lowest_threshold(segment_scores(head, benign), opts.max_calibration_fpr)
        log(f"calibration ({', '.join(opts.calibration)}): threshold at least {lowest:.2f} for FPR <= "
            f"{opts.max_calibration_fpr:.1%} on their {len(benign)} benign prompts")
    val = np.array([in_validation(e) for e in parent])
    probe = fit_all(x[~val], unsafe[~val], cat[~val], [t for t, v in zip(texts, val) if not v],
                    weight[~val], opts, log=None)
    val_ex = [e for e in split[TRAIN] if in_validation(e)]
    p_val = segment_scores(probe, [e.text for e in val_ex], log=log)
    y_val = np.array([e.unsafe for e in val_ex])
    # Everyday prompts dominate the validation benign prompts; the written
    # ones are the hard cases (alarming subjects asked safely): max_val_fpr_hard can cap them apart.
    hard = np.array([e.source in WRITTEN and not e.unsafe for e in val_ex])
    threshold, acc, fpr = pick_threshold(p_val, y_val, opts.max_val_fpr, hard, opts.max_val_fpr_hard, lowest)
    log(f"threshold {threshold:.2f} (validation: {len(val_ex)} prompts, accuracy {acc:.4f}, FPR {fpr:.4f})")
    for t in np.round(np.arange(0.5, 0.96, 0.05), 2):  # how the choice trades off, for the record
        pred = p_val >= t
        log(f"  validation at {t:.2f}: recall {pred[y_val].mean():.4f}, FPR {pred[~y_val].mean():.4f}, "
            f"FPR on written benign prompts {pred[hard].mean():.4f} ({int(hard.sum())})")
    return threshold


def train(opts: TrainOptions | None = None, log=print) -> dict:
    """Load the data, embed it, fit the head, write it; returns a summary."""
    opts = opts or TrainOptions()
    t0 = time.perf_counter()
    split = load()
    for part in (TRAIN, TEST, HELDOUT, *OOD_SETS):
        ex = split[part]
        log(f"{part}: {len(ex)} prompts ({sum(e.unsafe for e in ex)} unsafe) from {len({e.source for e in ex})} sources")
    ex = split[TRAIN]
    groups = [whole(e.text) for e in ex]
    # The sentences and sentence pairs of benign prompts are benign too. The
    # guard scores them one by one, so the head learns them (a harmful
    # prompt's sentences carry no label: some are filler).
    parts = [(e, g) for e in ex if not e.unsafe for g in _segments(e.text)[1: 1 + opts.benign_segments]]
    groups += [g for _, g in parts]
    x = embed_groups(groups, log=log)
    log(f"embedded in {time.perf_counter() - t0:.0f}s ({len(parts)} benign sentences and pairs added)")
    parent = ex + [e for e, _ in parts]
    unsafe, cat = arrays(parent)
    texts = [" ".join(g) for g in groups]
    # Weighting the written prompts (benign ones that share words with harmful
    # ones, everyday requests, injection phrasings) gives those small sources weight.
    weight = np.array([opts.written_weight if e.source in WRITTEN else 1 for e in ex] + [1] * len(parts),
                      np.float32)
    head = fit_all(x, unsafe, cat, texts, weight, opts, log=log)
    if opts.threshold is None:
        head.threshold = choose_threshold(head, split, x, unsafe, cat, texts, weight, parent, opts, log)
        head.calibration = tuple(opts.calibration)
    else:
        head.threshold = opts.threshold
    head.save(opts.out)
    log(f"wrote {opts.out} ({Path(opts.out).stat().st_size / 1e3:.0f} KB) in {time.perf_counter() - t0:.0f}s")
    return {"train": len(split[TRAIN]), "path": str(opts.out), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    train()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
