"""Decode speed of edge against raw llama.cpp on the same GGUF, same threads.

The raw loop is llama.cpp's C API with llama.cpp's default context settings
and no Python sampling: one llama_decode per token and an argmax over the
logits. edge's loop adds sampling, stop strings, UTF-8 streaming and stats,
on the context settings edge chooses; the ratios (decode tok/s, time to first
token) show what both cost. Runs alternate in one process, since a shared
machine's speed drifts. Also: `edge --help` start-up time.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPT = "Write a short story about a robot who learns to paint. Describe the colours it discovers."


def raw_decode(path: str, prompt_ids: list[int], n_gen: int, threads: int, n_ctx: int) -> dict:
    """Greedy decode through llama.cpp's C API only."""
    from edge.backends.llama_cpp import lib

    ll = lib()
    mp = ll.llama_model_default_params()
    model = ll.llama_model_load_from_file(path.encode(), mp)
    cp = ll.llama_context_default_params()  # llama.cpp's defaults: flash attention auto, n_ubatch 512
    cp.n_ctx = n_ctx
    cp.n_batch = min(cp.n_batch, n_ctx)
    cp.n_threads = cp.n_threads_batch = threads
    cp.no_perf = True
    ctx = ll.llama_init_from_model(model, cp)
    n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))
    batch = ll.llama_batch_init(512, 0, 1)
    t0 = time.perf_counter()
    for i, t in enumerate(prompt_ids):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = i == len(prompt_ids) - 1
    batch.n_tokens = len(prompt_ids)
    ll.llama_decode(ctx, batch)
    one = ll.llama_batch_init(1, 0, 1)
    one.n_tokens, one.n_seq_id[0], one.logits[0] = 1, 1, 1
    one.seq_id[0][0] = 0
    pos = len(prompt_ids)
    tok = int(np.argmax(np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))
    t_first = time.perf_counter()
    for _ in range(n_gen - 1):
        one.token[0], one.pos[0] = tok, pos
        ll.llama_decode(ctx, one)
        pos += 1
        tok = int(np.argmax(np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))
    t_end = time.perf_counter()
    ll.llama_batch_free(batch)
    ll.llama_batch_free(one)
    ll.llama_free(ctx)
    ll.llama_model_free(model)
    return {"ttft_s": t_first - t0, "decode_tok_s": (n_gen - 1) / (t_end - t_first)}


def edge_decode(model, prompt_ids: list[int], n_gen: int) -> dict:
    model.backend.reset()
    text = model.generate(prompt_ids, max_tokens=n_gen, temperature=0, ignore_eos=True)
    s = model.stats
    assert s.completion_tokens == n_gen, (s.completion_tokens, n_gen, text[:80])
    return {"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tok_s}


def help_startup(repeats: int = 5) -> float:
    exe = Path(sys.executable).with_name("edge")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "edge.cli", "--help"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.bench.decode", description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--gen", type=int, default=128, help="tokens to decode per run")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default=None,
                    help="edge's flash attention setting (default: edge's own, auto)")
    ap.add_argument("--json", dest="as_json", action="store_true")
    a = ap.parse_args(argv)

    import edge

    n_ctx = 1024
    m = edge.load(a.model, backend="llama.cpp", n_ctx=n_ctx, threads=a.threads, guard=False)
    if a.flash_attn is not None:
        from edge.backends import llama_cpp

        m.backend.close()
        m.backend = llama_cpp.Backend(m.artifact, m.backend.load_options, llama_cpp.Options(flash_attn=a.flash_attn))
    threads = m.backend.load_options.threads
    ids = m.tokenize(m.apply_chat_template([{"role": "user", "content": PROMPT}]))
    path = str(m.artifact.main_path)
    # Warm-up both paths once (page cache, thread pools), then alternate.
    raw_decode(path, ids, 16, threads, n_ctx)
    edge_decode(m, ids, 16)
    raws, edges = [], []
    for _ in range(a.repetitions):
        raws.append(raw_decode(path, ids, a.gen, threads, n_ctx))
        edges.append(edge_decode(m, ids, a.gen))
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    result = {
        "model": m.artifact.label, "threads": threads, "prompt_tokens": len(ids), "gen_tokens": a.gen,
        "repetitions": a.repetitions, "flash_attn": m.backend.options.flash_attn,
        "raw_decode_tok_s": round(med(raws, "decode_tok_s"), 2),
        "edge_decode_tok_s": round(med(edges, "decode_tok_s"), 2),
        "ratio": round(med(edges, "decode_tok_s") / med(raws, "decode_tok_s"), 3),
        "raw_ttft_ms": round(med(raws, "ttft_s") * 1000, 1),
        "edge_ttft_ms": round(med(edges, "ttft_s") * 1000, 1),
        "ttft_ratio": round(med(edges, "ttft_s") / med(raws, "ttft_s"), 3),
        "help_startup_s": round(help_startup(), 3),
    }
    m.close()
    if a.as_json:
        import json

        print(json.dumps(result, indent=2))
    else:
        print(f"model {result['model']}, {threads} threads, prompt {len(ids)} tok, decode {a.gen} tok x {a.repetitions}, "
              f"edge flash attention {result['flash_attn']}")
        print(f"  decode   raw llama.cpp {result['raw_decode_tok_s']:8.2f} tok/s")
        print(f"           edge          {result['edge_decode_tok_s']:8.2f} tok/s   ratio {result['ratio']:.3f} (goal >= 0.95)")
        print(f"  TTFT     raw {result['raw_ttft_ms']:.1f} ms, edge {result['edge_ttft_ms']:.1f} ms   "
              f"ratio {result['ttft_ratio']:.3f} (goal <= 1.1)")
        print(f"  edge --help start-up {result['help_startup_s']:.3f} s (goal <= 0.3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
