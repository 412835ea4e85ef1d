"""GGUF header reading: metadata and tensor table, no weights loaded.

The store lists a model, checks its context length and catches a truncated,
foreign or crafted file with `BadModelFile` before llama.cpp ever opens it.
Type ids, block sizes and file types come from the `gguf` package (llama.cpp's
own Python tables); the reader itself is a streaming parser that skips token
tables quickly, and it treats anything it cannot make sense of (unknown
tensor types, bad alignment, sizes past the end of the file) as a bad file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from gguf.constants import (GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType,
                            GGUFValueType, LlamaFileType)

from .errors import BadModelFile

MAGIC = struct.pack("<I", GGUF_MAGIC)
ALIGNMENT = GGUF_DEFAULT_ALIGNMENT
VERSIONS = (2, 3)
MAX_DIMS = 8                 # ggml tensors have at most 4 dimensions; 8 leaves room
MAX_STRING = 1 << 30         # no key, value or tensor name is a GiB long
_HINT = "Download or convert the file again."

_U64 = struct.Struct("<Q")
_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


def quant_name(file_type: int | None) -> str:
    """general.file_type -> edge's quant name (LlamaFileType.MOSTLY_Q4_K_M -> 'q4_k_m')."""
    if file_type is None:
        return "unknown"
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"type{file_type}"
    return name.split("_", 1)[1].lower() if name.startswith(("MOSTLY_", "ALL_")) else name.lower()


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict = field(default_factory=dict)
    n_tensors: int = 0
    data_end: int = 0  # bytes the file must have to hold every tensor

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) and arch else "unknown"

    @property
    def context_length(self) -> int | None:
        n = self.metadata.get(f"{self.architecture}.context_length")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    @property
    def quant(self) -> str:
        ft = self.metadata.get("general.file_type")
        return quant_name(ft if isinstance(ft, int) else None)

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None

    @property
    def name(self) -> str | None:
        n = self.metadata.get("general.name")
        return n if isinstance(n, str) else None


class _Reader:
    def __init__(self, f, path, size: int | None = None):
        self.f, self.path = f, path
        self.size = size if size is not None else Path(path).stat().st_size

    def bad(self, what: str) -> BadModelFile:
        return BadModelFile(f"{self.path} has a corrupt GGUF header ({what}).", _HINT)

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise BadModelFile(f"{self.path} is truncated (its header ends early).", _HINT)
        return b

    def skip(self, n: int) -> None:
        # Seeking past the end is allowed; the next read (or the final size check) reports it.
        self.f.seek(n, 1)

    def skip_strings(self, n: int) -> None:
        """Skip n strings: the token tables, tens of thousands of them, in a tight loop."""
        read, seek, unpack = self.f.read, self.f.seek, _U64.unpack
        for _ in range(n):
            b = read(8)
            if len(b) != 8:
                raise BadModelFile(f"{self.path} is truncated (its header ends early).", _HINT)
            (k,) = unpack(b)
            if k > MAX_STRING:
                raise self.bad(f"a string of {k} bytes")
            seek(k, 1)

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self, skip: bool = False):
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise self.bad(f"a string of {n} bytes")
        if skip:
            self.skip(n)
            return None
        return self.read(n).decode("utf-8", errors="replace")

    def vtype(self) -> GGUFValueType:
        t = self.scalar("<I")
        try:
            return GGUFValueType(t)
        except ValueError:
            raise BadModelFile(f"{self.path} has an unknown GGUF value type {t}.",
                               "Is it a GGUF file from a newer llama.cpp? Upgrade edge, or convert it again.") from None

    def value(self, vtype: GGUFValueType, keep_arrays: bool):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == GGUFValueType.STRING:
            return self.string()
        # An array: element type, count, elements.
        itype, n = self.vtype(), self.scalar("<Q")
        if n > self.size:
            raise self.bad(f"an array of {n} items in a file of {self.size} bytes")
        if not keep_arrays:
            # Token tables are huge; skip them quickly.
            if itype in _SCALARS:
                self.skip(struct.calcsize(_SCALARS[itype]) * n)
            elif itype == GGUFValueType.STRING:
                self.skip_strings(n)
            else:
                for _ in range(n):
                    self.value(itype, False)
            return f"<array of {n}>"
        return [self.value(itype, True) for _ in range(n)]


