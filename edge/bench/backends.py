"""Decode speed and time to first token per backend on SmolLM2 artifacts, in one run.

Runs the same chat prompt, greedy, EOS ignored, through edge's backends on
onnx fp32, onnx int8, mlx 8bit and gguf q8_0 artifacts of one model, and
through optimum's ORTModelForCausalLM as the baseline for our ONNX backend.

optimum runs only its own export, so the same weights are also exported by
optimum (fp32, into a side store under $EDGE_HOME/bench/optimum) and both
optimum and edge run that file: "onnx fp32 (optimum graph)" against "optimum
fp32" isolates our loop, "onnx fp32" (edge's fused graph) against it is what
a user gets from `edge convert`. Runs alternate between targets so a busy
machine slows all of them alike; the median of the repetitions is reported.
Missing artifacts are converted first (skip with --no-convert).

Goals: onnx fp32 >= 1.5 x optimum; onnx int8 >= 0.5 x llama.cpp q8_0.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from .decode import PROMPT

# (label, format, quant, backend); the label is how the results name it.
TARGETS = (
    ("onnx fp32", "onnx", "fp32", "onnx"),
    ("onnx int8", "onnx", "int8", "onnx"),
    ("mlx 8bit", "mlx", "8bit", "mlx"),
    ("llama.cpp q8_0", "gguf", "q8_0", "llama.cpp"),
)
OPTIMUM_GRAPH = "onnx fp32 (optimum graph)"
BASELINE = "optimum fp32"
# (ours, baseline, goal); a goal of None is reported without a verdict.
GOALS = (("onnx fp32", BASELINE, 1.5), ("onnx int8", "llama.cpp q8_0", 0.5), (OPTIMUM_GRAPH, BASELINE, None))


def artifacts(model: str | None, convert: bool) -> tuple[str, dict]:
    """{(format, quant): Artifact} for TARGETS, converting the missing ones."""
    from edge.store import Store

    ref = Store().resolve(model)
    have = {(a.format, a.quant): a for a in ref.artifacts}
    todo: dict[str, list[str]] = {}
    for _, fmt, q, _ in TARGETS:
        if (fmt, q) not in have:
            todo.setdefault(fmt, []).append(q)
    if todo and convert:
        from edge import converters
        print(f"converting {ref.name} to {todo} first", file=sys.stderr, flush=True)
        converters.convert(source=model, to=tuple(todo), quant=todo, name=ref.name, progress=True)
        have = {(a.format, a.quant): a for a in Store().resolve(ref.name).artifacts}
    return ref.name, have


def optimum_artifact(model: str, convert: bool):
    """The model's fp32 weights as optimum exports them, from a side store (None when absent)."""
    from edge.store import Store, home

    side = Store(home() / "bench" / "optimum")
    name = Store().resolve(model).name
    have = {(a.format, a.quant): a for a in side.artifacts(name)}
    if ("onnx", "fp32") not in have and convert:
        from edge.converters.options import ConvertOptions
        from edge.converters.pipeline import convert as run
        from edge.converters.resolve import resolve

        print(f"exporting {name} with optimum for the baseline", file=sys.stderr, flush=True)
        src = resolve(model, Store())
        run(ConvertOptions(source=str(src.hf_dir), to=("onnx",), quant="onnx=fp32", name=name, onnx_graph="optimum",
                           quality=False, progress=True), store=side)
        have = {(a.format, a.quant): a for a in side.artifacts(name)}
    return have.get(("onnx", "fp32"))


