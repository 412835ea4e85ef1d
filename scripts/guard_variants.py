"""Compare guard head variants under one protocol: fitted on the training split without its validation quarter.

Each variant is scored as `Guard.check` scores (most unsafe segment) on the out-of-distribution sets, the
held-out sources and the in-distribution test split, at the threshold picked on validation (1.5% FPR cap),
with ROC AUC on ood2/ood3 and recall where 3% of the benign prompts of ood..ood3 and held-out score higher.

    python scripts/guard_variants.py base dropout finetune ctx_mean lang_projection
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np

from edge.guard import lexical, prepare
from edge.guard.data import HELDOUT, OOD, OOD2, OOD3, TEST, TRAIN, WRITTEN, in_validation, load
from edge.guard.encoder import GuardEncoder
from edge.guard.train import TrainOptions, _segments, arrays, fit_all, pick_threshold, whole

PARTS = (OOD, OOD2, OOD3, HELDOUT, TEST)


class Pooled:
    """USE's summed token features (1280) and token counts per sentence group, computed once."""

    def __init__(self, groups):
        enc = GuardEncoder.default()
        self.b = enc._use._model  # the post-pooling weights that `finetune` starts from
        groups = list(dict.fromkeys(groups))
        self.row = {g: i for i, g in enumerate(groups)}
        self.tot, self.n = enc.pooled_groups([list(g) for g in groups])
        self.out = enc.embed_pooled(self.tot, self.n)

    def rows(self, groups):
        return np.array([self.row[g] for g in groups])


def setup():
    split = load()
    ex = split[TRAIN]
    groups = [whole(e.text) for e in ex]
    parts = [(e, g) for e in ex if not e.unsafe for g in _segments(e.text)[1:9]]
    groups += [g for _, g in parts]
    parent = ex + [e for e, _ in parts]
    scored = [s for p in (TRAIN, *PARTS) for e in split[p] for s in prepare(e.text)[0]]
    pool = Pooled(groups + scored)
    unsafe, cat = arrays(parent)
    weight = np.array([8 if e.source in WRITTEN else 1 for e in ex] + [1] * len(parts), np.float32)
    val = np.array([in_validation(e) for e in parent])
    return split, pool, groups, parent, unsafe, cat, weight, val


def segment_scores(score, pool, exs, agg):
    out = np.zeros(len(exs))
    for k, e in enumerate(exs):
        segs = prepare(e.text)[0]
        if segs:
            out[k] = agg(segs, score(pool.rows(segs), [" ".join(s) for s in segs]))
    return out


def most_unsafe(segs, p):
    return p.max()


def ctx_mean(segs, p):
    """A sentence counts as the mean of its own score and the best group around it."""
    best = [p[0]]
    for i in range(1, len(segs)):
        around = [p[j] for j, g in enumerate(segs) if j != i and len(g) > 1 and set(segs[i]) <= set(g)]
        best.append((p[i] + max(around or [p[i]])) / 2)
    return max(best)


