"""Constrained decoding for tool calls: one engine for every backend.

llguidance compiles a grammar (JSON schemas embedded in a Lark grammar) and
gives, at each step, the set of tokens that keep the output valid. The
tokenizer it needs is built from the backend alone (`n_vocab`,
`token_bytes`, `eos_ids`, `tokenize`), so llama.cpp, ONNX and MLX share
it. `Constraint` is a logits hook (GenerationOptions.logits_hook) that
masks forbidden tokens to -inf in place, and can favour argument values
copied from the user's request (`Copy`).
"""
from __future__ import annotations

import copy
import json
import re
import weakref
from typing import Sequence

import numpy as np

from ..errors import MissingExtra, ToolError

# Compact JSON: no free whitespace, so a small model cannot wander in blanks.
JSON_STYLE = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
# Free strings in a call close within this many characters, so a small model caught in
# a loop ("gorilla-gorilla-gorilla-...") still finishes a valid call inside the token
# budget; a schema's own maxLength, enum, const, pattern or format wins.
MAX_STRING = 160
# A list of parallel calls holds at most this many, for the same reason.
MAX_CALLS = 8
# With this few tokens of the budget left, where the grammar allows a token that only
# closes strings, lists and objects, nothing else is allowed: a call whose values run
# long (several free strings, a list the model keeps filling) still ends valid.
CLOSE_RESERVE = 24
# A plain-text answer must not start like JSON or with a blank.
TEXT_RULE = r"/[^\[{\s](.|\n)*/"

# Longest token, in bytes, looked up when matching the request's text to the vocabulary.
COPY_MAX_BYTES = 24
# Where a value copied from the request naturally ends: before closing punctuation, a
# quote, or a word that starts a new phrase ("black as their special request", "Chennai,
# Tamil Nadu in fahrenheit"). Matched on the request right after the copied span.
LINKS = ("in", "as", "for", "with", "and", "or", "but", "to", "from", "at", "on", "by", "please", "using", "that",
         "which", "who", "because", "so", "if", "when", "while", "then", "also")
SPAN_END = re.compile(r"""(?:$|[?!"]|\.(?:\s|$)|'(?:[\s.,?!]|$)|,?\s+(?:%s)\b)""" % "|".join(LINKS), re.I)

# The open "name" value of a call, at the end of the generated text.
_NAME_VALUE = re.compile(rb'"name": "([^"\\]*)$')

_tokenizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_starts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_by_text: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_QUOTES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _llg():
    try:
        import llguidance
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtra("llguidance", "tools", "constrained tool calls") from exc
    return llguidance


class _BackendTokenizer:
    """The duck-typed tokenizer llguidance.TokenizerWrapper expects, from a backend."""

    def __init__(self, backend):
        import llguidance  # noqa: F401  (only to fail early with a clear error)

        n = int(backend.n_vocab)
        self.tokens = [bytes(backend.token_bytes(i) or b"") for i in range(n)]
        eos = sorted(backend.eos_ids) or [n - 1]
        self.eos_token_id = eos[0]
        self.bos_token_id = None
        self.special_token_ids = sorted(set(eos) | _special_ids(backend, self.tokens))
        self._tokenize = backend.tokenize
        # Some tokenizers add BOS to every call; llguidance wants plain text ids.
        self._prefix = len(backend.tokenize("", special=False))

    def __call__(self, s) -> list[int]:
        text = s.decode("utf-8", errors="replace") if isinstance(s, bytes) else s
        return list(self._tokenize(text, special=False))[self._prefix:]


def _special_ids(backend, tokens: list[bytes]) -> set[int]:
    """Control tokens (<|im_start|>, <s>, ...): one id only when specials are parsed."""
    out = set()
    for i, b in enumerate(tokens):
        if len(b) > 2 and b.startswith(b"<") and b.endswith(b">"):
            text = b.decode("utf-8", errors="replace")
            try:
                if backend.tokenize(text, special=True)[-1:] == [i] and backend.tokenize(text, special=False) != [i]:
                    out.add(i)
            except Exception:
                continue
    return out


