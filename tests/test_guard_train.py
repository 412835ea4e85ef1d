"""Guard training is deterministic and the data split keeps held-out sources out."""
from __future__ import annotations

import numpy as np

from edge.guard.data import HELDOUT, SOURCES, TEST, TRAIN, load
from edge.guard.train import TrainOptions, fit


def test_fit_is_deterministic_and_learns(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    unsafe = x[:, 0] > 0
    cat = np.where(unsafe, (x[:, 1] > 0).astype(int), -1)
    opts = TrainOptions(hidden=32, epochs=150, out=tmp_path / "h.npz")
    a, b = fit(x, unsafe, cat, opts, log=None), fit(x, unsafe, cat, opts, log=None)
    np.testing.assert_array_equal(a.w1, b.w1)
    p, q = a(x)
    assert ((p >= 0.5) == unsafe).mean() > 0.95
    assert (q[unsafe].argmax(1) == cat[unsafe]).mean() > 0.9


def test_split_is_by_source():
    split = load()
    roles = {name: role for name, (_, _, role) in SOURCES.items()}
    assert {e.source for e in split[HELDOUT]} == {n for n, r in roles.items() if r == HELDOUT}
    assert all(roles[e.source] == TRAIN for e in split[TRAIN] + split[TEST])
    norm = lambda e: " ".join(e.text.lower().split())
    train = {norm(e) for e in split[TRAIN]}
    assert not train & {norm(e) for e in split[HELDOUT] + split[TEST]}
    for part in split.values():  # both labels present in every part
        assert 0 < sum(e.unsafe for e in part) < len(part)
