"""Each supported architecture the real-world way, on tiny random checkpoints: Hugging Face ->
f32 GGUF (llama.cpp's converter) -> `edge import` -> `edge convert --to gguf,onnx,mlx` with the
quality gate. Prints top-1 agreement per artifact. Usage: python scripts/arch_agreement.py [ARCH ...]
(run from the repository root; EDGE_HOME defaults to a temporary folder)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

home = Path(os.environ.setdefault("EDGE_HOME", tempfile.mkdtemp(prefix="edge-archs-")))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_models import ARCHS, make_tiny_hf  # noqa: E402

from edge import converters  # noqa: E402
from edge.converters import adapt, to_gguf  # noqa: E402
from edge.store import Store  # noqa: E402

QUANTS = {"gguf": ["q8_0"], "onnx": ["int8"], "mlx": ["8bit"]}


def agreement_row(gguf: Path, name: str) -> str:
    """`edge import` the GGUF as `name`, convert it to every format with the quality gate, and give
    the table cells: top-1 agreement per format (and the ONNX graph kind), seconds taken."""
    Store().import_path(gguf, name=name, force=True)
    t0 = time.perf_counter()
    res = {r.format: r for r in converters.convert(source=name, to=tuple(QUANTS), quant=QUANTS, progress=False,
                                                   force=True)}
    agree = {f: f"{r.quality['top1_agreement']:.3f}" for f, r in res.items()}
    kind = next((a.manifest.get("converter", {}).get("onnx_graph") for a in Store().artifacts(name)
                 if a.format == "onnx"), "?")
    return f"{agree['gguf']} | {agree['onnx']} ({kind}) | {agree['mlx']} | {time.perf_counter() - t0:.1f}"


def main(specs: list[str]) -> None:
    print("| arch | tokenizer | gguf q8_0 | onnx int8 (graph) | mlx 8bit | seconds |")
    print("|---|---|---|---|---|---|")
    for spec in specs or [*ARCHS, "gemma3:spm", "minicpm:spm"]:
        arch, _, tok = spec.partition(":")
        tok = tok or "bpe"
        work = home / "src" / f"{arch}-{tok}"
        hf = make_tiny_hf(arch, work / "hf", tokenizer=tok)
        if adapt.needs_copy(hf):  # MobileLLM: its GGUF is a Llama one, as `edge convert` writes it
            hf = adapt.write_copy(hf, work / "adapted")
        gguf = to_gguf.float_gguf(hf, work / f"{arch}-f32.gguf", "f32")
        print(f"| {arch} | {tok} | {agreement_row(gguf, f'imp-{arch}-{tok}')} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