def json_start(backend) -> np.ndarray:
    """Boolean mask of the tokens whose text starts a JSON call ("{" or "[")."""
    mask = _starts.get(backend)
    if mask is None:
        n = int(backend.n_vocab)
        mask = np.array([(backend.token_bytes(i) or b"")[:1] in (b"{", b"[") for i in range(n)], dtype=bool)
        _starts[backend] = mask
    return mask


def lltokenizer(backend):
    """The llguidance tokenizer of a backend, built once per backend object."""
    llg = _llg()
    tok = _tokenizers.get(backend)
    if tok is None:
        wrapped = _BackendTokenizer(backend)
        tok = llg.LLTokenizer(llg.TokenizerWrapper(wrapped), n_vocab=len(wrapped.tokens),
                              eos_token=sorted(backend.eos_ids) or None)
        _tokenizers[backend] = tok
    return tok


# -- grammars ---------------------------------------------------------------------
def strict(schema):
    """Copy of a schema where objects with listed properties admit no others.

    Validation keeps the tool's own schema; the grammar is stricter so the
    model cannot invent argument names, and free strings end (MAX_STRING).
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k in ("properties", "$defs", "definitions", "patternProperties") and isinstance(v, dict):
            out[k] = {pk: strict(pv) for pk, pv in v.items()}
        elif k in ("default", "enum", "const", "examples"):
            out[k] = copy.deepcopy(v)
        else:
            out[k] = strict(v)
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    if out.get("type") == "string" and not any(k in out for k in ("maxLength", "enum", "const", "pattern", "format")):
        out["maxLength"] = max(MAX_STRING, int(out.get("minLength", 0)))
    return out


# Spans of the request offered as the values of a free-text argument (ground_schema):
# requests longer than this many words keep free text (the list of spans grows as the
# square of the length), and a span holds at most this many words.
SPAN_MAX_REQUEST_WORDS = 64
SPAN_MAX_WORDS = 24
_SPAN_WORD = re.compile(r"[^\W_]+(?:['\u2019.-][^\W_]+)*")


def request_spans(request: str, max_words: int = SPAN_MAX_WORDS) -> list[str]:
    """The phrases of `request`, alone and joined with their neighbours, shortest first.

    A phrase starts the request, follows punctuation, or starts or follows a
    linking word ("in", "to", "for", ...: LINKS); it ends where the next one
    starts. "remind me to call Ana in 10 minutes" gives "call Ana", "in 10
    minutes", "10 minutes", "remind me", ... but not "Ana" or "10": a value
    cut inside a phrase drops what the user said ("17" for "17 times 25").
    Empty when the request is longer than SPAN_MAX_REQUEST_WORDS words.
    """
    words = list(_SPAN_WORD.finditer(request))
    if not words or len(words) > SPAN_MAX_REQUEST_WORDS:
        return []
    link = [w.group(0).lower() in LINKS for w in words]
    gap = [request[words[i - 1].end():w.start()].strip() != "" for i, w in enumerate(words) if i] + [True]
    starts = [i for i in range(len(words)) if i == 0 or link[i] or link[i - 1] or gap[i - 1]]
    ends = [i for i in range(len(words)) if i == len(words) - 1 or link[i + 1] or gap[i]]
    seen, out = set(), []
    for a in starts:
        for b in ends:
            if a <= b < a + max_words:
                span = request[words[a].start():words[b].end()]
                if span not in seen:
                    seen.add(span)
                    out.append(span)
    return sorted(out, key=len)


def _said(value: str, request: str) -> bool:
    """True when `value` occurs in `request` as whole words, case-insensitively."""
    return bool(value.strip()) and re.search(r"(?<!\w)%s(?!\w)" % re.escape(value.strip()), request, re.I) is not None


def _fits(span: str, spec: dict) -> bool:
    if len(span) < int(spec.get("minLength", 0)) or len(span) > int(spec.get("maxLength", MAX_STRING)):
        return False
    pattern = spec.get("pattern")
    if pattern is None:
        return True
    try:
        return re.search(pattern, span) is not None
    except re.error:
        return False


def _free_text(spec) -> bool:
    return (isinstance(spec, dict) and spec.get("type") == "string"
            and not any(x in spec for x in ("enum", "const", "format")))


def _one_text_holder(parameters: dict) -> bool:
    """True when one required free-text argument, and no number argument, can take the request's numbers."""
    props = parameters.get("properties") or {}
    if any(isinstance(v, dict) and v.get("type") in ("number", "integer") for v in props.values()):
        return False
    return sum(_free_text(props.get(k)) for k in parameters.get("required") or []) == 1


