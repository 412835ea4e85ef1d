"""GGUF file -> fp32 Hugging Face folder, cached in the store as `<model>/hf-fp32/`.

transformers dequantizes the weights (`gguf_file=`), or, for architectures its GGUF
loader does not know (WEIGHTS: MiniCPM), the gguf library does (gguf_tensors.py). The tokenizer of a
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

from .source import Source, check_gguf_architecture, from_hf_folder, write_chat_template
from .work import no_tqdm, null_step, publish, work_dir

# llama.cpp pre-tokenizer name -> the `tokenizers` pre-tokenizer it stands for.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"


def _split(regex: str) -> dict:
    """A regex split then byte-level mapping: how Llama 3, Qwen and Phi-4 tokenizer.json files say it."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {**_BYTE_LEVEL, "use_regex": False}]}


def _llama3_like(digits: str) -> dict:
    return _split(_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + digits
                  + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
PRE_TOKENIZERS = {
    "gpt-2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "llama-bpe": _llama3_like("{1,3}"),     # Llama 3.x
    "qwen2": _llama3_like(""),              # Qwen2, Qwen2.5, Qwen3: one digit per token
    "gpt-4o": _split(                       # Phi-4-mini (o200k)
        rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
        rf"{_CONTRACTIONS}?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types that are added tokens

# llama.cpp strips the whitespace after special tokens of models named Phi-3 (as Phi-3's own
# tokenizer does), all but these; the rebuilt tokenizer does the same so both tokenize alike.
RSTRIP_NAMES, NO_RSTRIP = ("phi-3", "phi3"), ("<unk>", "<s>", "<|endoftext|>")

_TOKEN_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")


def from_gguf(path: Path, name: str, store: Store, progress=None, license=None, parameters=None) -> Source:
    """The cached Hugging Face folder of a GGUF file, built on first use."""
    from edge.gguf_header import read_info

    info = read_info(path)  # raises BadModelFile on a corrupt or truncated file
    check_gguf_architecture(info)  # before hashing or dequantizing: both take minutes on a large file
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


# Config fields transformers' GGUF loader leaves at their defaults, set from the GGUF header the
# way llama.cpp reads it, so the dequantized model computes what the GGUF computes.
def _head_dim(meta: dict, arch: str) -> dict:
    key = meta.get(f"{arch}.attention.key_length")
    return {"head_dim": key} if key else {}


def _gemma(meta: dict, arch: str) -> dict:
    out = _head_dim(meta, arch)
    d, heads = meta.get(f"{arch}.embedding_length"), meta.get(f"{arch}.attention.head_count")
    # llama.cpp scales attention by 1/sqrt(head_dim), except for the 27B models (46 / 62 layers).
    big = meta.get(f"{arch}.block_count") in (46, 62) and d and heads
    scalar = d // heads if big else out.get("head_dim")
    if scalar:
        out["query_pre_attn_scalar"] = scalar
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        out[key] = meta.get(f"{arch}.{key}")  # absent means none (Gemma 3)
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        out["rope_scaling"] = {"rope_type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    return out


def _phi3(meta: dict, arch: str, path: Path) -> dict:
    out = {}
    d, heads = meta.get(f"{arch}.embedding_length"), meta.get(f"{arch}.attention.head_count")
    rot = meta.get(f"{arch}.rope.dimension_count")
    if rot and d and heads and rot != d // heads:
        out["partial_rotary_factor"] = rot * heads / d  # Phi-4-mini rotates 3/4 of each head
    orig = meta.get(f"{arch}.rope.scaling.original_context_length")
    if orig:
        out["original_max_position_embeddings"] = orig
    out["sliding_window"] = meta.get(f"{arch}.attention.sliding_window") or None  # 0: none (Phi-4)
    factors = _tensors(path, ("rope_factors_long.weight", "rope_factors_short.weight"))
    if len(factors) == 2:  # Phi-3.5 / Phi-4 long-context rope: the factors are tensors in a GGUF
        # Exactly these three keys: Phi3Config checks them when the saved config.json is read back.
        out["rope_scaling"] = {"type": "longrope", "long_factor": factors["rope_factors_long.weight"],
                               "short_factor": factors["rope_factors_short.weight"]}
    return out


CONFIG_FIXES = {
    "qwen3": lambda meta, path: _head_dim(meta, "qwen3"),
    "gemma2": lambda meta, path: _gemma(meta, "gemma2"),
    "gemma3": lambda meta, path: _gemma(meta, "gemma3"),
    "phi3": lambda meta, path: _phi3(meta, "phi3", path),
}


def _tensors(path: Path, names: tuple) -> dict:
    """Small float tensors of a GGUF file, as lists, by name."""
    from gguf import GGUFReader

    return {t.name: [float(x) for x in t.data] for t in GGUFReader(str(path)).tensors if t.name in names}


def _config(path: Path, info):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    fix = CONFIG_FIXES.get(info.architecture)
    for key, value in (fix(info.metadata, path) if fix else {}).items():
        setattr(config, key, value)
    return config


def dequantize(path: Path, out: Path, info) -> None:
    WEIGHTS.get(info.architecture, _transformers_weights)(path, out, info)
    if info.metadata.get("tokenizer.ggml.model") == "gpt2":
        _byte_level_tokenizer(path, out, info)
    else:
        _transformers_tokenizer(path, out, info)
        if info.metadata.get("tokenizer.ggml.model") == "llama":
            _sentencepiece_model(path, out, info)
    write_chat_template(out)


def _transformers_weights(path: Path, out: Path, info) -> None:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with no_tqdm():
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                         config=_config(path, info))
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConversionError(f"transformers could not read {path} ({str(exc).splitlines()[0][:200]}).",
                              "Convert from the Hugging Face folder of this model instead.") from None
    model.save_pretrained(out, safe_serialization=True)
    del model


def _minicpm_weights(path: Path, out: Path, info) -> None:
    """A MiniCPM folder: weights through the gguf library, config.json from the header.

    llama.cpp stores MiniCPM's scales as embedding_scale = scale_emb, residual_scale =
    scale_depth / sqrt(layers) and logit_scale = hidden / dim_model_base.
    """
    import math

    from safetensors.numpy import save_file

    from . import gguf_tensors

    meta, a = info.metadata, info.architecture
    n, heads = int(meta[f"{a}.block_count"]), int(meta[f"{a}.attention.head_count"])
    kv = int(meta.get(f"{a}.attention.head_count_kv") or heads)
    try:
        weights, extra = gguf_tensors.read(path, a, n, heads, kv)
    except (KeyError, ValueError, NotImplementedError) as exc:
        raise ConversionError(f"Could not read the weights of {path} ({str(exc).splitlines()[0][:200]}).",
                              "Convert from the Hugging Face folder of this model instead.") from None
    d = int(meta[f"{a}.embedding_length"])
    base = d / float(meta.get(f"{a}.logit_scale") or 1.0)
    cfg = {
        "architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_act": "silu",
        "hidden_size": d, "intermediate_size": int(meta[f"{a}.feed_forward_length"]),
        "num_hidden_layers": n, "num_attention_heads": heads, "num_key_value_heads": kv,
        "max_position_embeddings": int(meta.get(f"{a}.context_length") or 4096),
        "rms_norm_eps": float(meta.get(f"{a}.attention.layer_norm_rms_epsilon") or 1e-5),
        "rope_theta": float(meta.get(f"{a}.rope.freq_base") or 10000.0),
        "vocab_size": int(weights["model.embed_tokens.weight"].shape[0]),
        "scale_emb": float(meta.get(f"{a}.embedding_scale") or 1.0),
        "scale_depth": float(meta.get(f"{a}.residual_scale") or 1.0) * math.sqrt(n),
        "dim_model_base": round(base) if abs(base - round(base)) < 1e-3 else base,
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }
    if len(extra) == 2:  # MiniCPM4's long-context rope: the factors are tensors in a GGUF
        cfg["rope_scaling"] = {"rope_type": "longrope",
                               "long_factor": [float(x) for x in extra["rope_factors_long.weight"]],
                               "short_factor": [float(x) for x in extra["rope_factors_short.weight"]],
                               "original_max_position_embeddings": meta.get(f"{a}.rope.scaling.original_context_length")
                               or cfg["max_position_embeddings"]}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


# llama.cpp architecture -> how its weights become a Hugging Face folder, where transformers'
# GGUF loader does not read it (default: transformers dequantizes).
WEIGHTS = {"minicpm": _minicpm_weights}
# llama.cpp architecture -> the one transformers' GGUF tokenizer loader reads its vocabulary as.
TOKENIZER_AS = {"minicpm": "llama"}


def _transformers_tokenizer(path: Path, out: Path, info) -> None:
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        if info.architecture in TOKENIZER_AS:
            path = _vocab_only(path, Path(tmp) / "vocab.gguf", TOKENIZER_AS[info.architecture])
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        tok.save_pretrained(out)
    # transformers saves the GGUF file itself as the "sentencepiece model": drop that copy.
    (out / "tokenizer.model").unlink(missing_ok=True)


def _vocab_only(path: Path, dest: Path, arch: str) -> Path:
    """A GGUF file with `path`'s general and tokenizer keys only, as architecture `arch` (no tensors)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(str(path))
    w = GGUFWriter(str(dest), arch)
    for name, f in reader.fields.items():
        if not name.startswith(("general.", "tokenizer.")) or name == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return dest


def _sentencepiece_model(path: Path, out: Path, info) -> None:
    """Write tokenizer.model, the SentencePiece model of a "llama" (SentencePiece) GGUF vocabulary.

    llama.cpp's converter reads Gemma, Phi-3 and SentencePiece Llama vocabularies only from this
    file, so converting the dequantized folder back to GGUF needs it. GGUF token types use
    SentencePiece's numbering (normal 1, unknown 2, control 3, user-defined 4, unused 5, byte 6).
    """
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as pb

    meta, tables = info.metadata, _token_tables(path)
    tokens = tables["tokenizer.ggml.tokens"]
    scores = tables.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    types = tables.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = 6 in types
    for key, field in (("unknown", "unk_id"), ("bos", "bos_id"), ("eos", "eos_id"), ("padding", "pad_id")):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        setattr(m.trainer_spec, field, i if i is not None else -1)
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    seen = set()
    for i, (t, score, ty) in enumerate(zip(tokens, scores, types)):
        ty = int(ty) if 1 <= int(ty) <= 6 else 1
        if t in seen:  # SentencePiece pieces are unique; a repeated one can only be a placeholder
            t, ty = f"<unused_repeat_{i}>", 5
        seen.add(t)
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = t, float(score), ty
    data = m.SerializeToString()
    try:
        SentencePieceProcessor(model_proto=data)
    except (RuntimeError, OSError) as exc:
        raise ConversionError(f"The vocabulary of {path} does not make a SentencePiece model ({exc}).",
                              "Convert from the Hugging Face folder of this model instead.") from None
    (out / "tokenizer.model").write_bytes(data)


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
    name = str(meta.get("general.name") or "").lower()
    rstrip = any(n in name for n in RSTRIP_NAMES)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, rstrip=rstrip and t not in NO_RSTRIP)
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
