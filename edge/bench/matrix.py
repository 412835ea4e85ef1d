"""`edge bench`: formats x quants x backends on this device, with a recommendation.

`run(BenchOptions)` converts the artifacts that are missing (through the
converter), then measures every artifact on every backend that runs its
format, each in a child process so peak resident memory belongs to that
artifact alone: load time, time to first token, prefill tok/s (as
llama-bench's pp512), decode tok/s (as tg128, EOS ignored), with the warm-up
run excluded and mean ± sd over the repetitions. Quality (perplexity, top-1
agreement with the source) comes from the artifact's manifest. `--anchor`
times raw llama.cpp (edge.bench.decode.raw_decode) on each GGUF in the same
child, so every figure has a ratio beside it.

Rows are appended to the CSV and to a JSONL file next to the JSON as they
finish, so an interrupted run keeps them; the final JSON, CSV and PNG are
rewritten at the end. The report ends with a recommendation per device
profile and writes the measured speeds into the `edge tune` cache.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

from ..errors import EdgeError, InvalidOption, MissingExtra

# Text the benchmark prompt is cut from: ordinary prose, so every tokenizer splits it alike.
PASSAGE = ("The history of the printing press begins in the fifteenth century, when movable type "
           "changed how books were made, sold and read across Europe. Printers travelled from city "
           "to city, carrying their presses, their fonts and their trade secrets with them. ")
CHILD_MARK = "EDGE-BENCH-ROW "
WARMUP_TOKENS = 8

# Columns of the CSV and keys of each JSON row, in order.
ROW_FIELDS = (
    "model", "artifact", "format", "quant", "backend", "size_bytes", "threads", "n_ctx",
    "prompt_tokens", "gen_tokens", "repetitions", "load_s",
    "ttft_ms", "ttft_ms_sd", "prefill_tok_s", "prefill_tok_s_sd", "decode_tok_s", "decode_tok_s_sd",
    "peak_rss_mib", "perplexity", "top1_agreement",
    "raw_ttft_ms", "raw_prefill_tok_s", "raw_decode_tok_s", "ttft_ratio", "prefill_ratio", "decode_ratio",
    "error",
)


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class BenchOptions:
    """What `edge bench` measures; the CLI forwards its flags here unchanged."""

    model: Optional[str] = _opt(None, "Model name, GGUF file, artifact or Hugging Face folder (default: the embedded SmolLM2-135M-Instruct).")
    formats: object = _opt(None, "Formats to measure, e.g. gguf,onnx,mlx (default: all three).")
    quants: object = _opt(None, "Quants, e.g. gguf=q4_k_m,gguf=q8_0,onnx=int8 (default: the artifacts already in the store plus each format's default quant).")
    backends: object = _opt(None, "Backends to measure, e.g. llama.cpp,onnx (default: every installed backend of each format).")
    prompt_tokens: int = _opt(512, "Prompt length in tokens for the prefill figure (as llama-bench pp512).")
    gen_tokens: int = _opt(128, "Tokens decoded per run, end of sequence ignored (as llama-bench tg128).")
    repetitions: int = _opt(3, "Measured runs per artifact and backend, after one warm-up run.")
    threads: Optional[int] = _opt(None, "CPU threads (default: what selection picks for this device).")
    json: Optional[str] = _opt(None, "Write the full report as JSON here (rows also go to the .jsonl beside it as they finish).")
    csv: Optional[str] = _opt(None, "Write one CSV row per artifact and backend here, appended as they finish.")
    plot: Optional[str] = _opt(None, "Write a PNG of decode speed against quality and size, Pareto front marked.")
    anchor: bool = _opt(False, "Also time raw llama.cpp (C API, no Python sampling) on each GGUF and print ratios.")
    threshold: float = _opt(0.90, "Minimum top-1 agreement for an artifact to be recommended or enter the tune cache.")
    allow_below_threshold: bool = _opt(False, "Let artifacts below the threshold (or never checked) enter the tune cache.")
    convert: bool = _opt(True, "Convert missing artifacts first (off: measure only what exists).")
    quality: bool = _opt(True, "Run the converter's quality check on newly converted artifacts.")
    tune: bool = _opt(True, "Write the measured speeds into the `edge tune` cache for this device.")
    timeout: float = _opt(1800.0, "Seconds one artifact x backend measurement may take before it is given up.")
    progress: bool = _opt(True, "Show progress bars on stderr.")

    def __post_init__(self):
        from edge.converters.options import parse_quants, parse_targets

        from .. import backends

        self.formats = parse_targets(self.formats)
        self.explicit_quants = bool(self.quants)
        self.quant_map = parse_quants(self.quants, self.formats)
        names = self.backends.split(",") if isinstance(self.backends, str) else list(self.backends or ())
        self.backends = tuple(dict.fromkeys(backends.canonical(b.strip()) for b in names if b.strip()))
        for name, low in (("prompt_tokens", 1), ("gen_tokens", 2), ("repetitions", 1)):
            if getattr(self, name) < low:
                raise InvalidOption(f"--{name.replace('_', '-')} must be at least {low} (got {getattr(self, name)}).")
        if self.threads is not None and self.threads < 1:
            raise InvalidOption(f"--threads must be at least 1 (got {self.threads}).")
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidOption(f"--min-agreement must be between 0 and 1 (got {self.threshold}).")
        if self.plot and importlib.util.find_spec("matplotlib") is None:
            raise MissingExtra("matplotlib", "bench", "--plot")  # say so before an hour of measuring

    @property
    def n_ctx(self) -> int:
        """Context for a run: prompt + generation, rounded up to 64."""
        return int(math.ceil((self.prompt_tokens + self.gen_tokens + 8) / 64) * 64)


@dataclass
class Report:
    """Everything one `edge bench` run found."""

    model: str
    device: dict
    date: str
    options: dict
    rows: list[dict] = field(default_factory=list)
    conversions: list[dict] = field(default_factory=list)
    recommendations: list[dict] = field(default_factory=list)
    tune: Optional[dict] = None
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# -- the child: one artifact on one backend ----------------------------------------------------
def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux VmHWM, because getrusage's ru_maxrss
    survives fork + exec and would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def prompt_ids(model, n: int) -> list[int]:
    """Exactly `n` prompt tokens cut from PASSAGE (repeated as needed)."""
    text, ids = PASSAGE, model.tokenize(PASSAGE)
    while len(ids) < n:
        text += PASSAGE
        ids = model.tokenize(text)
    return ids[:n]


def measure(spec: dict) -> dict:
    """Load spec['path'] on spec['backend'] and time it; run inside a child process."""
    import edge

    t0 = time.perf_counter()
    m = edge.load(spec["path"], backend=spec["backend"], n_ctx=spec["n_ctx"], threads=spec["threads"], guard=False)
    load_s = time.perf_counter() - t0
    threads = m.backend.load_options.threads
    ids = prompt_ids(m, spec["prompt_tokens"])
    gen = spec["gen_tokens"]

    def once(n: int) -> dict:
        m.backend.reset()  # no prefix reuse: every run prefills the whole prompt
        m.generate(ids, max_tokens=n, temperature=0, ignore_eos=True)
        s = m.stats
        if s.completion_tokens != n:
            raise EdgeError(f"{spec['backend']} produced {s.completion_tokens} of {n} tokens.")
        return {"ttft_ms": s.ttft_s * 1000, "prefill_tok_s": s.prefill_tok_s, "decode_tok_s": s.decode_tok_s}

    once(min(gen, WARMUP_TOKENS))
    runs = [once(gen) for _ in range(spec["repetitions"])]
    out = {"load_s": load_s, "threads": threads, "prompt_tokens": len(ids)}
    for key in ("ttft_ms", "prefill_tok_s", "decode_tok_s"):
        out[key], out[f"{key}_sd"] = _stats([r[key] for r in runs])
    out["peak_rss_mib"] = _peak_rss_bytes() / 2**20  # before the anchor loads the file a second time
    path = str(m.artifact.main_path)
    m.close()
    if spec.get("anchor"):
        out.update(_anchor(path, ids, gen, threads, spec["n_ctx"], spec["repetitions"], out))
    return out


def _anchor(path: str, ids: list[int], gen: int, threads: int, n_ctx: int, reps: int, edge_row: dict) -> dict:
    from .decode import raw_decode

    if len(ids) > 512:  # raw_decode prefills in one batch of at most 512 tokens
        return {"anchor_note": "raw llama.cpp anchor needs --prompt-tokens 512 or less"}
    raw_decode(path, ids, min(gen, WARMUP_TOKENS), threads, n_ctx)
    runs = [raw_decode(path, ids, gen, threads, n_ctx) for _ in range(reps)]
    ttft = statistics.fmean(r["ttft_s"] for r in runs) * 1000
    out = {"raw_ttft_ms": ttft, "raw_prefill_tok_s": len(ids) / (ttft / 1000),
           "raw_decode_tok_s": statistics.fmean(r["decode_tok_s"] for r in runs)}
    out["ttft_ratio"] = edge_row["ttft_ms"] / out["raw_ttft_ms"]
    out["prefill_ratio"] = edge_row["prefill_tok_s"] / out["raw_prefill_tok_s"]
    out["decode_ratio"] = edge_row["decode_tok_s"] / out["raw_decode_tok_s"]
    return out


def _child_main(spec_json: str) -> int:
    try:
        out = measure(json.loads(spec_json))
    except EdgeError as exc:
        out = {"error": str(exc)}
    print(CHILD_MARK + json.dumps(out), flush=True)
    return 0


def run_child(spec: dict, timeout: float) -> dict:
    """Measure in a fresh interpreter; a crash or timeout becomes the row's error."""
    cmd = [sys.executable, "-m", "edge.bench.matrix", "--child", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
    return {"error": f"measurement process failed: {last}"}


# -- incremental output ---------------------------------------------------------------------------
class RowWriter:
    """Appends each finished row to the CSV and the JSONL; a fresh run starts them empty."""

    def __init__(self, csv_path: str | None, jsonl_path: str | None):
        self.csv_path = Path(csv_path) if csv_path else None
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        for p in (self.csv_path, self.jsonl_path):
            if p:
                p.parent.mkdir(parents=True, exist_ok=True)
        if self.csv_path:
            with open(self.csv_path, "w", newline="") as f:
                csv.DictWriter(f, ROW_FIELDS).writeheader()
        if self.jsonl_path:
            self.jsonl_path.write_text("")

    def append(self, row: dict) -> None:
        if self.csv_path:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, ROW_FIELDS, extrasaction="ignore").writerow(_csv_row(row))
        if self.jsonl_path:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(row) + "\n")