class EdgeRun:
    """One backend on one artifact; each call generates n tokens from a fresh cache."""

    def __init__(self, artifact, backend: str, threads: int, n_ctx: int):
        from edge import backends
        from edge.config import LoadOptions

        mod = backends.get(backend)
        self.b = mod.Backend(artifact, LoadOptions(n_ctx=n_ctx, threads=threads), mod.Options())
        self.ids = self.b.tokenize(self.b.apply_chat_template([{"role": "user", "content": PROMPT}]))

    def __call__(self, n: int) -> dict:
        from edge.config import GenerationOptions

        self.b.reset()
        for _ in self.b.generate(self.ids, GenerationOptions(temperature=0, max_tokens=n, ignore_eos=True)):
            pass
        s = self.b.last_stats
        assert s.completion_tokens == n, (s.completion_tokens, n)
        return {"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tok_s}

    def close(self):
        self.b.close()


class OptimumRun:
    """optimum's ORTModelForCausalLM.generate on the same ONNX file and prompt ids."""

    def __init__(self, folder, ids: list[int], threads: int):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = ORTModelForCausalLM.from_pretrained(str(folder), use_cache=True, session_options=so,
                                                         provider="CPUExecutionProvider")
        self.ids = torch.tensor([ids], dtype=torch.long)

    def __call__(self, n: int) -> dict:
        from transformers.generation.streamers import BaseStreamer

        stamps: list[float] = []

        class Clock(BaseStreamer):
            def put(self, value):
                stamps.append(time.perf_counter())

            def end(self):
                pass

        t0 = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(self.ids, attention_mask=self.torch.ones_like(self.ids), max_new_tokens=n,
                                      min_new_tokens=n, do_sample=False, streamer=Clock(), pad_token_id=0)
        assert out.shape[1] - self.ids.shape[1] == n
        first, last = stamps[1], stamps[-1]  # stamps[0] is the prompt itself
        return {"ttft_s": first - t0, "decode_tok_s": (n - 1) / (last - first)}

    def close(self):
        self.model = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.bench.backends", description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="model name in the store (default: the catalog default)")
    ap.add_argument("--gen", type=int, default=64, help="tokens to decode per run")
    ap.add_argument("--mlx-gen", type=int, default=16, help="tokens per MLX run (mlx-cpu on Linux is slow)")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads for every backend (default: physical cores)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--skip", default="", help="comma-separated labels to skip, e.g. 'mlx 8bit,optimum fp32'")
    ap.add_argument("--no-convert", dest="convert", action="store_false", help="fail instead of converting")
    ap.add_argument("--json", dest="as_json", action="store_true")
    a = ap.parse_args(argv)

    from edge import backends
    from edge.config import default_threads

    threads = a.threads or default_threads()
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    name, have = artifacts(a.model, a.convert)

    runs, gens, missing = {}, {}, {}
    for label, fmt, q, backend in TARGETS:
        if label in skip:
            continue
        if (fmt, q) not in have:
            missing[label] = "no artifact"
        elif not backends.installed(backend):
            missing[label] = f"{backend} not installed"
        else:
            runs[label] = EdgeRun(have[(fmt, q)], backend, threads, a.ctx)
            gens[label] = a.mlx_gen if fmt == "mlx" else a.gen
    wanted = {OPTIMUM_GRAPH, BASELINE} - skip
    exported = optimum_artifact(name, a.convert) if wanted and backends.installed("onnx") else None
    if wanted and exported is None:
        missing.update({label: "no optimum export" for label in wanted})
    if exported is not None and OPTIMUM_GRAPH in wanted:
        runs[OPTIMUM_GRAPH] = EdgeRun(exported, "onnx", threads, a.ctx)
        gens[OPTIMUM_GRAPH] = a.gen
    if exported is not None and BASELINE in wanted:
        try:
            same = runs.get(OPTIMUM_GRAPH) or runs.get("onnx fp32") or EdgeRun(exported, "onnx", threads, 64)
            runs[BASELINE] = OptimumRun(exported.folder, same.ids, threads)
            gens[BASELINE] = a.gen
        except ImportError as exc:
            missing[BASELINE] = f"optimum not installed ({exc.name})"

    for label, run in runs.items():  # warm-up: page cache, thread pools, lazy kernels
        run(min(8, gens[label]))
    rows: dict[str, list[dict]] = {label: [] for label in runs}
    for _ in range(a.repetitions):
        for label, run in runs.items():
            rows[label].append(run(gens[label]))
    for run in runs.values():
        run.close()

    med = lambda label, key: statistics.median(r[key] for r in rows[label])  # noqa: E731
    results = {label: {"decode_tok_s": round(med(label, "decode_tok_s"), 2), "ttft_ms": round(med(label, "ttft_s") * 1000, 1),
                       "gen_tokens": gens[label]} for label in runs}
    goals = []
    for ours, base, want in GOALS:
        if ours in results and base in results:
            ratio = results[ours]["decode_tok_s"] / results[base]["decode_tok_s"]
            goals.append({"ours": ours, "baseline": base, "ratio": round(ratio, 3), "goal": want,
                          "met": None if want is None else ratio >= want})
    report = {"model": name, "threads": threads, "prompt_tokens": len(next(iter(runs.values())).ids) if runs else 0,
              "repetitions": a.repetitions, "results": results, "goals": goals, "skipped": missing}
    if a.as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {name}, {threads} threads, prompt {report['prompt_tokens']} tok, median of {a.repetitions}")
    print(f"  {'target':<26} {'decode tok/s':>12} {'TTFT ms':>9} {'tokens':>7}")
    for label, r in results.items():
        print(f"  {label:<26} {r['decode_tok_s']:12.2f} {r['ttft_ms']:9.1f} {r['gen_tokens']:7d}")
    for g in goals:
        verdict = "same file, no goal" if g["goal"] is None else f"goal >= {g['goal']}: {'met' if g['met'] else 'NOT met'}"
        print(f"  {g['ours']} / {g['baseline']} = {g['ratio']:.2f} ({verdict})")
    for label, why in missing.items():
        print(f"  {label}: skipped ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
