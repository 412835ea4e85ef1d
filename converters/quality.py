"""The quality gate: does an artifact still behave like its source model?

The source Hugging Face model (fp32, transformers) and each artifact (through
its own edge backend, as the runtime will run it) score the same token ids of
a fixed text (data/eval.txt, several genres). We report the perplexity of
both and the top-1 agreement: the share of positions where both predict the
same next token. The artifact's own tokenizer is checked against the source's
on the same text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVAL_TEXT = Path(__file__).parent / "data" / "eval.txt"
MAX_TOKENS = 1024  # enough for eval.txt with a real tokenizer; tiny models stop at their context



def eval_text() -> str:
    return EVAL_TEXT.read_text()


@dataclass
class Reference:
    """The source model's token ids and logits on the eval text."""

    ids: list[int]
    logits: np.ndarray
    perplexity: float


def perplexity(logits: np.ndarray, ids) -> float:
    """exp of the mean negative log-likelihood of ids[1:] given the logits before them."""
    x = logits[:-1].astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    target = np.asarray(ids[1:])
    nll = -logp[np.arange(len(target)), target].mean()
    return float(math.exp(nll))


def reference(hf_dir: Path, context_length: int | None = None) -> Reference:
    """Score the eval text with the source model in fp32 (transformers), then free it."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from . import reference as models

    hf_logging.set_verbosity_error()  # the eval text may be longer than a tiny model's context
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok(eval_text(), add_special_tokens=False).input_ids[: limit(context_length)]
    model = models.load(hf_dir, torch.float32)  # remote-code architectures as the transformers class they equal
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    del model
    return Reference(ids=list(ids), logits=logits, perplexity=perplexity(logits, ids))


def limit(context_length: int | None) -> int:
    return min(MAX_TOKENS, context_length or MAX_TOKENS)


def evaluate(artifact, ref: Reference) -> dict:
    """Quality figures of `artifact` (a store Artifact, possibly still in its work folder)."""
    from edge.backends import for_scoring, get
    from edge.config import LoadOptions

    backend_mod = get(for_scoring(artifact.format))
    n_ctx = max(len(ref.ids), 16)
    backend = backend_mod.Backend(artifact, LoadOptions(n_ctx=n_ctx, batch_size=n_ctx))
    try:
        own_ids = backend.tokenize(eval_text(), special=False)
        logits = np.asarray(backend.score(ref.ids), dtype=np.float32)
    finally:
        backend.close()
    n_vocab = min(logits.shape[1], ref.logits.shape[1])
    logits, src = logits[:, :n_vocab], ref.logits[:, :n_vocab]
    agree = float((logits.argmax(axis=1) == src.argmax(axis=1)).mean())
    n = len(ref.ids)
    # A tokenizer that adds a BOS token still matches when the rest is equal.
    match = own_ids[:n] == ref.ids or own_ids[1:n + 1] == ref.ids
    return {
        "perplexity": round(perplexity(logits, ref.ids), 4),
        "source_perplexity": round(ref.perplexity, 4),
        "top1_agreement": round(agree, 4),
        "tokens": len(ref.ids),
        "tokenizer_match": match,
        "backend": backend_mod.Backend.name,
    }
