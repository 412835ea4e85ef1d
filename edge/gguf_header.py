"""A small, dependency-free reader for GGUF headers.

Reads the metadata key/values and tensor table without loading weights, so
the store can list a model, check its context length and catch a truncated
or foreign file with a clear error before llama.cpp ever opens it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadModelFile

MAGIC = b"GGUF"
ALIGNMENT = 32

# ggml type id -> (elements per block, bytes per block)
GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
    18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}

# general.file_type -> quant name (llama.cpp's LLAMA_FTYPE_MOSTLY_*)
FILE_TYPES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1",
    10: "q2_k", 11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m",
    16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16",
}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict = field(default_factory=dict)
    n_tensors: int = 0
    data_end: int = 0  # bytes the file must have to hold every tensor

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "unknown")

    @property
    def context_length(self) -> int | None:
        return self.metadata.get(f"{self.architecture}.context_length")

    @property
    def quant(self) -> str:
        ft = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ft, f"type{ft}" if ft is not None else "unknown")

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")


class _Reader:
    def __init__(self, f, path):
        self.f, self.path = f, path

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise BadModelFile(
                f"{self.path} is truncated (its header ends early).",
                "Download or convert the file again.",
            )
        return b

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self, skip: bool = False):
        n = self.scalar("<Q")
        if n > 1 << 30:
            raise BadModelFile(f"{self.path} has a corrupt GGUF header.", "Download or convert the file again.")
        if skip:
            self.f.seek(n, 1)
            return None
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_arrays: bool):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, n = self.scalar("<I"), self.scalar("<Q")
            if not keep_arrays:
                # Token tables are huge; skip them quickly.
                if itype in _SCALARS:
                    self.f.seek(struct.calcsize(_SCALARS[itype]) * n, 1)
                else:
                    for _ in range(n):
                        self.value(itype, False) if itype != _STRING else self.string(skip=True)
                return f"<array of {n}>"
            return [self.value(itype, True) for _ in range(n)]
        raise BadModelFile(f"{self.path} has an unknown GGUF value type {vtype}.", "Is it a GGUF file from a newer llama.cpp?")


def read_info(path: str | Path) -> GGUFInfo:
    """Parse a GGUF header; raise BadModelFile for a foreign, corrupt or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise BadModelFile(f"{path} does not exist.", "Check the path, or list models with `edge models`.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise BadModelFile(
                f"{path} is not a GGUF file (wrong magic bytes).",
                "Pass a .gguf file, or convert a Hugging Face folder with `edge convert`.",
            )
        r = _Reader(f, path)
        version = r.scalar("<I")
        if version not in (2, 3):
            raise BadModelFile(f"{path} is GGUF version {version}; edge reads versions 2 and 3.")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        info = GGUFInfo(path=path, version=version, n_tensors=n_tensors)
        for _ in range(n_kv):
            key = r.string()
            info.metadata[key] = r.value(r.scalar("<I"), keep_arrays=False)
        end = 0
        for _ in range(n_tensors):
            r.string(skip=True)
            n_dims = r.scalar("<I")
            dims = [r.scalar("<Q") for _ in range(n_dims)]
            ttype, offset = r.scalar("<I"), r.scalar("<Q")
            block = GGML_BLOCKS.get(ttype)
            if block is None:
                continue
            n = 1
            for d in dims:
                n *= d
            end = max(end, offset + n // block[0] * block[1])
        align = int(info.metadata.get("general.alignment", ALIGNMENT))
        data_start = (f.tell() + align - 1) // align * align
        info.data_end = data_start + end
    if info.data_end > size:
        raise BadModelFile(
            f"{path} is truncated: {size} bytes, its tensors need {info.data_end}.",
            "Download or convert the file again.",
        )
    return info
