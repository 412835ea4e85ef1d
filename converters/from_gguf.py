"""GGUF file -> fp32 Hugging Face folder, cached in the store as `<model>/hf-fp32/`.

transformers dequantizes the weights (`gguf_file=`). The tokenizer of a
byte-level BPE GGUF ("gpt2" tokenizer model) is rebuilt here from the GGUF's
token table and merges with `tokenizers`, which takes a second where
transformers' own GGUF tokenizer conversion takes tens of seconds and loses
the pre-tokenizer; other tokenizer models go through transformers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from edge import manifest as mf
from edge.errors import BadModelFile, ConversionError
from edge.formats import GGUF
from edge.store import HF, Store, safe_name

from .source import Source, from_hf_folder, write_chat_template
from .work import no_tqdm, null_step, publish, work_dir

# llama.cpp pre-tokenizer name -> the `tokenizers` pre-tokenizer it stands for.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt-2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types that are added tokens

_TOKEN_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")


def from_gguf(path: Path, name: str, store: Store, progress=None, license=None, parameters=None) -> Source:
    """The cached Hugging Face folder of a GGUF file, built on first use."""
    from edge.gguf_header import read_info

    info = read_info(path)  # raises BadModelFile on a corrupt or truncated file
    name = safe_name(name)
    digest = mf.sha256_file(path)
    folder = store.artifact_dir(name, HF, "fp32")
    if (folder / mf.FILENAME).is_file():
        try:
            man = mf.read(folder)
            if (man.get(mf.K_SOURCE) or {}).get("sha256") == digest:
                mf.verify(folder, man)
                return _source(folder, name, path, digest, man)
        except BadModelFile:
            pass  # stale or damaged cache: rebuild it below
    step = progress.step if progress else null_step
    with step(f"{name}: GGUF {info.quant} -> Hugging Face fp32"):
        t0 = time.perf_counter()
        with work_dir(store, f"{name}-hf") as tmp:
            dequantize(path, tmp, info)
            src = from_hf_folder(tmp, name, kind=GGUF, origin=str(path), sha256=digest)
            man = {
                mf.K_NAME: name, mf.K_FORMAT: HF, mf.K_QUANT: "fp32", mf.K_ARCH: src.architecture,
                mf.K_PARAMS: parameters or src.parameters, mf.K_CONTEXT: src.context_length,
                mf.K_LICENSE: license or info.metadata.get("general.license"),
                mf.K_SOURCE: src.manifest_source(), mf.K_MAIN: ".", mf.K_TOKENIZER: "tokenizer.json",
                mf.K_CHAT_TEMPLATE: "chat_template.jinja" if (tmp / "chat_template.jinja").exists() else None,
                mf.K_FILES: [mf.describe_file(tmp, p) for p in sorted(tmp.iterdir()) if p.is_file()],
                mf.K_SECONDS: round(time.perf_counter() - t0, 2),
                mf.K_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            mf.write(tmp, man)
            publish(tmp, folder, force=True)
    return _source(folder, name, path, digest, man)


def _source(folder, name, path, digest, man) -> Source:
    src = from_hf_folder(folder, name, kind=GGUF, origin=str(path), sha256=digest)
    src.license = man.get(mf.K_LICENSE)
    src.parameters = man.get(mf.K_PARAMS) or src.parameters
    return src


def dequantize(path: Path, out: Path, info) -> None:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with no_tqdm():
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConversionError(f"transformers could not read {path} ({str(exc).splitlines()[0][:200]}).",
                              "Convert from the Hugging Face folder of this model instead.") from None
    model.save_pretrained(out, safe_serialization=True)
    del model
    if info.metadata.get("tokenizer.ggml.model") == "gpt2":
        _byte_level_tokenizer(path, out, info)
    else:
        _transformers_tokenizer(path, out)
    write_chat_template(out)


def _transformers_tokenizer(path: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.save_pretrained(out)
    # transformers saves the GGUF file itself as the "sentencepiece model": drop that copy.
    (out / "tokenizer.model").unlink(missing_ok=True)


def _token_tables(path: Path) -> dict:
    """Read the token arrays of a GGUF header (the cheap header reader skips them)."""
    from edge.gguf_header import token_tables

    return token_tables(path, _TOKEN_KEYS)


def _byte_level_tokenizer(path: Path, out: Path, info) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    meta = info.metadata
    tables = _token_tables(path)
    tokens = tables["tokenizer.ggml.tokens"]
    types = tables.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in tables.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    pre = meta.get("tokenizer.ggml.pre")
    spec = json.loads(tok.to_str())
    spec["pre_tokenizer"] = PRE_TOKENIZERS.get(pre, _BYTE_LEVEL)
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED])

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=token("bos"), eos_token=token("eos"), unk_token=token("unknown"),
        pad_token=token("padding"), clean_up_tokenization_spaces=False,
        model_max_length=meta.get(f"{info.architecture}.context_length") or 8192,
    )
    if meta.get("tokenizer.chat_template"):
        hf.chat_template = meta["tokenizer.chat_template"]
    hf.save_pretrained(out, save_jinja_files=False)
    cfg = out / "tokenizer_config.json"
    data = json.loads(cfg.read_text())
    data["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    data["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    cfg.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
