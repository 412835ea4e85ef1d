"""The interface every backend implements, and the generation loop we own.

A backend wraps one inference library. It loads an artifact, tokenizes,
renders the chat template, and computes next-token logits (`forward`). The
loop in `Backend.generate` turns that into a stream of text: sampling, the
logits hook, stop strings, EOS, limits and timing are handled here once for
all backends. A backend knows nothing of guard, tools or selection.
"""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from typing import ClassVar, Iterator, Sequence

import numpy as np

from ..chat_template import render
from ..config import GenerationOptions, LoadOptions
from ..errors import ContextTooLong, InvalidOption
from ..sampling import Sampler
from ..stops import StopMatcher


@dataclass
class Chunk:
    """A piece of generated text and the token that produced it."""

    text: str
    token: int | None = None


@dataclass
class Stats:
    """Figures of the last generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0
    decode_tok_s: float = 0.0
    prefill_tok_s: float = 0.0
    finish_reason: str = "stop"
    cached_tokens: int = 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class BaseOptions:
    """Backend-specific options; each backend subclasses this as `Options`."""


class Backend:
    """Base class: subclasses set `name`, `format` and implement the abstract methods."""

    name: ClassVar[str] = "base"
    format: ClassVar[str] = ""
    Options: ClassVar[type] = BaseOptions

    def __init__(self, artifact, load: LoadOptions | None = None, options=None):
        self.artifact = artifact
        self.load_options = load or LoadOptions()
        self.options = options or self.Options()
        self.last_stats = Stats()
        self._cached: list[int] = []  # token ids whose state is in the KV cache

    # -- model facts (subclasses fill these) --------------------------------
    n_ctx: int = 0
    n_ctx_train: int = 0
    n_vocab: int = 0
    eos_ids: frozenset = frozenset()
    bos_token: str = ""
    eos_token: str = ""
    chat_template: str | None = None

    # -- abstract -----------------------------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def token_bytes(self, token: int) -> bytes:
        """Raw bytes of one token, for streaming UTF-8 safely."""
        return self.detokenize([token]).encode("utf-8")

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        """Append ids to the KV cache; return the logits after the last one (float32, vocab)."""
        raise NotImplementedError

    def _rewind(self, n: int) -> None:
        """Keep only the first n cached positions (default: drop everything)."""
        self._reset_cache()

    def _reset_cache(self) -> None:
        raise NotImplementedError

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ids (n, vocab), from an empty cache; used for perplexity."""
        self.reset()
        rows = [self._forward([ids[0]])]
        for t in ids[1:]:
            rows.append(self._forward([t]))
        self.reset()
        return np.stack(rows)

    def close(self) -> None:
        pass

    # -- shared behaviour ------------------------------------------------------
    def reset(self) -> None:
        self._reset_cache()
        self._cached = []

    def forward(self, ids: Sequence[int]) -> np.ndarray:
        logits = self._forward(ids)
        self._cached.extend(ids)
        return logits

    def _adopt_hf_files(self, tok, artifact, folder, cfg: dict, predicts: str, hint: str) -> None:
        """Context, vocabulary and template facts shared by backends that read Hugging Face files."""
        from pathlib import Path

        lo = self.load_options
        self.n_ctx_train = int(cfg.get("max_position_embeddings") or artifact.context_length or lo.n_ctx)
        if lo.n_ctx > self.n_ctx_train:
            raise ContextTooLong(f"Context length {lo.n_ctx} is over the model's maximum of {self.n_ctx_train}.",
                                 f"Pass --ctx {self.n_ctx_train} or less.")
        self.n_ctx = int(lo.n_ctx)
        if tok.vocab_size > self.n_vocab:
            from ..errors import BadModelFile

            raise BadModelFile(f"The tokenizer has {tok.vocab_size} tokens but {predicts} predicts {self.n_vocab}: "
                               "they belong to different models.", hint)
        self.eos_ids = tok.eos_ids
        self.bos_token, self.eos_token = tok.bos_token, tok.eos_token
        tpl = artifact.file("chat_template") or Path(folder) / "chat_template.jinja"
        self.chat_template = tpl.read_text(encoding="utf-8") if tpl and Path(tpl).is_file() else tok.chat_template

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, tools=None) -> str:
        return render(self.chat_template, messages, add_generation_prompt,
                      bos_token=self.bos_token, eos_token=self.eos_token, tools=tools)

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Bring the cache to `ids`, reusing the longest cached prefix; return last logits."""
        common = 0
        for a, b in zip(self._cached, ids):
            if a != b:
                break
            common += 1
        if common == len(ids):
            common -= 1  # at least one token must be evaluated to get logits
        if common < len(self._cached):
            if common > 0:
                self._rewind(common)
                self._cached = self._cached[:common]
            else:
                self.reset()
        self.last_stats.cached_tokens = common
        # The last prompt token always goes alone, so its logits are the same
        # whether the rest came from the cache or a fresh batch: a seed then
        # reproduces a reply exactly.
        if len(ids) - common > 1:
            self.forward(ids[common:-1])
        return self.forward(ids[-1:])

    def check_prompt(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt == 0:
            raise InvalidOption("The prompt is empty.", "Pass some text to generate from.")
        if n_prompt >= self.n_ctx:
            raise ContextTooLong(
                f"The prompt has {n_prompt} tokens; the context holds {self.n_ctx}.",
                "Shorten the prompt or raise the context length (--ctx).",
            )

    def generate(self, prompt: str | list[int], opts: GenerationOptions | None = None) -> Iterator[Chunk]:
        """Stream the completion of `prompt` (text or token ids)."""
        opts = opts or GenerationOptions()
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        self.check_prompt(len(ids), opts.max_tokens)
        stats = self.last_stats = Stats(prompt_tokens=len(ids))
        sampler = Sampler(opts)
        stops = StopMatcher(opts.stop)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        eos = self.eos_ids
        banned = tuple(eos) if opts.ignore_eos else ()
        generated: list[int] = []
        t0 = time.perf_counter()
        logits = self.prefill(ids)
        t_first = None
        stats.finish_reason = "length"
        limit = min(opts.max_tokens, self.n_ctx - len(ids))
        while True:
            tok = sampler(logits, generated, banned)
            if t_first is None:
                t_first = time.perf_counter()
                stats.ttft_s = t_first - t0
                stats.prefill_tok_s = (len(ids) - stats.cached_tokens) / max(stats.ttft_s, 1e-9)
            if tok in eos:
                stats.finish_reason = "stop"
                break
            generated.append(tok)
            text = stops.feed(utf8.decode(self.token_bytes(tok)))
            if text:
                yield Chunk(text, tok)
            if stops.stopped:
                stats.finish_reason = "stop"
                break
            if len(generated) >= limit:
                break
            logits = self.forward([tok])
        t_end = time.perf_counter()
        tail = stops.flush() if not stops.stopped else ""
        tail += utf8.decode(b"", final=True) if not stops.stopped else ""
        if tail:
            yield Chunk(tail, None)
        stats.completion_tokens = len(generated)
        if len(generated) > 1 and t_first is not None:
            stats.decode_tok_s = (len(generated) - 1) / max(t_end - t_first, 1e-9)


class HFTokens:
    """Tokenizer methods for backends whose `self.tok` is an edge.hf_tokenizer.HFTokenizer."""

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.tok.tokenize(text, special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tok.detokenize(ids)

    def token_bytes(self, token: int) -> bytes:
        return self.tok.token_bytes(token)
