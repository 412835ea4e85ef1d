"""The assistant loop: guard, tool retrieval, a constrained call, execution, a streamed answer.

    with Assistant(AssistantOptions(files_root="~/Documents")) as a:
        turn = a.ask("what is 12 times 7", on_text=print)

Each turn: timers and reminders that came due are announced; the guard
checks the request; edge.tools keeps the relevant local tools and decodes a
schema-valid call (or a plain answer when none applies); the call runs with
a timeout; the model's answer to the results streams out, held to state what the
tools returned (edge.tools.answer).
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from edge.errors import EdgeError, GuardBlocked, ToolError

from . import local_tools

_DIGIT = re.compile(r"\d")



def _o(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class AssistantOptions:
    """How the assistant runs."""

    model: Optional[str] = _o(None, "Model name or path (default: the embedded SmolLM2-135M-Instruct).")
    backend: Optional[str] = _o(None, "Force a backend: llama.cpp, onnx or mlx.")
    guard: bool = _o(True, "Check each request with the prompt guard first.")
    guard_threshold: Optional[float] = _o(None, "Guard score above which a request is refused (default: the guard's own).")
    top_k: int = _o(3, "Tools kept in the prompt for each request.")
    max_tokens: int = _o(96, "Token budget of the spoken or written answer.")
    temperature: float = _o(0.0, "Sampling temperature (0: the same answer every time).")
    tool_timeout: float = _o(10.0, "Seconds a tool may run.")
    files_root: Optional[str] = _o(None, "Folder the file-search tool may read (off when unset).")
    hidden_files: bool = _o(False, "Let file search read hidden files and folders (.env, .ssh, ...).")
    data_dir: Optional[str] = _o(None, "Where timers, reminders and notes are kept (default: $EDGE_HOME/assistant).")
    relevance: float = _o(0.2, "Similarity of the best tool above which a request always gets a tool call.")
    name_bias: float = _o(3.0, "Logit taken off a tool's name in a call per 0.1 of retrieval similarity below the best tool (0: the model alone picks).")
    order_bias: float = _o(2.0, "Logit favouring argument values taken from the request in the order the tool lists them (0: off).")
    n_ctx: int = _o(4096, "Context length the model is loaded with.")


@dataclass
class Turn:
    """One request and everything the assistant did for it."""

    request: str
    transcript: Optional[str] = None        # what speech-to-text heard, for voice turns
    tools: list = field(default_factory=list)         # kept tool names, best first
    tool_calls: list = field(default_factory=list)    # [{"name", "arguments"}]
    tool_results: list = field(default_factory=list)  # [{"name", "result", "error"}]
    answer: str = ""
    blocked: Optional[dict] = None
    error: Optional[str] = None                       # why no call could be made; the conversation goes on
    alarms: list = field(default_factory=list)        # timers/reminders that came due before this turn
    retried: list = field(default_factory=list)       # why the call was tried again, if it was
    grounded: Optional[bool] = None                   # True: model answer held to the results; False: a template
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Assistant:
    """A loaded model plus the local tools; `ask` runs one turn."""

    def __init__(self, options: AssistantOptions | None = None, model=None):
        import edge
        from edge.tools import Registry

        self.options = o = options or AssistantOptions()
        local_tools.configure(data_dir=o.data_dir, files_root=o.files_root, include_hidden=o.hidden_files)
        tools = [t for t in local_tools.TOOLS if o.files_root or t is not local_tools.search_files]
        self.registry = Registry(tools)
        self.guard = self._load_guard() if o.guard else None
        self.model = model or edge.load(o.model, o.backend, n_ctx=o.n_ctx)

    def _load_guard(self):
        try:
            from edge.guard import Guard
        except ImportError:
            raise EdgeError("The prompt guard is not available in this install.",
                            "Install edge with its guard, or pass --no-guard to run without it.") from None
        return Guard(threshold=self.options.guard_threshold)

    def close(self) -> None:
        self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one turn ---------------------------------------------------------------
    def check(self, text: str | None = None, messages: list[dict] | None = None) -> Optional[dict]:
        """The guard's verdict as a dict when it refuses `text` or `messages`, else None."""
        if self.guard is None:
            return None
        from edge.guard import screen_messages

        v = screen_messages(self.guard, messages, prompt=text)
        if v is None or not v.unsafe:
            return None
        return {"category": v.category, "score": round(float(v.score), 4), "refusal": v.refusal}

    def ask(self, text: str, on_text: Callable[[str], None] | None = None, transcript: str | None = None) -> Turn:
        """Answer one request; `on_text` receives the answer as it streams.

        Never raises for what a tool or the model got wrong: the turn reports it
        and the conversation goes on.
        """
        from edge.tools import CallOptions, call

        emit = on_text or (lambda s: None)
        if not text.strip():
            raise EdgeError("The request is empty.", "Type or say what you want.")
        turn = Turn(request=text, transcript=transcript, alarms=self.due())
        t0 = time.perf_counter()
        turn.blocked = self.check(text)
        turn.seconds["guard"] = round(time.perf_counter() - t0, 4)
        if turn.blocked:
            turn.answer = turn.blocked["refusal"]  # a short refusal naming the category
            emit(turn.answer)
            return turn

        o = self.options
        t1 = time.perf_counter()
        # The call and the answer see only this request and its results: shown earlier
        # turns, a small model copies them instead of reading this one. A request with a
        # number always gets a call: every local tool is better at numbers than the model.
        opts = CallOptions(top_k=o.top_k, temperature=o.temperature, execute=True, timeout=o.tool_timeout,
                           answer_tokens=o.max_tokens, ground_numbers=True, ground_strings=True,
                           copy_spans=True, ground_enums=True, name_bias=o.name_bias, order_bias=o.order_bias,
                           relevance=o.relevance, guard=self.guard,
                           tool_choice="required" if _DIGIT.search(text) else "auto")
        try:
            res = call(self.model, text, self.registry, opts, on_text=emit)
        except EdgeError as exc:
            turn.error = str(exc)
            turn.answer = f"Sorry, I could not do that: {exc}"
            emit(turn.answer)
            return turn
        turn.seconds["call"] = round(res.call_s, 3)
        turn.seconds["answer"] = round(res.answer_s, 3)
        turn.seconds["total"] = round(time.perf_counter() - t1, 3)
        turn.tools = [name for name, _ in res.kept]
        turn.tool_calls = [{"name": c.name, "arguments": c.arguments} for c in res.calls]
        turn.tool_results = [{"name": c.name, "result": c.result, "error": c.error} for c in res.calls]
        turn.retried = list(res.retried)
        turn.grounded = res.grounded
        if res.errors and not res.calls:
            turn.error = res.errors[-1]
        turn.answer = (res.answer or "").strip()
        return turn

    def due(self) -> list[dict]:
        """Timers and reminders that came due and were not announced yet (each is returned once)."""
        try:
            return local_tools.due_alarms()
        except ToolError:
            return []  # an unreadable alarms file: the tools say so when asked


def blocked_error(turn: Turn) -> GuardBlocked:
    """The exception form of a refused turn, for callers that prefer raising."""
    return GuardBlocked(f"The guard refused the request ({turn.blocked.get('category')}).", turn.blocked)
