"""Cost of one llama.cpp decode step with 1 and 4 sequences, per model (runs interleaved, best of N).

    EDGE_HOME=... python scripts/batch_step.py smollm2-135m-instruct:q4_1 smollm2-135m-instruct:q4_0 [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import edge

PROMPT = "The quick brown fox jumps over the lazy dog. Paris is the capital of"


def step_ms(backend, ids: list[int], seqs: int, steps: int = 16) -> float:
    """Mean milliseconds of one decode step over `seqs` sequences that share a prompt."""
    backend.reset()
    backend.decode_batch([(s, ids, 0, True) for s in range(seqs)])
    t0 = time.perf_counter()
    for i in range(steps):
        backend.decode_batch([(s, [100 + i], len(ids) + i, True) for s in range(seqs)])
    ms = (time.perf_counter() - t0) / steps * 1000
    for s in range(seqs):
        backend.seq_keep(s, 0)
    return ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repetitions", type=int, default=4)
    args = ap.parse_args(argv)
    models = {n: edge.load(n, backend="llama.cpp", threads=args.threads, n_ctx=256, parallel=4) for n in args.models}
    ids = next(iter(models.values())).backend.tokenize(PROMPT, special=False)
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repetitions):
        for name, m in models.items():
            for seqs in (1, 4):
                ms = step_ms(m.backend, ids, seqs)
                best[name, seqs] = min(ms, best.get((name, seqs), ms))
    for name in models:
        one, four = best[name, 1], best[name, 4]
        print(f"{name}: 1 seq {one:.1f} ms/step, 4 seqs {four:.1f} ms/step, tokens/s gain {4 * one / four:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
