"""Export a model for a phone's native runtime: Android or iOS.

    from edge.apps.export import ExportOptions, export
    export(ExportOptions(target="android", out="phone/"))

Phones cannot always run edge's Python runtime, so this writes what their
own runtimes load, through the converter: Android gets GGUF Q4_0 for
llama.cpp (or ONNX int4 for ONNX Runtime Mobile), iOS gets MLX 4-bit for
mlx-swift (or GGUF for llama.cpp's Swift package). The quant follows the
device profile's memory: 4-bit by default (decoding on a phone is bound by
memory bandwidth), lower when 4-bit does not fit the app's share of RAM.
Each export folder holds the artifact, its manifest and a README naming
the runtime that loads it. The artifact is converted through the quality gate
like any other: one below the threshold is exported with a warning, but stays
out of the defaults and the tune cache unless `allow_below_threshold` is set.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edge.errors import DoesNotFit, InvalidOption
from edge.formats import BITS_PER_WEIGHT, GGUF, MLX, ONNX, check_quant

# Share of the profile's available RAM an app's model weights may take: the OS
# kills apps that hold much more, and the KV cache and the app need the rest.
APP_MEMORY_SHARE = 0.4


@dataclass(frozen=True)
class Runtime:
    format: str
    quants: tuple          # preferred first; lower ones when memory is short
    runtime: str           # what loads it on the phone
    how: str               # one line on wiring it up


@dataclass(frozen=True)
class Target:
    profile: str
    runtimes: tuple        # default first


TARGETS = {
    "android": Target("android-arm64-8gb", (
        Runtime(GGUF, ("q4_0", "q3_k_m", "q2_k"), "llama.cpp (Android NDK build, llama.rn, or `edge` itself under Termux)",
                "Copy the .gguf to the device; load it with llama.cpp's `llama_model_load_from_file`, or run `edge run -m FILE` in Termux."),
        Runtime(ONNX, ("int4",), "ONNX Runtime Mobile (onnxruntime-android)",
                "Bundle model.onnx (+ model.onnx.data) and tokenizer.json in the app; run it with OrtSession and feed past key/values each step."),
    )),
    "ios": Target("iphone-15-pro", (
        Runtime(MLX, ("4bit",), "mlx-swift (MLXLLM / MLXLMCommon)",
                "Add the folder to the app bundle and load it with `LLMModelFactory.shared.loadContainer(configuration: .init(directory: url))`."),
        Runtime(GGUF, ("q4_0", "q3_k_m", "q2_k"), "llama.cpp Swift package (Metal)",
                "Add the .gguf to the app bundle; load it with llama.cpp's `llama_model_load_from_file` (Metal offload on)."),
    )),
}


def _o(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ExportOptions:
    """What to export, for which phone, where."""

    target: str = _o("android", "Phone platform: android or ios.")
    out: str = _o("export", "Folder to write the export into.")
    model: Optional[str] = _o(None, "Model name, Hugging Face folder or GGUF file (default: the embedded SmolLM2-135M-Instruct).")
    format: Optional[str] = _o(None, "Artifact format (android: gguf or onnx; ios: mlx or gguf); default: the first.")
    quant: Optional[str] = _o(None, "Quant to use instead of the one the profile's memory picks.")
    profile: Optional[str] = _o(None, "Device profile whose memory decides the quant (default: the target's).")
    quality: bool = _o(True, "Run the converter's quality check on a newly converted artifact (off: it never "
                             "becomes a default on this machine).")
    threshold: float = _o(0.90, "Minimum top-1 agreement with the source model.")
    allow_below_threshold: bool = _o(False, "Let an artifact below the threshold become a default here and enter the "
                                            "tune cache.")

    def __post_init__(self):
        if self.target not in TARGETS:
            raise InvalidOption(f"Unknown export target '{self.target}'.", f"Choose one of: {', '.join(TARGETS)}.")
        fmts = [r.format for r in TARGETS[self.target].runtimes]
        if self.format is not None and self.format not in fmts:
            raise InvalidOption(f"{self.target} exports take {' or '.join(fmts)}, not '{self.format}'.",
                                f"Pass --to {fmts[0]} (or leave it out).")


@dataclass
class Exported:
    target: str
    format: str
    quant: str
    runtime: str
    path: Path
    size: int
    reason: str
    quality: Optional[dict] = None
    warning: Optional[str] = None

    def to_dict(self) -> dict:
        return {"target": self.target, "format": self.format, "quant": self.quant, "runtime": self.runtime,
                "path": str(self.path), "size": self.size, "reason": self.reason, "quality": self.quality,
                "warning": self.warning}


def runtime_for(opts: ExportOptions) -> Runtime:
    runtimes = TARGETS[opts.target].runtimes
    return next(r for r in runtimes if r.format == (opts.format or runtimes[0].format))


def pick_quant(rt: Runtime, parameters: int, profile) -> tuple[str, str]:
    """(quant, why): the first of the runtime's quants whose weights fit the app's share of RAM."""
    budget = profile.ram_available * APP_MEMORY_SHARE
    for q in rt.quants:
        need = parameters * BITS_PER_WEIGHT[q] / 8
        if need <= budget:
            return q, (f"{q}: {need / 1e9:.2f} GB of weights fit {APP_MEMORY_SHARE:.0%} of {profile.name}'s "
                       f"{profile.ram_available / 1e9:.1f} GB available")
    smallest = parameters * BITS_PER_WEIGHT[rt.quants[-1]] / 8
    raise DoesNotFit(f"Even {rt.quants[-1]} needs {smallest / 1e9:.2f} GB of weights; {profile.name} leaves an app "
                     f"about {budget / 1e9:.2f} GB.", "Export a smaller model.")


def _source(model: Optional[str]):
    """(store artifact list, model name, parameter count) of the model to export."""
    from edge.select import parameters
    from edge.store import Store

    ref = Store().resolve(model)
    arts = ref.artifacts
    params = max(parameters(a) for a in arts)
    return ref, params


def _artifact(ref, model: Optional[str], fmt: str, quant: str, opts: ExportOptions):
    """The store artifact in fmt-quant: reused when present, converted (through the quality gate) otherwise."""
    from edge import converters
    from edge.store import Store

    for a in list(ref.artifacts) + Store().artifacts(ref.name):
        if a.format == fmt and a.quant == quant and a.folder is not None:
            return a
    converters.convert(model, to=(fmt,), quant=f"{fmt}={quant}", progress=False, quality=opts.quality,
                       threshold=opts.threshold, allow_below_threshold=opts.allow_below_threshold)
    found = [a for a in Store().artifacts(ref.name) if a.format == fmt and a.quant == quant]
    if not found:
        raise InvalidOption(f"The converter wrote no {fmt}-{quant} artifact for {ref.name}.", "Run `edge convert` to see why.")
    return found[0]


README = """# {name} for {target} ({fmt} {quant})

