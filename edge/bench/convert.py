"""Conversion time, size and quality per format for one model (default: SmolLM2-135M).

Runs the converter into a fresh temporary store (so nothing already converted
is reused and the real store is untouched), then reads each artifact's
manifest: seconds (shared steps such as the fp32 ONNX export are charged to
the first quant of their format), bytes on disk, perplexity against the
source's, and top-1 next-token agreement with the source.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def measure(model: str | None, to: str, quant: str | None) -> dict:
    """Convert `model` in a temporary store; return the per-artifact figures and the total wall time."""
    from edge import converters
    from edge import manifest as mf
    from edge.store import Store

    with tempfile.TemporaryDirectory(prefix="edge-bench-convert-") as root:
        # The source model is looked up in the user's store, the output goes to the temporary one.
        src = Store().resolve(model)
        origin = model if model and os.path.exists(model) else str(src.source().main_path if src.source() else model)
        t0 = time.perf_counter()
        results = converters.convert(origin, to=to, quant=quant, name=src.name, progress=False, store=Store(root))
        wall = time.perf_counter() - t0
        rows = []
        for r in results:
            q = mf.read(r.path).get(mf.K_QUALITY) or {}
            rows.append({"format": r.format, "quant": r.quant, "seconds": r.seconds, "size_bytes": r.size,
                         "perplexity": q.get("perplexity"), "source_perplexity": q.get("source_perplexity"),
                         "top1_agreement": q.get("top1_agreement"), "eval_tokens": q.get("tokens"),
                         "warning": r.warning})
    return {"model": src.name, "source": origin, "wall_s": round(wall, 1), "threads": os.cpu_count(), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.bench.convert", description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="Model to convert (default: the embedded SmolLM2-135M-Instruct).")
    ap.add_argument("--to", default="gguf,onnx,mlx", help="Target formats.")
    ap.add_argument("--quant", default=None, help="Quants, e.g. gguf=q4_k_m,onnx=int8 (default: each format's default).")
    ap.add_argument("--json", dest="as_json", action="store_true", help="Print one JSON object.")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edge.errors import EdgeError

    try:
        res = measure(a.model, a.to, a.quant)
    except EdgeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if a.as_json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['model']} from {res['source']}: {len(res['rows'])} artifacts in {res['wall_s']:.1f} s "
          f"(including the source step and quality checks)")
    print(f"  {'artifact':<12} {'seconds':>8} {'size MB':>9} {'ppl':>8} {'src ppl':>8} {'top-1':>6}")
    for r in res["rows"]:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"  {r['format'] + '-' + r['quant']:<12} {r['seconds']:>8.1f} {r['size_bytes'] / 1e6:>9.1f} "
              f"{fmt(r['perplexity'], '8.2f')} {fmt(r['source_perplexity'], '8.2f')} {fmt(r['top1_agreement'], '6.3f')}"
              + (f"  ! {r['warning']}" if r["warning"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