def ground_schema(parameters: dict, request: str, spans: bool = True, enums: bool = True,
                  avoid: dict[str, set] | None = None) -> dict:
    """A copy of a tool's `parameters` whose required values must come from `request`.

    With `spans`, a required free-text argument (a string with no enum, const or
    format) may only be a phrase of the request that fits its pattern and length
    (`request_spans`): a small model otherwise writes a note or an expression of
    its own; when that argument is the only one that can hold the request's
    numbers, its value holds them all. With `enums`, a required enum argument
    may only be one of its values the request names, when it names any.
    Validation still uses the tool's own schema; an argument with no fitting
    value keeps its schema. `avoid` (argument -> values) takes values a failed
    try gave out of the offer.
    """
    if not isinstance(parameters, dict) or not isinstance(parameters.get("properties"), dict):
        return parameters
    out = copy.deepcopy(parameters)
    props = out["properties"]
    offered = request_spans(request) if spans else []
    numbers = re.findall(r"\d+(?:[.,]\d+)*", request)
    if offered and numbers and _one_text_holder(parameters):
        # The user's numbers go into the call, and only one argument can hold them:
        # it holds them all ("144" alone for "144 divided by 12" drops the divisor).
        offered = [s for s in offered if all(re.search(r"(?<![\d.,])%s(?![\d])" % re.escape(n), s) for n in numbers)] \
            or offered
    for k in parameters.get("required") or []:
        spec = props.get(k)
        if not isinstance(spec, dict):
            continue
        values = spec.get("enum")
        if enums and isinstance(values, list) and all(isinstance(v, str) for v in values):
            named = [v for v in values if _said(v, request)]
            if named:
                spec["enum"] = named
        elif spans and _free_text(spec):
            fit = [s for s in offered if _fits(s, spec)]
            fit = [s for s in fit if s not in (avoid or {}).get(k, ())] or fit
            if fit:
                props[k] = {key: v for key, v in spec.items() if key not in ("pattern", "minLength", "maxLength")}
                props[k]["enum"] = fit
    return out


