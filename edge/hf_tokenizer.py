"""A Hugging Face `tokenizer.json` tokenizer for the backends that own their loop.

Used by the ONNX Runtime and MLX backends (llama.cpp carries its own). Built
on the `tokenizers` library only, never transformers. Besides encode/decode it
gives each token's raw bytes, so the shared generation loop can stream UTF-8
safely when one character spans several byte-level tokens, and it reads the
special tokens and end-of-sequence ids from the files that sit next to
tokenizer.json (tokenizer_config.json, generation_config.json, config.json,
special_tokens_map.json).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from .errors import BadModelFile

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_HINT = "Re-convert the model, or put the tokenizer.json that came with it back in the folder."


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadModelFile(f"{path} is not valid JSON ({exc}).", _HINT)
    return data if isinstance(data, dict) else {}


def _token_text(value) -> str:
    """A special token as written in tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, dict):
        return str(value.get("content") or "")
    return str(value) if value else ""


def _ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if v is not None]
    return [int(value)]


class HFTokenizer:
    """tokenize / detokenize / token_bytes / special tokens for one tokenizer.json."""

    def __init__(self, tokenizer_json: Path, folder: Path | None = None):
        from tokenizers import Tokenizer

        tokenizer_json = Path(tokenizer_json)
        folder = Path(folder) if folder else tokenizer_json.parent
        if not tokenizer_json.is_file():
            raise BadModelFile(f"The tokenizer file {tokenizer_json} is missing.", _HINT)
        try:
            self._tok = Tokenizer.from_file(str(tokenizer_json))
            spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise BadModelFile(f"{tokenizer_json} is not a valid tokenizer.json ({str(exc).splitlines()[0][:120]}).", _HINT)
        # A second instance that never matches special tokens in text, for special=False.
        self._plain = Tokenizer.from_str(self._tok.to_str())
        self._plain.encode_special_tokens = True

        self.config = _read_json(folder / "tokenizer_config.json")
        specials = _read_json(folder / "special_tokens_map.json")
        generation = _read_json(folder / "generation_config.json")
        model_config = _read_json(folder / "config.json")

        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_token = _token_text(self.config.get("bos_token") or specials.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token") or specials.get("eos_token"))
        self.chat_template = self.config.get("chat_template") if isinstance(self.config.get("chat_template"), str) else None

        # generation_config.json is what generate() stops on in transformers; the
        # others are fallbacks for folders that lack it.
        eos = _ids(generation.get("eos_token_id")) or _ids(model_config.get("eos_token_id"))
        if not eos and self.eos_token and self._tok.token_to_id(self.eos_token) is not None:
            eos = [self._tok.token_to_id(self.eos_token)]
        self.eos_ids = frozenset(i for i in eos if 0 <= i < self.vocab_size)
        self.bos_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        # transformers applies tokenizer_config's add_bos_token over the post-processor.
        self._add_special = self.config.get("add_bos_token") is not False

        self._special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        decoders = json.dumps(spec.get("decoder") or {})
        self._byte_level = '"ByteLevel"' in decoders
        self._metaspace = '"Metaspace"' in decoders or '"\\u2581"' in decoders or "\u2581" in decoders
        self._bytes: dict[int, bytes] = {}

    # -- text <-> ids ---------------------------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of text; with special=True, special tokens written in the
        text are recognised and the tokenizer's own BOS rule is applied."""
        if special:
            ids = self._tok.encode(text, add_special_tokens=self._add_special).ids
            # A template that writes the BOS itself must not get a second one.
            if self.bos_id is not None and len(ids) > 1 and ids[0] == ids[1] == self.bos_id:
                del ids[0]
            return ids
        return self._plain.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes a token stands for (may be part of a UTF-8 character)."""
        b = self._bytes.get(token)
        if b is None:
            b = self._bytes[token] = self._compute_bytes(int(token))
        return b

    def _compute_bytes(self, token: int) -> bytes:
        piece = self._tok.id_to_token(token)
        if piece is None:
            return b""
        if piece in self._special:
            return piece.encode("utf-8")
        m = _BYTE_TOKEN.fullmatch(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        if self._metaspace and not self._byte_level:
            return piece.replace("\u2581", " ").encode("utf-8")
        if self._byte_level:
            table = _unicode_to_byte()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
        # Added (non-special) tokens are stored as plain text.
        return self._tok.decode([token], skip_special_tokens=False).encode("utf-8")

    def token_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)
