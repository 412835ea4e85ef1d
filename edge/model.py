"""The model object behind `edge.load`: resolve, choose, load, then chat.

This is the one place where store, selection, guard and a backend meet; the
CLI, the server and the apps all go through it.
"""
from __future__ import annotations

import time
from dataclasses import fields
from typing import Iterator

from . import backends
from .config import GenerationOptions, LoadOptions, check_names
from .errors import ContextTooLong, InvalidOption
from .select import Choice, choose
from .store import Store


class Model:
    """A loaded model: `chat`, `stream_chat`, `generate`, `stream`, `batch`."""

    def __init__(self, name: str, choice: Choice, backend, load_s: float, guard=None):
        self.name = name
        # guard: False/None (off), True (the shipped threshold), a float threshold, or a Guard object.
        self._guard_setting = guard
        self._guard = None
        self.last_verdict = None
        self.blocked = 0
        # A model's own default system prompt, like an Ollama Modelfile's SYSTEM line.
        self.default_system = family_defaults(name, choice.artifact).get("system_prompt")
        self.choice = choice
        self.backend = backend
        self.load_s = load_s
        self._down: str | None = None  # why this model refuses requests after losing an RPC worker

    # -- info --------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.choice.backend

    @property
    def artifact(self):
        return self.choice.artifact

    @property
    def stats(self):
        return self.backend.last_stats

    @property
    def devices(self) -> list[dict] | None:
        """With RPC workers: each device (this one first) and the layers it holds; else None."""
        return self.choice.split

    def recover(self) -> str:
        """After an RPC worker went away: reload on this device alone if the model fits, else refuse from now on."""
        from .errors import EdgeError

        if not self.choice.split:
            return "nothing to recover"
        try:
            self.backend.close()
        except Exception:
            pass
        lo = self.backend.load_options
        try:
            replacement = load(self._source, self._forced, device=self._device, n_ctx=lo.n_ctx, threads=lo.threads,
                               batch_size=lo.batch_size)
        except EdgeError as exc:
            self._down = (f"{self.name} was split across RPC workers, one of them went away, and it does not "
                          f"fit this device alone ({exc.message})")
            return self._down
        self.choice, self.backend, self.load_s = replacement.choice, replacement.backend, replacement.load_s
        return f"{self.name} reloaded on this device alone after an RPC worker went away"

    def _check_up(self) -> None:
        if self._down:
            from .rpc import WorkerLost

            raise WorkerLost(self._down + ".", "Restart the worker and this edge, or use a smaller model.")

    def tokenize(self, text: str) -> list[int]:
        return self.backend.tokenize(text)

    def with_system(self, messages: list[dict], system: str | None = None) -> list[dict]:
        """Messages with `system` (or the model's default system prompt) in front."""
        if system:
            return [{"role": "system", "content": system}] + [m for m in messages if m.get("role") != "system"]
        if self.default_system and not any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            return [{"role": "system", "content": self.default_system}] + list(messages)
        return list(messages)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, tools=None,
                            system: str | None = None) -> str:
        """The prompt text for messages, with the model's default system prompt unless one is given."""
        return self.backend.apply_chat_template(self.with_system(messages, system), add_generation_prompt, tools=tools)

    # -- guard -----------------------------------------------------------------
    @property
    def guard(self):
        """The prompt guard in front of this model, or None when it is off."""
        g = self._guard_setting
        if self._guard is None and g is not None and g is not False:
            from .guard import Guard

            if g is True:
                self._guard = Guard.default()
            elif isinstance(g, (int, float)):
                self._guard = Guard(threshold=float(g))
            else:
                self._guard = g
        return self._guard

    def screen(self, text: str | None = None, messages: list[dict] | None = None, system: str | None = None):
        """Check user-controlled text with the guard; the verdict, or None when the guard is off.

        edge.guard.screen_messages decides what is screened: a raw prompt, every
        message of a chat whatever its role, and a system prompt the caller gave.
        """
        guard = self.guard
        if guard is None:
            return None
        from .guard import screen_messages

        v = screen_messages(guard, messages, system=system, prompt=text)
        if v is None:
            return None
        self.last_verdict = v
        if v.unsafe:
            self.blocked += 1
        return v

    def _refuse(self, verdict) -> Iterator[str]:
        from .backends.base import Stats

        self.backend.last_stats = Stats(finish_reason="guard")
        yield verdict.refusal

    # -- generation -----------------------------------------------------------
    def stream(self, prompt: str | list[int], *, _screened: bool = False, **gen) -> Iterator[str]:
        """Stream the raw completion of a prompt (no chat template)."""
        if isinstance(prompt, str) and not prompt.strip() and not gen.pop("allow_empty", False):
            raise InvalidOption("The prompt is empty.", "Pass some text to generate from.")
        opts = GenerationOptions.from_kwargs(**gen)
        self._check_up()
        self.last_verdict = None
        if isinstance(prompt, str) and not _screened:
            v = self.screen(prompt)
            if v is not None and v.unsafe:
                yield from self._refuse(v)
                return
        for chunk in self.backend.generate(prompt, opts):
            yield chunk.text

    def generate(self, prompt: str | list[int], **gen) -> str:
        return "".join(self.stream(prompt, **gen))

    def stream_chat(self, messages: list[dict], system: str | None = None, screen_only: list[dict] | None = None,
                    **gen) -> Iterator[str]:
        """Stream the assistant's reply to a list of {'role', 'content'} messages.

        `screen_only`: the messages that hold user-controlled text, for a caller that built
        the others itself (a tool-calling prompt) or screened them already; default: all.
        """
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last is not None and not str(last.get("content", "")).strip():
            raise InvalidOption("The prompt is empty.", "Pass some text to generate from.")
        self.last_verdict = None
        # Every message and the caller's system prompt are screened; the template and default system prompt are ours.
        v = self.screen(messages=messages if screen_only is None else screen_only, system=system)
        if v is not None and v.unsafe:
            yield from self._refuse(v)
            return
        prompt = self.apply_chat_template(messages, system=system)
        verdict = self.last_verdict
        yield from self.stream(prompt, _screened=True, **gen)
        self.last_verdict = verdict

    def chat(self, messages: list[dict], **gen) -> str:
        return "".join(self.stream_chat(messages, **gen))

    def batch(self, prompts: list, **gen) -> list[str]:
        """Complete several prompts together; returns the texts in order.

        Each item is prompt text, token ids, or a list of chat messages (rendered
        with the chat template). On a backend that batches (llama.cpp loaded with
        `parallel` > 1) up to `parallel` of them are decoded in each step, and
        each gets the tokens it would get alone; otherwise they run one by one.
        """
        from .batching import Engine, Request

        items, out = [], [None] * len(prompts)
        for i, p in enumerate(prompts):
            if isinstance(p, (list, tuple)) and p and isinstance(p[0], dict):
                last = next((m for m in reversed(p) if m.get("role") == "user"), None)
                v = self.screen(str(last.get("content", ""))) if last is not None else None
                text = self.apply_chat_template(list(p))
            else:
                text = p if isinstance(p, str) else list(p)
                v = self.screen(text) if isinstance(text, str) else None
            if v is not None and v.unsafe:
                out[i] = v.refusal
            else:
                items.append((i, text))
        if not getattr(self.backend, "can_batch", False) or getattr(self.backend, "n_seq", 1) < 2:
            for i, text in items:
                out[i] = "".join(self.stream(text, _screened=True, **gen))
            return out
        opts = GenerationOptions.from_kwargs(**gen)
        pieces = {i: [] for i, _ in items}
        errors: list[BaseException] = []
        engine = Engine(self.backend)
        try:
            for i, text in items:
                engine.add(Request(text, opts, on_chunk=lambda c, i=i: pieces[i].append(c.text),
                                   on_error=errors.append))
            while engine.busy() and not errors:
                engine.step()
        finally:
            self.backend.reset()  # the engine used every sequence; the single-stream path starts clean
        if errors:
            raise errors[0]
        for i, parts in pieces.items():
            out[i] = "".join(parts)
        return out

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def family_defaults(name: str, artifact) -> dict:
    """The catalog entry whose defaults (system prompt) apply to a model: its own, or for an
    imported GGUF, that of the catalog model of the same family and size (general.basename,
    general.size_label), so an imported copy behaves like the catalog's."""
    from edge.models import catalog

    cat = catalog()
    if name in cat:
        return cat[name]
    if artifact is None or artifact.format != "gguf":
        return {}
    from .errors import BadModelFile
    from .gguf_header import read_info

    try:
        meta = read_info(artifact.main_path).metadata
    except (BadModelFile, OSError):
        return {}
    base = str(meta.get("general.basename") or "").lower()
    if not base:
        return {}
    prefix = "-".join(p for p in (base, str(meta.get("general.size_label") or "").lower()) if p)
    same = sorted(k for k in cat if k == prefix or k.startswith(prefix + "-"))
    # An instruct model of the family first: a chat template means one.
    same.sort(key=lambda k: "instruct" not in k)
    return cat[same[0]] if same else {}