def call_schema(tools) -> dict:
    """JSON schema of one call to any of `tools`."""
    variants = [{
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": strict(t.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for t in tools]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def call_grammar(tools, parallel: bool = True, text: bool = True, lenient: bool = False) -> str:
    """Lark grammar: one call, a list of calls (parallel) or a plain-text answer."""
    tools = list(tools)
    style = dict(JSON_STYLE, lenient=True) if lenient else JSON_STYLE
    alts = []
    rules = []
    if tools:
        one = call_schema(tools)
        rules.append("call: %json " + json.dumps(dict(one, **{"x-guidance": style})))
        alts.append("call")
        if parallel:
            many = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_CALLS, "x-guidance": style}
            rules.append("calls: %json " + json.dumps(many))
            alts.append("calls")
    if text or not tools:
        rules.append(f"text: {TEXT_RULE}")
        alts.append("text")
    return "\n".join([f"start: {' | '.join(alts)}"] + rules)


def json_grammar(schema: dict) -> str:
    """Lark grammar for one JSON value valid against `schema`."""
    return "start: %json " + json.dumps(dict(schema, **{"x-guidance": JSON_STYLE}))


# -- the hook -------------------------------------------------------------------------
# backend -> tokens that may close an item and go on; weak, so a closed model's entry goes with it
_COMMAS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# backend -> [tokens made only of "]}", tokens of '"' then only "]}"]
_CLOSERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _closes_then_comma(piece: bytes) -> bool:
    return b"," in piece and not piece[: piece.rindex(b",")].strip(b"}] \n")


def _repeats(text: bytes) -> bool:
    """True when `text` is a JSON list whose last item repeats an earlier one."""
    text = text.strip()
    if not text.endswith(b"}"):
        return False
    try:
        items = json.loads(text + b"]")
    except ValueError:
        return False
    return isinstance(items, list) and len(items) > 1 and items[-1] in items[:-1]


def vocab_by_text(backend) -> dict[bytes, list[int]]:
    """ASCII-lower-cased token text -> token ids, built once per backend object."""
    table = _by_text.get(backend)
    if table is None:
        table = {}
        for i in range(int(backend.n_vocab)):
            b = backend.token_bytes(i) or b""
            if 0 < len(b) <= COPY_MAX_BYTES:
                table.setdefault(b.lower(), []).append(i)
        _by_text[backend] = table
    return table


def _quote_tokens(backend) -> np.ndarray:
    """Tokens whose text starts with '"' (they close the open string), built once per backend."""
    got = _QUOTES.get(backend)
    if got is None:
        got = _QUOTES[backend] = np.array([(backend.token_bytes(i) or b"")[:1] == b'"'
                                           for i in range(int(backend.n_vocab))])
    return got


def _span_ends(text: str) -> list[int]:
    """Byte offsets in `text` where a copied value may end (SPAN_END matches there)."""
    out, pos = [], 0
    for i, ch in enumerate(text):
        if SPAN_END.match(text, i):
            out.append(pos)
        pos += len(ch.encode("utf-8"))
    return out + [pos]


def _word_starts(text: str) -> list[int]:
    """Byte offsets where a word starts (each CJK character counts as one)."""
    out, pos, prev = [], 0, ""
    for ch in text:
        if ch.isalnum() and (not prev.isalnum() or ord(ch) >= 0x2E80):
            out.append(pos)
        pos += len(ch.encode("utf-8"))
        prev = ch
    return out


class JsonState:
    """Where generated JSON stands, byte by byte: inside a string or not, open containers,
    and whether the open string is an argument value (not a key, not the tool name)."""

    def __init__(self):
        self.stack: list[int] = []  # open containers: ord("{") / ord("[")
        self.call_depth = 0  # depth of the call objects: 1, or 2 inside a list of calls
        self.in_str = self.esc = self.is_arg = False
        self.last = 0  # last byte outside strings that is not a blank

    def step(self, c: int) -> str:
        """Take one byte; returns "open" (a string starts), "content" (a string byte),
        "close" (a string ends) or "" (outside strings)."""
        if self.in_str:
            if self.esc:
                self.esc = False
            elif c == 0x5C:  # backslash
                self.esc = True
            elif c == 0x22:
                self.in_str, self.last = False, c
                return "close"
            return "content"
        if c == 0x22:
            value = self.last == 0x3A or (self.stack and self.stack[-1] == 0x5B)
            self.in_str, self.is_arg = True, bool(value and len(self.stack) > self.call_depth)
            return "open"
        if c in (0x7B, 0x5B):
            if not self.stack:
                self.call_depth = 1 if c == 0x7B else 2
            self.stack.append(c)
        elif c in (0x7D, 0x5D) and self.stack:
            self.stack.pop()
        if c not in b" \n\t\r":
            self.last = c
        return ""

    def feed(self, piece: bytes) -> None:
        for c in piece:
            self.step(c)


class Copy:
    """Favours argument values copied from the user's request.

    Inside a JSON string that is an argument value (not a key, not the tool
    name), tokens that start a word of the request, or continue the span of
    the request being copied, get `bias` added to their logits. A small model
    otherwise cuts a value short ("Riga" for "Riga, Latvia"), copies the
    example of a parameter's description ("CA") or picks the first enum
    value over the one the user named. Matching is ASCII case-insensitive; a
    word already copied into the value is not offered again (no loops). Where
    the copied span reaches a phrase end of the request (SPAN_END), tokens
    that close the string get `end_bias`, so the copy stops with the phrase.
    With `order_bias`, the start of a value favours the nearest word after the
    call's previous value (`_in_order`).
    """

    def __init__(self, backend, request: str, bias: float, end_bias: float = 0.0, order_bias: float = 0.0):
        self.bias = bias
        self.end_bias = end_bias
        self.order_bias = order_bias
        self.after: int | None = None  # where in the request the call's last copied value ended
        self._number = b""  # the number argument being written
        self.q = request.encode("utf-8").lower()
        self.starts = frozenset(_word_starts(request))
        self.ends = frozenset(_span_ends(request))
        self.table = vocab_by_text(backend)
        self.quotes = _quote_tokens(backend)
        self.active: set[int] = set()  # offsets in the request where the copied span may go on
        self.used: set[int] = set()  # offsets already copied into this value
        self.copying = False  # the last token went on with a copied span

    def feed(self, state: JsonState, piece: bytes) -> None:
        """Move `state` and the copied span through one generated token."""
        for c in piece:
            if self._number and not (48 <= c <= 57 or c in b".-eE+"):
                self._placed_number()
            elif not state.in_str and len(state.stack) > state.call_depth and (48 <= c <= 57 or c == 45):
                self._number += bytes([c])
                state.step(c)
                continue
            where = state.step(c)
            if where == "close" and state.is_arg and self.used:
                self.after = max(self.used) + 1
            elif where == "open" and not state.is_arg and len(state.stack) == state.call_depth:
                self.after = None  # a key of a new call: its values start afresh
            if where == "open":
                self.active, self.used, self.copying = set(self.starts), set(), False
            elif where == "content" and state.is_arg:
                low = c + 32 if 65 <= c <= 90 else c  # ASCII lower case, as the request
                self.active = {j + 1 for j in self.active if j < len(self.q) and self.q[j] == low}
                self.used.update(j - 1 for j in self.active)
                self.copying = bool(self.active)
        if state.in_str and state.is_arg and not self.active:
            # The token left the copied span: a new one may start at a word not copied yet.
            self.active, self.copying = set(self.starts - self.used), False

    def _placed_number(self) -> None:
        """A number argument ended: where the request says it, the next value is looked for after it."""
        m = re.compile(rb"(?<![\d.])%s(?![\d])" % re.escape(self._number)).search(self.q, self.after or 0)
        if m is not None:
            self.after = m.end()
        self._number = b""

    def _in_order(self, view: np.ndarray, mask: np.ndarray) -> None:
        """At the start of a value, favour the nearest word of the request after the last value
        copied into this call: arguments are usually said in the order the tool lists them
        ("convert 10 liters to gallons" -> value, from_unit, to_unit)."""
        for j in sorted(j for j in self.active if j >= self.after):
            ids = set()
            for n in range(1, min(COPY_MAX_BYTES, len(self.q) - j) + 1):
                ids.update(self.table.get(self.q[j:j + n], ()))
            idx = np.fromiter((i for i in ids if i < len(mask) and mask[i]), dtype=np.int64)
            if idx.size:
                view[idx] += self.order_bias
                return

    def apply(self, state: JsonState, view: np.ndarray, mask: np.ndarray) -> None:
        if not (state.in_str and state.is_arg and self.active) or self.bias == 0:
            return
        if self.order_bias and self.after is not None and not self.used:
            self._in_order(view, mask)
        ids = set()
        for j in self.active:
            for n in range(1, min(COPY_MAX_BYTES, len(self.q) - j) + 1):
                ids.update(self.table.get(self.q[j:j + n], ()))
        idx = np.fromiter((i for i in ids if i < len(mask) and mask[i]), dtype=np.int64)
        if idx.size:
            view[idx] += self.bias
        if self.end_bias and self.copying and not self.ends.isdisjoint(self.active):
            # The copy reached a phrase boundary of the request: closing the value here
            # gets a bias too, so the copy bias alone does not carry the value on.
            close = mask & self.quotes[: len(mask)]
            view[close] += self.end_bias


class Constraint:
    """A logits hook that allows only tokens keeping the output inside `grammar`."""

    def __init__(self, backend, grammar: str, call_bias: float = 0.0, request: str | None = None,
                 copy_bias: float = 0.0, budget: int | None = None, end_bias: float = 0.0,
                 names: dict[str, float] | None = None, order_bias: float = 0.0):
        llg = _llg()
        # Logit added to the tokens of each tool name while the model writes a call's
        # "name" (a prior over the tools, e.g. from the retrieval ranking).
        self.names = {n: float(b) for n, b in (names or {}).items()} if any((names or {}).values()) else {}
        self._names_bytes = [(json.dumps(n)[1:].encode("utf-8"), b) for n, b in self.names.items()]
        # Tokens the caller will sample at most; near the end only closing tokens (CLOSE_RESERVE).
        self.budget = budget
        # Added at the first step to the tokens that open a call, when text is also
        # allowed: how much more readily the model calls than answers.
        self.call_bias = call_bias
        self.copy = Copy(backend, request, copy_bias, end_bias, order_bias) if request and copy_bias else None
        self.json = JsonState()
        self.first_margin: float | None = None
        self._starts = json_start(backend)
        self._backend = backend
        self._text = b""  # what has been generated, for the repeat check
        self.tokenizer = lltokenizer(backend)
        self.n_vocab = self.tokenizer.vocab_size
        self.matcher = llg.LLMatcher(self.tokenizer, llg.LLMatcher.grammar_from_lark(grammar), log_level=0)
        if self.matcher.is_error():
            raise ToolError(f"The call grammar does not compile: {self.matcher.get_error()}.",
                            "Simplify the tool schemas (unsupported JSON Schema feature).")
        self.consumed = 0

    @classmethod
    def for_tools(cls, backend, tools, parallel: bool = True, text: bool = True, call_bias: float = 0.0,
                  request: str | None = None, copy_bias: float = 0.0, budget: int | None = None,
                  end_bias: float = 0.0, names: dict[str, float] | None = None,
                  order_bias: float = 0.0) -> "Constraint":
        """The hook for a call to one of `tools`; `request` and `copy_bias` favour copied
        values (Copy); `budget` is the caller's max_tokens, for closing in time; `names`
        biases the choice of tool (tool name -> logit added to its name's tokens); `order_bias`
        favours copying the request in order (Copy)."""
        try:
            return cls(backend, call_grammar(tools, parallel, text), call_bias, request, copy_bias, budget, end_bias,
                       names, order_bias)
        except ToolError:
            # Unsupported keywords (formats, odd patterns): let llguidance ignore them.
            return cls(backend, call_grammar(tools, parallel, text, lenient=True), call_bias, request, copy_bias,
                       budget, end_bias, names, order_bias)

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary for the next token."""
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.n_vocab].astype(bool)

    def __call__(self, ids: Sequence[int], logits: np.ndarray) -> None:
        new = list(ids[self.consumed:])
        if new:
            if not self.matcher.consume_tokens(new):
                raise ToolError(f"The constrained output went off its grammar: {self.matcher.get_error()}.",
                                "Report this as a bug with the tools you used.")
            self.consumed = len(ids)
            pieces = [self._backend.token_bytes(i) or b"" for i in new]
            self._text += b"".join(pieces)
            for piece in pieces:
                if self.copy is not None:
                    self.copy.feed(self.json, piece)
                else:
                    self.json.feed(piece)
        mask = self.allowed()
        if self._text.lstrip().startswith(b"["):
            self._no_repeats(mask)
        n = min(len(mask), logits.shape[0])
        view = logits[:n]
        view[~mask[:n]] = -np.inf
        logits[n:] = -np.inf
        if self.copy is not None:
            self.copy.apply(self.json, view, mask[:n])
        if self.names:
            self._name_prior(view, mask[:n])
        # Only a call has anything to close: plain text ends when the model ends it
        # (forcing "]" or "}" there printed a run of brackets).
        if (self.budget is not None and self.budget - len(ids) <= CLOSE_RESERVE
                and self._text.lstrip()[:1] in (b"{", b"[")):
            closing = mask[:n] & self._closers(n, self.json.in_str)
            if closing.any():
                view[~closing] = -np.inf
        if self.consumed == 0 and not new:
            self._first_step(view, mask[:n])

    def _name_prior(self, view: np.ndarray, mask: np.ndarray) -> None:
        """Inside a call's "name" value, add each tool's prior to the tokens that go on
        spelling its name (a token shared by several names gets the largest)."""
        state = self.json
        if not (state.in_str and not state.is_arg and len(state.stack) == state.call_depth):
            return
        m = _NAME_VALUE.search(self._text)
        if m is None:
            return
        typed = m.group(1)
        for i in np.nonzero(mask)[0]:
            piece = (self._backend.token_bytes(int(i)) or b"")
            text = typed + piece
            best = None
            for name, bias in self._names_bytes:
                if name.startswith(text) or text.startswith(name):
                    best = bias if best is None else max(best, bias)
            if best is not None:
                view[i] += best

    def _no_repeats(self, mask: np.ndarray) -> None:
        """In a list of calls, forbid the tokens that would go on after a repeated call.

        A small model tends to repeat the same call until the token budget ends, so
        the call never finishes; a list never needs the same call twice. A token
        that closes an item and carries on with "," (BPE merges such as "}},")
        is checked on the text it would make.
        """
        for i in np.nonzero(mask & self._closing_commas(len(mask)))[0]:
            piece = self._backend.token_bytes(int(i))
            if _repeats(self._text + piece[: piece.rindex(b",")]):
                mask[i] = False

    def _closing_commas(self, n: int) -> np.ndarray:
        """Tokens holding a "," with nothing but "}" or "]" or blanks before it, or none."""
        got = _COMMAS.get(self._backend)
        if got is None or len(got) != n:
            got = _COMMAS[self._backend] = np.array([_closes_then_comma(self._backend.token_bytes(i)) for i in range(n)])
        return got

    def _closers(self, n: int, in_string: bool) -> np.ndarray:
        """Tokens that only close: '"' then any of "]}" inside a string, only "]}" outside."""
        got = _CLOSERS.get(self._backend)
        if got is None or got.shape[1] != n:
            pieces = [self._backend.token_bytes(i) or b"" for i in range(n)]
            got = _CLOSERS[self._backend] = np.array([
                [bool(p) and not p.strip(b"]}") for p in pieces],
                [p[:1] == b'"' and not p[1:].strip(b"]}") for p in pieces]])
        return got[int(in_string)]

    def _first_step(self, view: np.ndarray, mask: np.ndarray) -> None:
        """Record how far a call leads a plain answer, then apply the call bias."""
        opens = mask & self._starts[: len(mask)]
        other = mask & ~self._starts[: len(mask)]
        if opens.any() and other.any():
            self.first_margin = float(view[opens].max() - view[other].max())
            view[opens] += self.call_bias
