"""Tiny random Hugging Face checkpoints, built in code, for fast tests.

`make_tiny_hf(arch, path)` (arch one of ARCHS: llama, qwen2, qwen3, gemma2,
gemma3, phi3, minicpm, mobilellm) writes a complete Hugging Face model folder: config.json, model.safetensors, a real byte-level BPE tokenizer
(tokenizer.json + tokenizer_config.json with a ChatML chat template,
<|im_start|>/<|im_end|> special tokens, <|im_end|> as end of sequence) and
generation_config.json. Weights are random but seeded, so two builds with the
same seed are identical. `tiny_hf_cached(arch)` builds once per process.
`tokenizer="spm"` / `"llama-spm"` give SentencePiece vocabularies (the latter with
tokenizer.model only, as MobileLLM ships), and `as_pytorch_bin(folder)` swaps the
safetensors for pytorch_model.bin (or shards), as older repos have them.

The tokenizer uses the GPT-2 byte-level pre-tokenizer, which llama.cpp,
onnxruntime (through tokenizers) and mlx-lm all handle.
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "minicpm", "mobilellm")

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = (EOT, IM_START, IM_END)
# Special tokens llama.cpp looks up by name when it loads an architecture's vocabulary.
ARCH_SPECIAL_TOKENS = {"phi3": ("<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<s>", "</s>", "<unk>")}
# Phi-3's tokenizer strips the whitespace after its special tokens (all but these), and llama.cpp
# does the same for every Phi-3 GGUF: the tiny Phi-3 tokenizer does too, as the real one.
NO_RSTRIP = {"phi3": ("<s>", "<unk>", EOT)}

# The SmolLM2 / Qwen ChatML template, shortened: no default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

VOCAB_SIZE = 384  # 256 byte symbols + 3 specials + merges

# Several genres so the merges cover ordinary prose, code and numbers.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Once upon a time there was a small model that lived on a phone.",
    "The meeting is at 10:30 on Monday, 4 March 2024, in room 12.",
    "Water boils at 100 degrees Celsius at sea level; ice melts at 0.",
    "User: What is the weather today?\nAssistant: It is sunny and warm.",
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"London\"}}",
]


def _tokenizer(extra: tuple = (), keep: tuple | None = None):
    """Train a small byte-level BPE tokenizer (deterministic for a fixed corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[*SPECIAL_TOKENS, *extra],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if keep is not None:  # strip whitespace after every special token but `keep`
        spec = json.loads(tok.to_str())
        for t in spec["added_tokens"]:
            t["rstrip"] = t["content"] not in keep
        tok = Tokenizer.from_str(json.dumps(spec))
    return tok


def _llama(common):
    from transformers import LlamaConfig

    return LlamaConfig(**common)


def _qwen2(common):
    from transformers import Qwen2Config

    return Qwen2Config(**common, use_sliding_window=False)


def _qwen3(common):
    from transformers import Qwen3Config  # q/k RMSNorm per head, explicit head_dim

    return Qwen3Config(**common, head_dim=16, use_sliding_window=False)


# Gemma: the attention scale is 1/sqrt(head_dim) (query_pre_attn_scalar = head_dim, as llama.cpp
# assumes for every size but 27B), and a sliding window shorter than the test prompt so the
# local layers really differ from the global ones. The scaled, tied embedding makes a wide init
# repeat the input token forever; the default init gives varied greedy output.
_GEMMA = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=8, hidden_activation="gelu_pytorch_tanh",
              initializer_range=0.02)


def _gemma2(common):
    from transformers import Gemma2Config  # local/global alternate; attention and final soft-capping

    # mlx-lm's Gemma 2 has no sliding window (edge caps its context at the window), so here the
    # window is the whole context; the Gemma 3 model tests a window shorter than the prompt.
    return Gemma2Config(**{**common, **_GEMMA, "sliding_window": 256, "max_position_embeddings": 256}, attn_logit_softcapping=50.0, final_logit_softcapping=30.0)


def _gemma3(common):
    from transformers import Gemma3TextConfig  # five local layers per global one, two rope bases, q/k norm

    return Gemma3TextConfig(**{**common, **_GEMMA, "num_hidden_layers": 6}, rope_local_base_freq=10000.0,
                            architectures=["Gemma3ForCausalLM"])


def _phi3(common):
    from transformers import Phi3Config  # packed qkv_proj and gate_up_proj

    return Phi3Config(**common, original_max_position_embeddings=512)