def load(model: str | None = None, backend: str | None = None, **options) -> Model:
    load_names = {f.name for f in fields(LoadOptions)}
    check_names(options, load_names | {"guard", "device", "profile"}, "load option")
    lo = LoadOptions(**{k: v for k, v in options.items() if k in load_names and v is not None})
    ref = Store().resolve(model)
    choice = choose(ref, backend, lo, device=options.get("device"), profile=options.get("profile"))
    # Selection picks threads and GPU layers for the device unless the caller set them.
    if options.get("threads") is None:
        lo.threads = choice.threads
    if options.get("gpu_layers") is None:
        lo.gpu_layers = choice.gpu_layers
    if lo.parallel == 0:
        lo.parallel = choice.parallel
    art = choice.artifact
    if art.context_length and lo.n_ctx > art.context_length:
        raise ContextTooLong(
            f"Context length {lo.n_ctx} is over {ref.name}'s maximum of {art.context_length}.",
            f"Pass --ctx {art.context_length} or less.",
        )
    art.verify(full=lo.verify)
    t0 = time.perf_counter()
    module = backends.get(choice.backend)
    if choice.split:
        from .rpc.host import SplitBackend

        layers = tuple(d["n_layers"] for d in choice.split[1:])
        instance = SplitBackend(art, lo, module.Options(rpc_layers=layers))
    else:
        instance = module.Backend(art, lo, module.Options())
    m = Model(ref.name, choice, instance, time.perf_counter() - t0, guard=options.get("guard"))
    m._source, m._forced, m._device = model, backend, options.get("device") or options.get("profile")
    return m