def _csv_row(row: dict) -> dict:
    return {k: (f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()}


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    from ..fsutil import atomic_path

    with atomic_path(path, suffix=path.suffix) as tmp:
        write(tmp)


def write_csv(rows: list[dict], path: str) -> None:
    def w(tmp: Path):
        with open(tmp, "w", newline="") as f:
            out = csv.DictWriter(f, ROW_FIELDS, extrasaction="ignore")
            out.writeheader()
            out.writerows(_csv_row(r) for r in rows)

    _atomic(Path(path), w)


def write_json(report: Report, path: str) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n"))


def jsonl_path(json_path: str | None) -> str | None:
    return str(Path(json_path).with_suffix(".jsonl")) if json_path else None


# -- what to measure --------------------------------------------------------------------------------
def _wanted(opts: BenchOptions, ref) -> list[tuple[str, str]]:
    """(format, quant) pairs: the named quants, else what exists plus each format's defaults."""
    pairs = [(f, q) for f in opts.formats for q in opts.quant_map[f]]
    if not opts.explicit_quants:
        pairs += [(a.format, a.quant) for a in ref.runnable() if a.format in opts.formats]
    return sorted(set(pairs), key=lambda p: (opts.formats.index(p[0]), p[1]))


def _convert_missing(opts: BenchOptions, ref, missing: list[tuple[str, str]], store, step) -> list[dict]:
    """Convert per format; a format that fails becomes a conversion record with its error."""
    from edge import converters
    done = []
    source = opts.model if opts.model and Path(opts.model).expanduser().exists() else ref.name
    for fmt in dict.fromkeys(f for f, _ in missing):
        quants = [q for f, q in missing if f == fmt]
        step(f"converting {ref.name} to {fmt} {','.join(quants)}")
        try:
            results = converters.convert(source, to=(fmt,), quant={fmt: quants}, name=ref.name, progress=False,
                                         store=store, quality=opts.quality, threshold=opts.threshold,
                                         allow_below_threshold=opts.allow_below_threshold)
            done += [{"format": r.format, "quant": r.quant, "seconds": r.seconds, "size": r.size,
                      "quality": r.quality, "warning": r.warning, "error": None} for r in results]
        except EdgeError as exc:
            done += [{"format": fmt, "quant": q, "error": str(exc)} for q in quants]
        step(None)
    return done


def _base_row(ref_name: str, art, backend: str, opts: BenchOptions) -> dict:
    row = dict.fromkeys(ROW_FIELDS)
    q = art.quality if art else {}
    row.update(model=ref_name, artifact=art.label if art else None, format=art.format if art else None,
               quant=art.quant if art else None, backend=backend, size_bytes=art.size if art else None,
               n_ctx=opts.n_ctx, prompt_tokens=opts.prompt_tokens, gen_tokens=opts.gen_tokens,
               repetitions=opts.repetitions, perplexity=q.get("perplexity"), top1_agreement=q.get("top1_agreement"))
    return row


# -- the run -----------------------------------------------------------------------------------------
def run(opts: BenchOptions, on_row: Callable[[dict], None] | None = None, console=None) -> Report:
    """Convert what is missing, measure every artifact x backend, recommend, update the tune cache."""
    from .. import backends
    from ..device import probe
    from ..store import Store

    store = Store()
    ref = _resolve(store, opts.model)
    device = probe()
    report = Report(ref.name, {"fingerprint": device.fingerprint, "cpu": device.cpu_model, "arch": device.arch,
                               "physical_cores": device.physical_cores, "ram_total": device.ram_total},
                    time.strftime("%Y-%m-%d %H:%M"), _options_dict(opts))
    writer = RowWriter(opts.csv, jsonl_path(opts.json))
    wanted = _wanted(opts, ref)
    have = {(a.format, a.quant) for a in ref.runnable()}
    missing = [p for p in wanted if p not in have]

    with _Progress(opts.progress, console) as bar:
        jobs_guess = len(wanted) * 2
        bar.start(len(dict.fromkeys(f for f, _ in missing)) if opts.convert else 0, jobs_guess)
        if missing and opts.convert:
            report.conversions = _convert_missing(opts, ref, missing, store, bar.convert_step)
            ref = _resolve(store, opts.model)
        arts = {(a.format, a.quant): a for a in ref.runnable()}
        jobs = []
        for fmt, q in wanted:
            art = arts.get((fmt, q))
            names = [b for b in backends.for_format(fmt) if not opts.backends or b in opts.backends]
            for b in names:
                jobs.append((art, b, fmt, q))
        bar.set_total(len(jobs))
        for art, b, fmt, q in jobs:
            row = _base_row(ref.name, art, b, opts)
            if art is None:
                row.update(artifact=f"{ref.name}:{fmt}-{q}", format=fmt, quant=q,
                           error=_conversion_error(report.conversions, fmt, q) or "not converted (pass --convert)")
            elif not backends.installed(b):
                row["error"] = f"{backends.REGISTRY[b].package} is not installed"
            elif art.context_length and opts.n_ctx > art.context_length:
                row["error"] = f"context {opts.n_ctx} is over the artifact's maximum of {art.context_length}"
            else:
                bar.measure_step(f"{b} {fmt}-{q}")
                spec = {"path": str(art.folder or art.main_path), "backend": b, "n_ctx": opts.n_ctx,
                        "threads": opts.threads, "prompt_tokens": opts.prompt_tokens, "gen_tokens": opts.gen_tokens,
                        "repetitions": opts.repetitions, "anchor": bool(opts.anchor and fmt == "gguf")}
                row.update(run_child(spec, opts.timeout))
            report.rows.append(row)
            writer.append(row)
            bar.advance()
            if on_row:
                on_row(row)

    arts_by_label = {a.label: a for a in ref.runnable()}
    report.recommendations = recommend(report.rows, arts_by_label, opts.threshold, device)
    if opts.tune:
        report.tune = update_tune(report, arts_by_label, device, opts)
    report.files = finish_files(report, opts)
    return report


def _resolve(store, model):
    """The model's artifacts; for a path, also what the store holds under its name (its conversions)."""
    from ..formats import FORMATS
    from ..store import ModelRef

    ref = store.resolve(model)
    if _is_path(model):
        seen = {(a.format, a.quant) for a in ref.artifacts}
        extra = [a for a in store.artifacts(ref.name) if a.format in FORMATS and (a.format, a.quant) not in seen]
        ref = ModelRef(ref.name, ref.artifacts + extra)
    return ref


def _is_path(model) -> bool:
    return bool(model) and Path(model).expanduser().exists()


def _conversion_error(conversions: list[dict], fmt: str, q: str) -> str | None:
    for c in conversions:
        if c["format"] == fmt and c["quant"] == q and c.get("error"):
            return f"conversion failed: {c['error']}"
    return None


def _options_dict(opts: BenchOptions) -> dict:
    d = {f.name: getattr(opts, f.name) for f in fields(opts)}
    d["quants"] = {f: list(q) for f, q in opts.quant_map.items()}
    d["n_ctx"] = opts.n_ctx
    return d


# -- recommendation and tune cache -------------------------------------------------------------
def recommend(rows: list[dict], arts_by_label: dict, threshold: float, this_device=None) -> list[dict]:
    """Per device profile (and this device): the fastest measured artifact whose top-1
    agreement reaches `threshold`, whose backend the profile has, and that fits its memory
    (selection's fit check, default context)."""
    from ..config import LoadOptions
    from ..device import load_profile, profile_names
    from ..select import fit

    n_ctx = LoadOptions().n_ctx
    ok = [r for r in rows if not r.get("error") and r.get("decode_tok_s") and r["artifact"] in arts_by_label]
    good = [r for r in ok if r.get("top1_agreement") is not None and r["top1_agreement"] >= threshold]
    devices = ([this_device] if this_device is not None else []) + [load_profile(n) for n in profile_names()]
    out = []
    for dev in devices:
        fits = [r for r in good if dev.installed(r["backend"])
                and fit(arts_by_label[r["artifact"]], r["backend"], n_ctx, dev).ok]
        best = max(fits, key=lambda r: r["decode_tok_s"]) if fits else None
        if best:
            why = (f"fastest measured here ({best['decode_tok_s']:.1f} tok/s) of {len(fits)} that reach top-1 "
                   f"{threshold:.2f}, run on {dev.name} and fit its memory at {n_ctx} tokens")
        elif not good:
            unknown = sum(r.get("top1_agreement") is None for r in ok)
            why = f"no measured artifact reaches top-1 {threshold:.2f}" + (
                f" ({unknown} without quality figures: convert with the quality check)" if unknown else "")
        else:
            why = f"none of the {len(good)} good artifacts has an installed backend on {dev.name} and fits its memory"
        out.append({"profile": dev.name, "artifact": best["artifact"] if best else None,
                    "backend": best["backend"] if best else None,
                    "decode_tok_s": best["decode_tok_s"] if best else None,
                    "top1_agreement": best["top1_agreement"] if best else None, "why": why})
    return out


def tune_gate(art, row: dict, opts: BenchOptions | None) -> str | None:
    """Why a measured artifact stays out of the tune cache, or None when it may enter."""
    from .. import manifest as mf

    if opts is not None and opts.allow_below_threshold:
        return None
    ok, why = mf.gate(art.manifest)
    if not ok:
        return why
    agree, threshold = row.get("top1_agreement"), opts.threshold if opts else mf.DEFAULT_THRESHOLD
    if agree is not None and agree < threshold:
        return f"top-1 agreement {agree:.2f} is below {threshold:.2f}"
    return None


def update_tune(report: Report, arts_by_label: dict, device, opts: BenchOptions | None = None) -> dict | None:
    """Store the measured decode speeds as this device's `edge tune` figures for the model.

    Only artifacts that pass the quality gate go in: a fast artifact that answers
    differently from its source must not become the default by being fast."""
    from ..tune_cache import Measurement, TuneResult, store

    measured = [r for r in report.rows if r["artifact"] in arts_by_label and r.get("decode_tok_s") and not r.get("error")]
    left_out = {r["artifact"]: why for r in measured if (why := tune_gate(arts_by_label[r["artifact"]], r, opts))}
    rows = [r for r in measured if r["artifact"] not in left_out]
    if not rows:
        return {"fingerprint": device.fingerprint, "winner": None, "left_out": left_out} if left_out else None
    res = TuneResult(report.model, device.fingerprint, report.date, rows[0]["threads"], rows[0]["n_ctx"])
    res.results = [Measurement(r["backend"], r["artifact"], arts_by_label[r["artifact"]].size,
                               round(r["decode_tok_s"], 2), round(r["ttft_ms"] / 1000, 4), r["gen_tokens"])
                   for r in rows]
    store(res, f"{device.cpu_model} {device.arch}, {device.physical_cores} cores")
    w = res.winner
    return {"fingerprint": device.fingerprint, "winner": {"backend": w.backend, "artifact": w.artifact,
                                                          "decode_tok_s": w.decode_tok_s}, "left_out": left_out}


def finish_files(report: Report, opts: BenchOptions) -> dict:
    files = {}
    if opts.plot:
        files["plot"] = plot(report.rows, opts.plot, report.model)
    if opts.csv:
        write_csv(report.rows, opts.csv)
        files["csv"] = opts.csv
    if opts.json:
        files["json"], files["jsonl"] = opts.json, jsonl_path(opts.json)
        report.files = files
        write_json(report, opts.json)
    return files


# -- plot -----------------------------------------------------------------------------------------
def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (both maximised)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot(rows: list[dict], path: str, title: str) -> str:
    """Decode tok/s against top-1 agreement and against size; the Pareto front in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("decode_tok_s") and not r.get("error")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = (
        (axes[0], [r for r in ok if r.get("top1_agreement") is not None], lambda r: r["top1_agreement"], 1,
         "top-1 agreement with the source (higher is better)"),
        (axes[1], ok, lambda r: r["size_bytes"] / 1e6, -1, "size, MB (smaller is better)"),
    )
    for ax, pts, xof, sign, xlabel in panels:
        xs, ys = [xof(r) for r in pts], [r["decode_tok_s"] for r in pts]
        front = set(pareto([(sign * x, y) for x, y in zip(xs, ys)]))
        for i, r in enumerate(pts):
            on = i in front
            ax.scatter(xs[i], ys[i], s=60, c="tab:red" if on else "tab:blue", marker="*" if on else "o", zorder=3)
            ax.annotate(f"{r['format']}-{r['quant']} / {r['backend']}", (xs[i], ys[i]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        line = sorted((xs[i], ys[i]) for i in front)
        if len(line) > 1:
            ax.plot(*zip(*line), c="tab:red", lw=1, ls="--", label="Pareto front")
            ax.legend(loc="best", fontsize=8)
        if not pts:
            ax.text(0.5, 0.5, "no quality figures", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("decode tok/s")
        ax.grid(alpha=0.3)
    fig.suptitle(f"edge bench: {title}")
    fig.tight_layout()

    def w(tmp: Path):
        fig.savefig(tmp, dpi=110, format="png")

    _atomic(Path(path), w)
    plt.close(fig)
    return path


# -- terminal output --------------------------------------------------------------------------------
class _Progress:
    """Rich progress bars over the whole run (conversions, then measurements); silent when off."""

    def __init__(self, enabled: bool, console=None):
        self.enabled, self.console = enabled, console
        self.p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=self.console or Console(stderr=True), transient=False)
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.__exit__(*exc)

    def start(self, conversions: int, jobs: int):
        if self.p:
            self.conv = self.p.add_task("conversions", total=conversions) if conversions else None
            self.task = self.p.add_task("measurements", total=jobs)

    def set_total(self, n: int):
        if self.p:
            self.p.update(self.task, total=n)

    def convert_step(self, what: str | None):
        if self.p and self.conv is not None:
            if what:
                self.p.update(self.conv, description=what)
            else:
                self.p.update(self.conv, advance=1, description="conversions")

    def measure_step(self, what: str):
        if self.p:
            self.p.update(self.task, description=f"measuring {what}")

    def advance(self):
        if self.p:
            self.p.update(self.task, advance=1, description="measurements")


def _pm(mean, sd, fmt="{:.1f}") -> str:
    if mean is None:
        return "-"
    return fmt.format(mean) + (f"±{fmt.format(sd)}" if sd else "")


def _ratio(v) -> str:
    return f" ({v:.2f}x)" if v else ""



def print_report(report: Report, console=None) -> None:
    """The table, the recommendations and where the files went."""
    from rich.console import Console
    from rich.table import Table

    c = console or Console()
    if not c.is_terminal:
        c.width = max(c.width, 150)  # a file or pipe gets the whole table, unwrapped
    anchor = any(r.get("raw_decode_tok_s") for r in report.rows)
    first = next((r for r in report.rows if r.get("threads")), {})
    t = Table(title=f"edge bench: {report.model}, {first.get('threads', '?')} threads, "
                    f"pp{report.options['prompt_tokens']} / tg{report.options['gen_tokens']}, "
                    f"{report.options['repetitions']} runs (mean ± sd, warm-up excluded)")
    for col in ("artifact", "backend", "size MB", "load s", "TTFT ms", "prefill tok/s", "decode tok/s",
                "peak RSS MiB", "ppl", "top-1"):
        t.add_column(col, justify="left" if col in ("artifact", "backend") else "right")
    for r in report.rows:
        name = f"{r['format']}-{r['quant']}"
        if r.get("error"):
            t.add_row(name, r["backend"], _mb(r["size_bytes"]), "[red]" + r["error"] + "[/red]", *[""] * 6)
            continue
        t.add_row(name, r["backend"], _mb(r["size_bytes"]), f"{r['load_s']:.2f}",
                  _pm(r["ttft_ms"], r["ttft_ms_sd"]) + _ratio(r.get("ttft_ratio")),
                  _pm(r["prefill_tok_s"], r["prefill_tok_s_sd"]) + _ratio(r.get("prefill_ratio")),
                  _pm(r["decode_tok_s"], r["decode_tok_s_sd"]) + _ratio(r.get("decode_ratio")),
                  f"{r['peak_rss_mib']:.0f}",
                  "-" if r.get("perplexity") is None else f"{r['perplexity']:.2f}",
                  "-" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.3f}")
    c.print(t)
    if anchor:
        c.print("Ratios in brackets: edge / raw llama.cpp (C API, greedy argmax, no Python sampling), same GGUF and threads.")
        for r in report.rows:
            if r.get("raw_decode_tok_s"):
                c.print(f"  raw llama.cpp {r['format']}-{r['quant']}: TTFT {r['raw_ttft_ms']:.1f} ms, "
                        f"prefill {r['raw_prefill_tok_s']:.1f} tok/s, decode {r['raw_decode_tok_s']:.1f} tok/s")
    if report.recommendations:
        c.print(f"Recommendation per device (top-1 >= {report.options['threshold']:.2f}, fits memory):")
        for rec in report.recommendations:
            what = f"{rec['artifact']} on {rec['backend']}" if rec["artifact"] else "nothing"
            c.print(f"  {rec['profile']}: {what}: {rec['why']}", soft_wrap=True)
    if report.tune:
        w = report.tune["winner"]
        if w:
            c.print(f"Tune cache updated for this device: {w['backend']} {w['artifact']} ({w['decode_tok_s']:.1f} tok/s) "
                    "now ranks first in `edge which`.", soft_wrap=True)
        for label, why in (report.tune.get("left_out") or {}).items():
            c.print(f"  not in the tune cache: {label} ({why}; --allow-below-threshold lets it in)", soft_wrap=True)
    for kind, path in report.files.items():
        c.print(f"Wrote {kind}: {path}", soft_wrap=True)


def _mb(n) -> str:
    return "-" if not n else f"{n / 1e6:.1f}"


ARG_TYPES = {"int": int, "Optional[int]": int, "float": float}


# -- python -m edge.bench.matrix --------------------------------------------------------------------
def main(argv=None) -> int:
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return _child_main(argv[1])
    ap = argparse.ArgumentParser(prog="python -m edge.bench.matrix", description=__doc__.splitlines()[0])
    for f in fields(BenchOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            ap.add_argument(flag, type=ARG_TYPES.get(f.type, str), default=f.default, help=f.metadata["help"])
    a = ap.parse_args(argv)
    try:
        opts = BenchOptions(**vars(a))
        report = run(opts)
    except EdgeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if any(not r.get("error") for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