# MiniCPM and MobileLLM are remote code on the Hub (no transformers class): their random weights
# come from a Llama of the same shape, and config.json is then written the way the real
# checkpoints have it (REMOTE_CONFIGS).
def _minicpm(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "transformers_version")}
    # MiniCPM's embedding scale (12); a residual scale larger than its 1.4 / sqrt(40) so two tiny
    # layers still outweigh the scaled, tied embedding (else greedy decoding repeats the input token);
    # the logits divided by hidden / dim_model_base = 4.
    return {**out, "architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm",
            "scale_emb": 12, "scale_depth": 8.0, "dim_model_base": 16}


def _mobilellm(config: dict) -> dict:
    # facebook/MobileLLM-125M's config.json: tied embeddings are `share_embedding`, while
    # tie_word_embeddings stays false; layer_sharing (block repeats) is off in the released models.
    out = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "transformers_version")}
    return {**out, "architectures": ["MobileLLMForCausalLM"], "model_type": "mobilellm",
            "auto_map": {"AutoConfig": "configuration_mobilellm.MobileLLMConfig",
                         "AutoModelForCausalLM": "modeling_mobilellm.MobileLLMForCausalLM"},
            "share_embedding": True, "tie_word_embeddings": False, "layer_sharing": False}


# The tiny MiniCPM keeps the byte-level tokenizer: with no tokenizer.model, edge gives llama.cpp's
# MiniCPM converter (SentencePiece only) that vocabulary; test_archs converts an "spm" MiniCPM too.
REMOTE_CONFIGS = {"minicpm": _minicpm, "mobilellm": _mobilellm}

CONFIGS = {"llama": _llama, "minicpm": _llama, "mobilellm": _llama, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma2, "gemma3": _gemma3, "phi3": _phi3}


def _config(arch: str, vocab_size: int, ids: dict):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=ids[IM_START],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[EOT],
        # A wider init than the default 0.02 gives peaked logits, so greedy
        # decoding is stable and quantization differences are visible.
        initializer_range=0.2,
        dtype="float32",
    )
    if arch not in CONFIGS:
        raise ValueError(f"Unknown tiny architecture '{arch}'; choose one of {ARCHS}.")
    return CONFIGS[arch](common)


def _sentencepiece(path: Path):
    """A small SentencePiece BPE tokenizer with byte fallback, as Gemma and Phi-3.5 ship (tokenizer.model)."""
    import io

    import sentencepiece as spm
    from transformers import GemmaTokenizerFast

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=model, vocab_size=VOCAB_SIZE, model_type="bpe",
        # Gemma's layout: <pad> 0, <eos> 1, <bos> 2, <unk> 3 (transformers' Gemma tokenizer assumes these names).
        byte_fallback=True, hard_vocab_limit=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=list(SPECIAL_TOKENS), add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, minloglevel=2)
    (path / "tokenizer.model").write_bytes(model.getvalue())
    # The end of a turn is <|im_end|> (the generation config's eos), the tokenizer's eos is <eos> as in Gemma.
    return GemmaTokenizerFast(vocab_file=str(path / "tokenizer.model"), bos_token="<bos>", eos_token="<eos>",
                              pad_token="<pad>", unk_token="<unk>", add_bos_token=False, add_eos_token=False,
                              additional_special_tokens=[IM_START, IM_END], model_max_length=512)


def _llama_sentencepiece(path: Path):
    """A SentencePiece BPE model in Llama 2's layout (<unk> 0, <s> 1, </s> 2, a dummy prefix space),
    saved the way Llama 2 era repos ship it (MobileLLM): tokenizer.model and the slow LlamaTokenizer's
    config, no tokenizer.json."""
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=model, vocab_size=VOCAB_SIZE, model_type="bpe",
        byte_fallback=True, hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        control_symbols=list(SPECIAL_TOKENS), add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, minloglevel=2)
    (path / "tokenizer.model").write_bytes(model.getvalue())
    return LlamaTokenizer(vocab_file=str(path / "tokenizer.model"), legacy=False, add_bos_token=False,
                          additional_special_tokens=[IM_START, IM_END], model_max_length=512)


