"""`edge bench --rpc`: what splitting a model across RPC workers costs, side by side.

Rows: the model on this device alone; split over the workers given with
--rpc (if any); split over workers started here on loopback; and split over
workers in their own network namespaces (veth pairs, a real network stack;
needs root and iproute2, else the row says why it is missing). Each row has
the load time (for a split: starting the child process and sending the
layers) and decode tok/s, prefill tok/s and time to first token, mean ± sd
over the repetitions after one warm-up run, plus the layers each device held.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from dataclasses import dataclass, field

from ..errors import EdgeError, InvalidOption
from .matrix import prompt_ids


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class RpcBenchOptions:
    """What `edge bench --rpc` measures."""

    model: str | None = _opt(None, "Model (default: the embedded SmolLM2-135M-Instruct).")
    rpc: list[str] | None = _opt(None, "Workers to split across besides the local ones (HOST:PORT,...); 'lab' for none.")
    lab_workers: int = _opt(2, "Workers started on loopback and in network namespaces for the comparison rows.")
    prompt_tokens: int = _opt(64, "Prompt length in tokens.")
    gen_tokens: int = _opt(64, "Tokens decoded per run, end of sequence ignored.")
    repetitions: int = _opt(3, "Measured runs per setup, after one warm-up run.")
    threads: int | None = _opt(None, "CPU threads per process, the same in every row (default: this machine's "
                                      "physical cores shared out between the model and the local workers).")
    n_ctx: int | None = _opt(None, "Context length (default: room for the prompt and the tokens decoded).")
    json: str | None = _opt(None, "Write the rows as JSON here.")

    def __post_init__(self):
        from ..rpc import parse_endpoints

        if isinstance(self.rpc, str) and self.rpc.strip() == "lab":
            self.rpc = None
        else:
            self.rpc = parse_endpoints(self.rpc) or None
        if self.lab_workers < 1 or self.repetitions < 1 or self.gen_tokens < 2:
            raise InvalidOption("lab_workers and repetitions must be at least 1, gen_tokens at least 2.")
        if self.n_ctx is None:
            self.n_ctx = ((self.prompt_tokens + self.gen_tokens) // 256 + 1) * 256
        if self.prompt_tokens + self.gen_tokens > self.n_ctx:
            raise InvalidOption(f"prompt_tokens + gen_tokens must fit n_ctx ({self.n_ctx}).")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _load(opts: RpcBenchOptions, setup: str, workers: list[str] | None, stack: contextlib.ExitStack):
    """Load the model for one setup (split across `workers` when given): (row, model or None)."""
    import edge

    row = {"setup": setup, "workers": workers or []}
    try:
        m = stack.enter_context(edge.load(opts.model, n_ctx=opts.n_ctx, threads=opts.threads, rpc=workers))
    except EdgeError as exc:
        row["error"] = str(exc)
        return row, None
    row.update(artifact=m.artifact.label, threads=m.backend.load_options.threads, load_s=round(m.load_s, 3),
               devices=[{"device": d["endpoint"] or "local", "layers": d["n_layers"], "output": d["output"]}
                        for d in (m.devices or [])])
    return row, m


def _once(m, ids: list[int], opts: RpcBenchOptions):
    m.backend.reset()
    m.generate(ids, max_tokens=opts.gen_tokens, temperature=0, ignore_eos=True)
    return m.stats


def run(opts: RpcBenchOptions, progress=None) -> list[dict]:
    """Load every setup, then time them in turns (one run of each per round), so a change in
    the machine's load over the run falls on all setups alike."""
    from ..config import default_threads
    from ..rpc.lab import local_workers, netns_missing, netns_workers

    say = progress or (lambda msg: None)
    # Workers started here share this machine's cores with the model: idle ggml threads spin, so
    # oversubscribing the cores would measure contention, not the split.
    n = opts.lab_workers
    workers = "worker" if n == 1 else "workers"
    opts.threads = opts.threads or max(1, default_threads() // (n + 1))
    loaded = []  # (row, model or None)
    with contextlib.ExitStack() as stack:
        say("loading: local")
        loaded.append(_load(opts, "local", None, stack))
        if opts.rpc:
            say(f"loading: split over {','.join(opts.rpc)}")
            loaded.append(_load(opts, f"split over {len(opts.rpc)} given worker(s)", opts.rpc, stack))
        say(f"loading: split over {n} loopback {workers}")
        endpoints, _ = stack.enter_context(local_workers(n, threads=opts.threads))
        loaded.append(_load(opts, f"split over {n} loopback {workers}", endpoints, stack))
        setup = f"split over {n} netns {workers}"
        why = netns_missing()
        if why:
            loaded.append(({"setup": setup, "workers": [], "error": f"skipped: {why}"}, None))
        else:
            say(f"loading: split over {n} network-namespace {workers}")
            try:
                endpoints, _ = stack.enter_context(netns_workers(n, threads=opts.threads))
                loaded.append(_load(opts, setup, endpoints, stack))
            except EdgeError as exc:
                loaded.append(({"setup": setup, "workers": [], "error": str(exc)}, None))
        live = [(row, m, prompt_ids(m, opts.prompt_tokens)) for row, m in loaded if m is not None]
        runs: dict[str, list] = {row["setup"]: [] for row, _, _ in live}
        for rnd in range(opts.repetitions + 1):  # round 0 warms up
            say(f"round {rnd} of {opts.repetitions}" + (" (warm-up)" if rnd == 0 else ""))
            for row, m, ids in live:
                try:
                    stats = _once(m, ids, opts)
                except EdgeError as exc:
                    row["error"] = str(exc)
                    continue
                if rnd:
                    runs[row["setup"]].append(stats)
        for row, _, _ in live:
            done = runs[row["setup"]]
            if "error" in row or not done:
                continue
            for key, values in (("decode_tok_s", [s.decode_tok_s for s in done]),
                                ("prefill_tok_s", [s.prefill_tok_s for s in done]),
                                ("ttft_ms", [s.ttft_s * 1000 for s in done])):
                mean, sd = _mean_sd(values)
                row[key], row[key + "_sd"] = round(mean, 2), round(sd, 2)
    rows = [row for row, _ in loaded]
    if opts.json:
        from ..fsutil import atomic_write

        atomic_write(opts.json, json.dumps({"options": vars(opts), "rows": rows}, indent=2) + "\n")
    return rows


def report(rows: list[dict]) -> str:
    head = f"{'setup':34} {'load s':>7} {'decode tok/s':>14} {'prefill tok/s':>15} {'TTFT ms':>9}  layers (local first)"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['setup']:34} {r['error']}")
            continue
        layers = " / ".join(f"{d['layers']}" + ("+out" if d["output"] else "") for d in r["devices"]) or "all"
        lines.append(f"{r['setup']:34} {r['load_s']:7.2f} {r['decode_tok_s']:8.1f} ±{r['decode_tok_s_sd']:<5.1f}"
                     f"{r['prefill_tok_s']:9.1f} ±{r['prefill_tok_s_sd']:<5.1f}{r['ttft_ms']:8.1f}   {layers}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.bench.rpc", description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--rpc", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    opts = RpcBenchOptions(model=a.model, rpc=a.rpc, lab_workers=a.workers, prompt_tokens=a.prompt_tokens,
                           gen_tokens=a.gen_tokens, repetitions=a.repetitions, threads=a.threads, json=a.json)
    rows = run(opts, progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