def auc(pos, neg):
    r = np.concatenate([pos, neg]).argsort().argsort() + 1
    return (r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def numpy_head(ctx, x, **opts):
    split, pool, groups, parent, unsafe, cat, weight, val = ctx
    tr = ~val
    return fit_all(x[tr], unsafe[tr], cat[tr], [" ".join(g) for g, v in zip(groups, tr) if v], weight[tr],
                   replace(TrainOptions(), **opts), log=None)


def variant_numpy(ctx, **opts):
    pool, groups = ctx[1], ctx[2]
    head = numpy_head(ctx, pool.out[pool.rows(groups)], **opts)
    return lambda r, texts: head(pool.out[r], texts)[0]


def variant_lang_projection(ctx):
    """The directions between each language's mean embedding and English's (per class) projected out."""
    split, pool, groups, parent, unsafe, cat, weight, val = ctx
    x = pool.out[pool.rows(groups)]
    lang = np.array([e.lang for e in parent])
    d = [sum(0.5 * (x[~val & (lang == la) & (unsafe == c)].mean(0) - x[~val & (lang == "en") & (unsafe == c)].mean(0))
             for c in (True, False)) for la in ("fr", "de", "es", "it", "pt", "ru", "zh")]
    q = np.linalg.qr(np.array(d).T)[0]
    head = numpy_head(ctx, x - (x @ q) @ q.T, ensemble=3)
    head.w1 = head.w1 - q @ (q.T @ head.w1)  # the projection folded into the first layer
    return lambda r, texts: head(pool.out[r], texts)[0]


def variant_finetune(ctx, enc_lr=3e-4, seeds=3, epochs=30):
    """USE's layers after pooling trained together with a one-layer head (torch; for comparison only)."""
    import torch
    import torch.nn as nn

    split, pool, groups, parent, unsafe, cat, weight, val = ctx
    b, tr = pool.b, ~val
    t = lambda a: torch.tensor(np.asarray(a, np.float32))
    r = pool.rows(groups)[tr]
    mu, sd = pool.out[r].mean(0), pool.out[r].std(0) + 1e-6

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ParameterDict({k: nn.Parameter(t(getattr(b, k)))
                                         for k in ("cnn_W", "cnn_b", "d0", "d1", "p1", "d2", "p3", "d3")})
            self.head = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1))

        def forward(self, tot, n):
            e = self.enc
            m = (tot @ e["cnn_W"] + n[:, None] * e["cnn_b"]) / torch.sqrt(n)[:, None]
            y1 = torch.relu(m @ e["p1"] + torch.relu(m @ e["d0"]) @ e["d1"])
            z = torch.tanh(y1 @ e["p3"] + torch.relu(y1 @ e["d2"]) @ e["d3"])
            z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-6)
            return self.head((z - t(mu)) / t(sd))[:, 0]

    y, w = t(unsafe[tr]), t(weight[tr])
    pos = float((w * y).sum() / w.sum())
    sw = w * torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = Net()
        opt = torch.optim.AdamW([{"params": net.enc.parameters(), "lr": enc_lr, "weight_decay": 0.0},
                                 {"params": net.head.parameters(), "lr": 1e-3, "weight_decay": 1e-4}])
        tot, n = t(pool.tot[r]), t(pool.n[r])
        for _ in range(epochs):
            perm = torch.randperm(len(y))
            for s in range(0, len(y), 128):
                i = perm[s: s + 128]
                loss = (nn.functional.binary_cross_entropy_with_logits(net(tot[i], n[i]), y[i], reduction="none")
                        * sw[i]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        nets.append(net.eval())
    lex = lexical.fit([" ".join(g) for g, v in zip(groups, tr) if v], unsafe[tr], weight[tr].astype(np.float64), l2=1e-5)

    def score(rows, texts):
        with torch.no_grad():
            z = np.mean([m(t(pool.tot[rows]), t(pool.n[rows])).numpy() for m in nets], 0)
        return 1 / (1 + np.exp(-np.clip(z + lexical.Bags(texts).logits(*lex), -40, 40)))
    return score


VARIANTS = {
    "base": (lambda c: variant_numpy(c, input_dropout=0.0, dropout=0.0, hidden=256, ensemble=3), most_unsafe),
    "dropout": (lambda c: variant_numpy(c, ensemble=3), most_unsafe),
    "ctx_mean": (lambda c: variant_numpy(c, input_dropout=0.0, dropout=0.0, hidden=256, ensemble=3), ctx_mean),
    "lang_projection": (variant_lang_projection, most_unsafe),
    "finetune": (variant_finetune, most_unsafe),
}


def report(ctx, name):
    split, pool = ctx[0], ctx[1]
    make, agg = VARIANTS[name]
    score = make(ctx)
    val_ex = [e for e in split[TRAIN] if in_validation(e)]
    y_val = np.array([e.unsafe for e in val_ex])
    thr = pick_threshold(segment_scores(score, pool, val_ex, agg), y_val, 0.015)[0]
    res, neg, pos = {"variant": name, "threshold": thr}, [], {}
    for part in PARTS:
        exs = split[part]
        p, y = segment_scores(score, pool, exs, agg), np.array([e.unsafe for e in exs])
        res[part] = f"{100 * (p[y] >= thr).mean():.1f}/{100 * (p[~y] >= thr).mean():.1f}"
        if part in (OOD2, OOD3):
            res[part + "_auc"] = round(float(auc(p[y], p[~y])), 4)
        if part != TEST:
            neg.append(p[~y])
            pos[part] = p[y]
    cut = np.quantile(np.concatenate(neg), 0.97)
    res["recall_at_3pct"] = {k: round(100 * float((v > cut).mean()), 1) for k, v in pos.items()}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    args = ap.parse_args(argv)
    ctx = setup()
    for name in args.variants:
        print(json.dumps(report(ctx, name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