def _tensor_bytes(r: _Reader, ttype: int, dims: list[int]) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        raise BadModelFile(f"{r.path} holds a tensor of unknown ggml type {ttype}.",
                           "Is it a GGUF file from a newer llama.cpp? Upgrade edge, or convert it again.") from None
    n = 1
    for d in dims:
        n *= d
    if dims and dims[0] % block:
        raise r.bad(f"a {GGMLQuantizationType(ttype).name} tensor row of {dims[0]} values, not a multiple of {block}")
    return n // block * type_size


def _alignment(r: _Reader, metadata: dict) -> int:
    align = metadata.get("general.alignment", ALIGNMENT)
    if not isinstance(align, int) or isinstance(align, bool):
        raise r.bad(f"general.alignment is {type(align).__name__} {str(align)[:40]!r}, not an integer")
    if align <= 0 or align & (align - 1):
        raise r.bad(f"general.alignment {align} is not a positive power of two")
    return align


def read_info(path: str | Path) -> GGUFInfo:
    """Parse a GGUF header; raise BadModelFile for a foreign, corrupt, crafted, unreadable or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise BadModelFile(f"{path} does not exist.", "Check the path, or list models with `edge models`.")
    try:
        return _read_info(path)
    except OSError as exc:
        raise BadModelFile(f"{path} cannot be read ({exc.strerror or exc}).",
                           "Check its permissions, or download or convert it again.") from None


def _read_info(path: Path) -> GGUFInfo:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise BadModelFile(
                f"{path} is not a GGUF file (wrong magic bytes).",
                "Pass a .gguf file, or convert a Hugging Face folder with `edge convert`.",
            )
        r = _Reader(f, path, size)
        version = r.scalar("<I")
        if version not in VERSIONS:
            raise BadModelFile(f"{path} is GGUF version {version}; edge reads versions 2 and 3.", _HINT)
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        # Every key/value and tensor entry takes at least 8 bytes of header.
        if n_tensors > size // 8 or n_kv > size // 8:
            raise r.bad(f"{n_tensors} tensors and {n_kv} keys in a file of {size} bytes")
        info = GGUFInfo(path=path, version=version, n_tensors=n_tensors)
        for _ in range(n_kv):
            key = r.string()
            info.metadata[key] = r.value(r.vtype(), keep_arrays=False)
        align = _alignment(r, info.metadata)
        end = 0
        for _ in range(n_tensors):
            r.string(skip=True)
            n_dims = r.scalar("<I")
            if n_dims > MAX_DIMS:
                raise r.bad(f"a tensor with {n_dims} dimensions")
            dims = [r.scalar("<Q") for _ in range(n_dims)]
            ttype, offset = r.scalar("<I"), r.scalar("<Q")
            if offset % align:
                raise r.bad(f"a tensor offset {offset} not aligned to {align}")
            end = max(end, offset + _tensor_bytes(r, ttype, dims))
        data_start = (f.tell() + align - 1) // align * align
        info.data_end = data_start + end
    if info.data_end > size:
        raise BadModelFile(
            f"{path} is truncated: {size} bytes, its tensors need {info.data_end}.",
            "Download or convert the file again.",
        )
    return info


def token_tables(path: str | Path, keys: tuple[str, ...]) -> dict:
    """The metadata values of `keys` with their arrays read in full (the header reader skips arrays)."""
    path = Path(path)
    out: dict = {}
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise BadModelFile(f"{path} is not a GGUF file.", "Pass a .gguf file.")
        r = _Reader(f, path)
        r.scalar("<I")
        _, n_kv = r.scalar("<Q"), r.scalar("<Q")
        for _ in range(n_kv):
            key = r.string()
            out[key] = r.value(r.vtype(), keep_arrays=key in keys)
            if all(k in out for k in keys):
                break
    return out
