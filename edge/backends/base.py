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
    # Whether the backend decodes several sequences in one step (the `Batch` methods
    # below); the server asks this, and serves one request at a time when it is False.
    can_batch: ClassVar[bool] = False
    # True when a token's logits may change with the number of tokens in its batch:
    # the last prompt token is then evaluated alone (see prefill).
    split_last: bool = True
    _prefix_hit: int = 0

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

    def _rewind(self, n: int) -> int:
        """Keep the first n cached positions where the cache can; return how many it kept
        (default: drop everything)."""
        self._reset_cache()
        return 0

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
            common = self._rewind(common) if common > 0 else 0
            if common > 0:
                self._cached = self._cached[:common]
            else:
                self.reset()
        self._prefix_hit = self.last_stats.cached_tokens = common
        # Where a token's logits depend on how many tokens share its batch, the last
        # prompt token goes alone, so its logits are the same whether the rest came
        # from the cache or a fresh batch: a seed then reproduces a reply exactly.
        if self.split_last and len(ids) - common > 1:
            self.forward(ids[common:-1])
            return self.forward(ids[-1:])
        return self.forward(ids[common:])

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
        d = Decoding(self, prompt, opts)
        self.last_stats = d.stats
        d.start()
        logits = self.prefill(d.ids)
        d.stats.cached_tokens = self._prefix_hit
        while True:
            chunks, tok = d.step(logits)
            yield from chunks
            if tok is None:
                break
            logits = self.forward([tok])
        yield from d.finish()


class Decoding:
    """One request's side of the generation loop: sampling, logits hook, stop strings, EOS,
    limits, UTF-8 streaming and timing. `Backend.generate` drives one; a batching engine
    drives several, one per sequence, so both produce the same tokens."""

    def __init__(self, backend: Backend, prompt: str | list[int], opts: GenerationOptions | None = None):
        opts = opts or GenerationOptions()
        self.opts = opts
        self.ids = backend.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        backend.check_prompt(len(self.ids), opts.max_tokens)
        self.backend = backend
        self.stats = Stats(prompt_tokens=len(self.ids))
        self.stats.finish_reason = "length"
        self.sampler = Sampler(opts)
        self.stops = StopMatcher(opts.stop)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._eos = backend.eos_ids
        self._banned = tuple(backend.eos_ids) if opts.ignore_eos else ()
        self.generated: list[int] = []
        self.limit = min(opts.max_tokens, backend.n_ctx - len(self.ids))
        self.done = False
        self._t0 = self._t_first = None

    def start(self) -> None:
        """Mark the moment the prompt starts being evaluated (time to first token counts from here)."""
        self._t0 = time.perf_counter()

    def step(self, logits: np.ndarray) -> tuple[list[Chunk], int | None]:
        """Consume the next-token logits; return the text to emit and the token to feed next (None: finished)."""
        stats = self.stats
        tok = self.sampler(logits, self.generated, self._banned)
        if self._t_first is None:
            self._t_first = time.perf_counter()
            stats.ttft_s = self._t_first - (self._t0 or self._t_first)
            stats.prefill_tok_s = (len(self.ids) - stats.cached_tokens) / max(stats.ttft_s, 1e-9)
        if tok in self._eos:
            stats.finish_reason = "stop"
            return self._end(), None
        self.generated.append(tok)
        text = self.stops.feed(self._utf8.decode(self.backend.token_bytes(tok)))
        out = [Chunk(text, tok)] if text else []
        if self.stops.stopped:
            stats.finish_reason = "stop"
            return out + self._end(), None
        if len(self.generated) >= self.limit:
            return out + self._end(), None
        return out, tok

    def _end(self) -> list[Chunk]:
        self.done = True
        self._t_end = time.perf_counter()
        return []

    def finish(self) -> list[Chunk]:
        """Held-back text once generation ended; fills in the final figures."""
        tail = ""
        if not self.stops.stopped:
            tail = self.stops.flush() + self._utf8.decode(b"", final=True)
        s, n = self.stats, len(self.generated)
        s.completion_tokens = n
        t_end = getattr(self, "_t_end", None) or time.perf_counter()
        if n > 1 and self._t_first is not None:
            s.decode_tok_s = (n - 1) / max(t_end - self._t_first, 1e-9)
        return [Chunk(tail, None)] if tail else []


class HFTokens:
    """Tokenizer methods for backends whose `self.tok` is an edge.hf_tokenizer.HFTokenizer."""

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.tok.tokenize(text, special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tok.detokenize(ids)

    def token_bytes(self, token: int) -> bytes:
        return self.tok.token_bytes(token)