Runtime: **{runtime}**.

{how}

- Format: {fmt}, quant {quant} ({reason}).
- Files: {files}; `manifest.json` lists each with its size and sha256.
- Made by `edge export --target {target}` from {source}.
"""


def export(opts: ExportOptions) -> Exported:
    """Convert (or reuse) the artifact for the target and write it with a README into opts.out."""
    from edge import manifest as mf
    from edge.device import load_profile

    rt = runtime_for(opts)
    profile = load_profile(opts.profile or TARGETS[opts.target].profile)
    ref, params = _source(opts.model)
    if opts.quant:
        quant, why = check_quant(rt.format, opts.quant), "chosen with --quant"
    else:
        quant, why = pick_quant(rt, params, profile)
    art = _artifact(ref, opts.model, rt.format, quant, opts)
    art.verify()
    passed, gate_why = mf.gate(art.manifest)
    warning = None if passed else (f"{art.label}: {gate_why}; exported, but on this machine it does not become a "
                                   "default or enter the tune cache.")

    out = Path(opts.out).expanduser()
    final = out / f"{ref.name}-{opts.target}-{rt.format}-{quant}"
    work = out / f".{final.name}.part"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    man = dict(art.manifest)
    entries = []
    for entry in man.get(mf.K_FILES, []):
        src = mf.resolve_file(art.folder, entry["path"])
        rel = Path(entry["path"]).name if Path(entry["path"]).is_absolute() else entry["path"]
        if rel == "README.md":
            continue  # a converter's model card; the export's own README replaces it
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, work / rel)
        entries.append({**entry, "path": rel})
    man[mf.K_FILES] = entries
    main = Path(man.get(mf.K_MAIN, "."))
    man[mf.K_MAIN] = main.name if main.is_absolute() else str(main)
    man["export"] = {"target": opts.target, "runtime": rt.runtime, "profile": profile.name, "why": why}
    man.pop(mf.K_SCHEMA, None)
    mf.write(work, man)
    (work / "README.md").write_text(README.format(
        name=ref.name, target=opts.target, fmt=rt.format, quant=quant, runtime=rt.runtime, how=rt.how, reason=why,
        files=", ".join(f"`{e['path']}`" for e in entries), source=opts.model or "the embedded default model"))
    if final.exists():
        shutil.rmtree(final)
    os.replace(work, final)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    return Exported(opts.target, rt.format, quant, rt.runtime, final, size, why, art.quality or None, warning)
