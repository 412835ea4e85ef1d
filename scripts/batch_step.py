"""Cost of one llama.cpp decode step with 1 and 4 sequences, per model (runs interleaved, best of 4).

    EDGE_HOME=... python scripts/batch_step.py smollm2-135m-instruct:q4_1 smollm2-135m-instruct:q4_0   # T=threads
"""
import os, sys, time
import edge
from edge.store import Store
names = sys.argv[1:]
res = {}
models = {}
for n in names:
    m = edge.load(n, backend="llama.cpp", threads=int(os.environ.get("T", "1")), n_ctx=256, parallel=4)
    models[n] = m
ids = models[names[0]].backend.tokenize("The quick brown fox jumps over the lazy dog. Paris is the capital of", special=False)
def step_cost(m, k, steps=16):
    b = m.backend
    b.reset()
    items = [(s, ids, 0, True) for s in range(k)]
    b.decode_batch(items)
    pos = len(ids)
    t0 = time.perf_counter()
    for i in range(steps):
        b.decode_batch([(s, [100 + i], pos + i, True) for s in range(k)])
    dt = (time.perf_counter() - t0) / steps
    for s in range(4):
        b.seq_keep(s, 0)
    return dt
for rep in range(4):
    for n, m in models.items():
        for k in (1, 4):
            res.setdefault((n, k), []).append(step_cost(m, k))
for n in names:
    one, four = min(res[(n, 1)]), min(res[(n, 4)])
    print(f"{n}: 1 seq {one*1000:.1f} ms/step, 4 seqs {four*1000:.1f} ms/step, tokens/s gain {4*one/four:.2f}x")