def make_tiny_hf(arch: str, path: Path, seed: int = 0, tokenizer: str = "bpe") -> Path:
    """Write a tiny random `arch` checkpoint with tokenizer into `path`; return `path`.

    tokenizer "bpe" is the byte-level BPE above; "spm" a SentencePiece model (tokenizer.model, with the
    tokenizer.json transformers writes for it); "llama-spm" Llama 2's SentencePiece layout with only
    tokenizer.model (no tokenizer.json), as MobileLLM ships.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"Unknown tiny architecture '{arch}'; choose one of {ARCHS}.")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    if tokenizer in ("spm", "llama-spm"):
        hf_tok = (_sentencepiece if tokenizer == "spm" else _llama_sentencepiece)(path)
        ids = {t: hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        vocab_size = len(hf_tok)
    else:
        raw = _tokenizer(ARCH_SPECIAL_TOKENS.get(arch, ()), NO_RSTRIP.get(arch))
        ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
        vocab_size = raw.get_vocab_size()
        hf_tok = _fast(raw)
    hf_tok.chat_template = CHAT_TEMPLATE
    # Keep the template inside tokenizer_config.json: every converter reads it there.
    hf_tok.save_pretrained(path, save_jinja_files=False)
    cfg_path = path / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text())
    tcfg["add_bos_token"] = False
    tcfg["add_eos_token"] = False
    if arch == "phi3" and tokenizer == "bpe":  # llama.cpp's Phi-3 converter reads a byte-level vocabulary only under this class (as Phi-4's)
        tcfg["tokenizer_class"] = "GPT2Tokenizer"
    cfg_path.write_text(json.dumps(tcfg, indent=2) + "\n")

    config = _config(arch, vocab_size, ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    if arch in REMOTE_CONFIGS:
        cfg_file = path / "config.json"
        cfg_file.write_text(json.dumps(REMOTE_CONFIGS[arch](json.loads(cfg_file.read_text())), indent=2) + "\n")
    GenerationConfig(
        bos_token_id=ids[IM_START], eos_token_id=ids[IM_END], pad_token_id=ids[EOT],
        do_sample=False,
    ).save_pretrained(path)
    return path


def as_pytorch_bin(folder: Path, shards: int = 1) -> Path:
    """Replace `folder`'s model.safetensors by PyTorch weights, as older repos ship them:
    pytorch_model.bin, or `shards` files with pytorch_model.bin.index.json. In the one file tied
    embeddings are saved under both names, sharing memory, as torch.save(model.state_dict()) does;
    shards leave the tied head out, as save_pretrained does."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    state = load_file(str(folder / "model.safetensors"))
    if "lm_head.weight" not in state and shards == 1:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    (folder / "model.safetensors").unlink()
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    keys = list(state)
    names = [f"pytorch_model-{i:05d}-of-{shards:05d}.bin" for i in range(1, shards + 1)]
    weight_map = {k: names[i * shards // len(keys)] for i, k in enumerate(keys)}
    for name in names:
        torch.save({k: state[k] for k in keys if weight_map[k] == name}, folder / name)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _fast(raw):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=EOT,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


_CACHE: dict[tuple[str, int], Path] = {}
_ROOT: list[Path] = []


def tiny_hf_cached(arch: str, seed: int = 0) -> Path:
    """Build the tiny `arch` checkpoint once per process (in a temp dir); treat it as read-only."""
    key = (arch, seed)
    if key not in _CACHE:
        if not _ROOT:
            root = Path(tempfile.mkdtemp(prefix="edge-tiny-"))
            atexit.register(shutil.rmtree, root, True)
            _ROOT.append(root)
        _CACHE[key] = make_tiny_hf(arch, _ROOT[0] / f"tiny-{arch}-{seed}", seed)
    return _CACHE[key]


# Full precision per format: what parity tests compare.
FULL = {"gguf": "f16", "onnx": "fp32", "mlx": "fp16"}


def converted(name: str, source, quants: dict, **options) -> dict:
    """{(format, quant): Artifact} in the session store, converting only what is missing.

    `options` go to converters.convert (e.g. onnx_graph="optimum").
    """
    from edge import converters
    from edge.store import Store

    have = {(a.format, a.quant): a for a in Store().artifacts(name)}
    todo = {f: [q for q in qs if (f, q) not in have] for f, qs in quants.items()}
    todo = {f: qs for f, qs in todo.items() if qs}
    if todo:
        converters.convert(source=str(source), to=tuple(todo), quant=todo, name=name, quality=False, progress=False,
                           **options)
        have = {(a.format, a.quant): a for a in Store().artifacts(name)}
    return have


def tiny(arch: str, quants: dict = FULL) -> dict:
    return converted(f"tiny-{arch}", tiny_hf_cached(arch), {f: [q] if isinstance(q, str) else q for f, q in quants.items()})


def make_tiny_minicpm4(path: Path) -> Path:
    """The tiny MiniCPM with MiniCPM4's long-context rope (longrope: a factor per frequency)."""
    hf = make_tiny_hf("minicpm", path)
    cfg = json.loads((hf / "config.json").read_text())
    half = cfg["hidden_size"] // cfg["num_attention_heads"] // 2
    cfg["rope_scaling"] = {"rope_type": "longrope", "original_max_position_embeddings": cfg["max_position_embeddings"],
                           "short_factor": [1.0 + 0.4 * i for i in range(half)],
                           "long_factor": [2.0 + 0.5 * i for i in range(half)]}
    (hf / "config.json").write_text(json.dumps(cfg))
    return hf
