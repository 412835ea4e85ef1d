"""BFCL function-calling evaluation: loader, AST matcher, runs, retrieval recall.

Data and the scoring come from the `bfcl-eval` package (installed with
--no-deps): calls are scored by BFCL's own AST checker
(bfcl_eval.eval_checker.ast_eval.ast_checker), so the figures compare with
the public leaderboard; irrelevance passes when no call is made, as in BFCL.
Category names are BFCL's (simple_python, live_simple, ...).

`run` evaluates edge's pipeline (retrieval + constrained call) and, in the
same run, the baseline: the same GGUF through llama-cpp-python's own
`chatml-function-calling` chat handler with every tool in the prompt.
`retrieval` measures recall@k and latency over the union of all BFCL tools,
and `prompt_savings` the prompt tokens retrieval saves on live_multiple.
"""
from __future__ import annotations

import importlib.util
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgeError, InvalidOption

# Category name -> data file stem.
CATEGORIES = {
    "simple_python": "BFCL_v4_simple_python",
    "multiple": "BFCL_v4_multiple",
    "parallel": "BFCL_v4_parallel",
    "parallel_multiple": "BFCL_v4_parallel_multiple",
    "live_simple": "BFCL_v4_live_simple",
    "live_multiple": "BFCL_v4_live_multiple",
    "live_parallel": "BFCL_v4_live_parallel",
    "live_parallel_multiple": "BFCL_v4_live_parallel_multiple",
    "irrelevance": "BFCL_v4_irrelevance",
    "live_irrelevance": "BFCL_v4_live_irrelevance",
}
DEFAULT_CATEGORIES = ("simple_python", "multiple", "live_simple", "live_multiple", "irrelevance")
# Categories whose tool lists make the retrieval pool (all single-turn ones with functions).
POOL_FILES = tuple(CATEGORIES.values()) + ("BFCL_v4_live_relevance", "BFCL_v4_simple_java", "BFCL_v4_simple_javascript")
# Categories whose ground truth makes the retrieval queries.
RETRIEVAL_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple",
                        "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")


def data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError("The BFCL data are not installed.", "Install them with: pip install --no-deps bfcl-eval")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@dataclass
class Item:
    """One BFCL test: messages, the offered functions, and the possible answers."""

    id: str
    category: str
    messages: list[dict]
    functions: list[dict]
    answer: list[dict] | None  # [{func_name: {param: [possible values]}}]; None for irrelevance

    @property
    def query(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    @property
    def history(self) -> list[dict]:
        msgs = list(self.messages)
        for i in range(len(msgs) - 1, -1, -1):
            if msgs[i].get("role") == "user":
                return msgs[:i] + msgs[i + 1:]
        return msgs


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# Earlier spellings still accepted.
ALIASES = {"simple": "simple_python"}


def load(category: str, limit: int | None = None) -> list[Item]:
    category = ALIASES.get(category, category)
    if category not in CATEGORIES:
        raise InvalidOption(f"Unknown BFCL category '{category}'.", f"Choose from: {', '.join(CATEGORIES)}.")
    d = data_dir()
    stem = CATEGORIES[category]
    items = _read_jsonl(d / f"{stem}.json")
    answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(d / "possible_answer" / f"{stem}.json")}
    out = []
    for it in items[: limit or None]:
        out.append(Item(it["id"], category, list(it["question"][0]), it["function"], answers.get(it["id"])))
    return out


# -- BFCL's own AST checker ----------------------------------------------------------
# Model name given to BFCL's checker; it only asks the model registry whether the
# model's API renamed "." in function names to "_" (edge calls names as written).
CHECKER_MODEL = "edge"


def _checker():
    """bfcl_eval's AST checker module and its Language enum.

    The checker module imports BFCL's model registry (every API client: openai,
    anthropic, cohere, mistralai, boto3, ...) only to read that one flag. Where
    those clients are not installed, a stand-in registry answers it, so the
    checker itself runs as published.
    """
    import sys
    import types

    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        try:
            importlib.import_module(name)
        except ImportError:
            stand_in = types.ModuleType(name)
            stand_in.MODEL_CONFIG_MAPPING = {}
            sys.modules[name] = stand_in
    sys.modules[name].MODEL_CONFIG_MAPPING.setdefault(CHECKER_MODEL, types.SimpleNamespace(underscore_to_dot=False))
    try:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.eval_checker.ast_eval import ast_checker
    except ImportError as exc:
        raise EdgeError(f"BFCL's checker cannot be imported ({exc}).",
                        "Install it with: pip install --no-deps bfcl-eval") from None
    return ast_checker, Language


def match(item: Item, calls: list[dict] | None) -> str | None:
    """None when the calls answer `item` correctly by BFCL's own AST checker, else its reason."""
    calls = calls or []
    if item.answer is None:  # irrelevance: BFCL passes an item when no call is made
        return None if not calls else f"called {calls[0].get('name')!r} though no tool applies"
    if not calls:
        return f"made 0 call(s), expected {len(item.answer)}"
    checker, language = _checker()
    output = [{str(c.get("name")): c.get("arguments") if isinstance(c.get("arguments"), dict) else {}} for c in calls]
    try:
        got = checker.ast_checker(item.functions, output, item.answer, language.PYTHON, item.category, CHECKER_MODEL)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"BFCL's checker could not read the call: {type(exc).__name__}: {exc}"
    if got.get("valid"):
        return None
    return "; ".join(str(e) for e in got.get("error") or [got.get("error_type", "invalid")])


# -- runs ----------------------------------------------------------------------------
@dataclass
class Row:
    """Figures of one system on one category."""

    system: str
    category: str
    n: int = 0
    correct: int = 0
    valid: int = 0
    calls: int = 0
    prompt_tokens: list = field(default_factory=list)
    prompt_tokens_all: list = field(default_factory=list)
    latency: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    over_context: int = 0
    unfinished: int = 0

    def add(self, item: Item, calls: list[dict] | None, info: dict) -> None:
        """Score one item: correct, schema-valid, tokens, latency; failures keep why."""
        self.n += 1
        reason = match(item, calls) if "error" not in info else info["error"]
        self.correct += reason is None
        self.valid += bool(info.get("valid", False) and _schema_valid(item, calls))
        self.over_context += bool(info.get("over_context"))
        self.unfinished += bool(info.get("unfinished"))
        self.latency.append(info["latency"])
        if "prompt_tokens" in info:
            self.prompt_tokens.append(info["prompt_tokens"])
        if "prompt_tokens_all" in info:
            self.prompt_tokens_all.append(info["prompt_tokens_all"])
        if reason is not None:
            self.failures.append({"id": item.id, "why": reason, "calls": calls, "raw": info.get("raw")})

    def as_dict(self) -> dict:
        mean = lambda xs: round(statistics.fmean(xs), 1) if xs else None  # noqa: E731
        return {
            "system": self.system, "category": self.category, "n": self.n,
            "accuracy": round(self.correct / self.n, 4) if self.n else None,
            "schema_valid": round(self.valid / self.n, 4) if self.n else None,
            "prompt_tokens": mean(self.prompt_tokens), "prompt_tokens_all_tools": mean(self.prompt_tokens_all),
            "latency_s": mean([round(x, 3) for x in self.latency]) if self.latency else None,
            "latency_p50_s": round(statistics.median(self.latency), 3) if self.latency else None,
            "over_context": self.over_context, "unfinished": self.unfinished,
        }


def _schema_valid(item: Item, calls: list[dict] | None) -> bool:
    """Every call names an offered function and validates against its (normalised) schema."""
    from ..tools.execute import validate
    from ..tools.registry import Registry

    if not calls:
        return True
    reg = Registry.from_bfcl(item.functions)
    for c in calls:
        if c.get("name") not in reg or validate(reg[c["name"]], c.get("arguments")):
            return False
    return True


def run_edge(model, item: Item, options) -> tuple[list[dict] | None, dict]:
    from ..tools import Registry, call

    reg = Registry.from_bfcl(item.functions)
    t0 = time.perf_counter()
    try:
        res = call(model, item.query, reg, options, history=item.history)
    except EdgeError as exc:
        return None, {"error": str(exc), "latency": time.perf_counter() - t0, "valid": False}
    calls = [{"name": c.name, "arguments": c.arguments} for c in res.calls]
    return calls, {"latency": time.perf_counter() - t0, "prompt_tokens": res.prompt_tokens,
                   "prompt_tokens_all": res.prompt_tokens_all, "valid": res.valid, "raw": res.raw}


class _OverBudget(Exception):
    """The baseline sampled its whole token budget without finishing."""


class _Budget:
    """Caps the tokens of every completion the baseline's chat handler makes.

    The `chatml-function-calling` handler passes max_tokens=None to each of
    its inner completions, so a model looping inside a JSON string would run
    to the end of the context. This wraps the Llama object's create_completion
    (the handler calls it by attribute) so that all inner completions of one
    item share `limit` tokens; a completion cut by the cap raises _OverBudget.
    """

    def __init__(self, llm):
        self.llm, self.inner = llm, llm.create_completion
        self.left = 0
        llm.create_completion = self

    def start(self, limit: int) -> None:
        self.left = limit

    def __call__(self, *args, **kw):
        if self.left <= 0:
            raise _OverBudget
        asked = kw.get("max_tokens")
        kw["max_tokens"] = self.left if asked is None or asked <= 0 else min(asked, self.left)
        out = self.inner(*args, **kw)
        used = out["usage"]["completion_tokens"]
        self.left -= used
        if out["choices"][0].get("finish_reason") == "length" and self.left <= 0:
            raise _OverBudget
        return out


class Baseline:
    """llama-cpp-python's `chatml-function-calling` handler, every tool in the prompt.

    The context is capped at `n_ctx`: a prompt that does not fit is not run
    and counts as wrong ("over context"); a reply that is still unfinished
    after `max_tokens` sampled tokens over all of the handler's steps counts
    as wrong ("unfinished").
    """

    def __init__(self, gguf: Path, n_ctx: int, threads: int | None):
        from llama_cpp import Llama

        self.n_ctx = n_ctx
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         chat_format="chatml-function-calling", verbose=False)
        self.budget = _Budget(self.llm)

    def run(self, item: Item, max_tokens: int) -> tuple[list[dict] | None, dict]:
        from ..tools.registry import Registry

        tools = Registry.from_bfcl(item.functions).to_openai()
        msgs = list(item.messages)
        if not any(m.get("role") == "system" for m in msgs):
            # The handler lists the tools only inside a system message.
            msgs.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        self.budget.start(max_tokens)
        t0 = time.perf_counter()
        try:
            out = self.llm.create_chat_completion(messages=msgs, tools=tools, tool_choice="auto",
                                                  max_tokens=max_tokens, temperature=0.0)
        except _OverBudget:
            return None, {"error": f"unfinished after {max_tokens} tokens", "unfinished": True,
                          "latency": time.perf_counter() - t0, "valid": False}
        except ValueError as exc:
            if "exceed context window" not in str(exc):
                raise
            return None, {"error": f"prompt over the {self.n_ctx}-token context", "over_context": True,
                          "latency": time.perf_counter() - t0, "valid": False}
        except Exception as exc:  # the handler raises on output it cannot parse
            return None, {"error": f"{type(exc).__name__}: {exc}", "latency": time.perf_counter() - t0, "valid": False}
        msg = out["choices"][0]["message"]
        calls, valid = [], True
        for tc in msg.get("tool_calls") or []:
            try:
                args = json.loads(tc["function"]["arguments"])
            except (json.JSONDecodeError, TypeError):
                args, valid = {}, False
            calls.append({"name": tc["function"]["name"], "arguments": args})
        return calls, {"latency": time.perf_counter() - t0, "prompt_tokens": out["usage"]["prompt_tokens"], "valid": valid}


def run(categories=DEFAULT_CATEGORIES, limit: int | None = 20, model: str | None = None, backend: str | None = None,
        baseline: bool = True, top_k: int | None = None, max_tokens: int = 192, n_ctx: int = 8192,
        baseline_ctx: int = 4096, threads: int | None = None, progress=None) -> dict:
    """Evaluate edge (and the baseline) on the first `limit` items of each BFCL category.

    Both systems get the same `max_tokens` budget; the baseline's context is
    capped at `baseline_ctx` (items over it, or unfinished, count as wrong and
    are counted in the table).
    """
    import edge
    from ..tools import CallOptions

    opts = CallOptions(max_tokens=max_tokens)
    if top_k is not None:
        opts.top_k = top_k
    m = edge.load(model, backend=backend, n_ctx=n_ctx, threads=threads)
    base = None
    if baseline:
        if m.artifact.format != "gguf":
            gguf = next((a for a in edge.model.Store().resolve(model).artifacts if a.format == "gguf"), None)
        else:
            gguf = m.artifact
        base = Baseline(gguf.main_path, baseline_ctx, m.backend.load_options.threads) if gguf else None
    rows = []
    for cat in categories:
        items = load(cat, limit)
        systems = [("edge", lambda it: run_edge(m, it, opts))]
        if base is not None:
            systems.append(("baseline", lambda it: base.run(it, max_tokens)))
        for sysname, fn in systems:
            row = Row(sysname, cat)
            for it in items:
                calls, info = fn(it)
                row.add(it, calls, info)
                if progress:
                    progress(sysname, cat, row.n, len(items), not row.failures or row.failures[-1]["id"] != it.id)
            rows.append(row)
    result = {"model": m.name, "backend": m.backend_name, "limit": limit, "top_k": opts.top_k,
              "max_tokens": max_tokens, "threads": m.backend.load_options.threads, "baseline_ctx": baseline_ctx if base is not None else None,
              "rows": [r.as_dict() for r in rows], "failures": {f"{r.system}/{r.category}": r.failures for r in rows}}
    m.close()
    return result


# -- retrieval ------------------------------------------------------------------------
def pool() -> tuple[list[dict], int]:
    """Every distinct BFCL function name with its first definition, and how many names
    have several definitions.

    A registry holds one tool per name, and BFCL reuses a name for the same
    function with reworded descriptions (519 of 1,853 names), so a query's
    ground truth is matched by name: retrieving that name is a hit whichever
    wording the pool kept.
    """
    d = data_dir()
    seen: dict[str, dict] = {}
    variants: dict[str, set] = {}
    for stem in POOL_FILES:
        for it in _read_jsonl(d / f"{stem}.json"):
            for fn in it.get("function") or []:
                seen.setdefault(fn["name"], fn)
                variants.setdefault(fn["name"], set()).add(json.dumps(fn, sort_keys=True))
    return list(seen.values()), sum(len(v) > 1 for v in variants.values())


def retrieval_queries(names: set[str], limit: int | None = None) -> list[tuple[str, list[str], str]]:
    """(user's last turn, ground-truth function names in the pool, category) per query."""
    out = []
    for cat in RETRIEVAL_CATEGORIES:
        for it in load(cat, limit):
            want = [n for n in dict.fromkeys(next(iter(a)) for a in it.answer or []) if n in names]
            if want and it.query:
                out.append((it.query, want, cat))
    return out


# Two pool tools count as equivalent when their descriptions alone embed at cosine
# >= EQUIVALENT_COSINE and they share a parameter name. The pool has 153 description
# pairs at >= 0.9; of 25 drawn at random and read, 22 were one job reworded ("Calculate
# the area of a circle given the radius." / "...with given radius"); the shared-name
# rule drops two of the other three (fahrenheit_to_celsius / celsius_to_fahrenheit,
# events by accessibility / by type) and one real match (electric field from Q, r /
# from charge, distance); circumference / area and circumference stays in. At
# 0.85-0.9 different jobs appear (weather by city / by coordinates), and the same
# parameter names alone are not enough (weather_forecast_temperature / _humidity).
EQUIVALENT_COSINE = 0.9


def equivalence(tools: list, encoder=None):
    """A function (name_a, name_b) -> bool: same tool, or equivalent as defined above.

    Description embeddings come from the tool-embedding cache (edge.tools.retrieval).
    """
    import numpy as np

    from ..tools.retrieval import _encoder, embed_cached

    index = {t.name: i for i, t in enumerate(tools)}
    desc = embed_cached(encoder or _encoder(), [t.description for t in tools])
    params = [set(t.properties) for t in tools]

    def same(a: str, b: str) -> bool:
        if a == b:
            return True
        i, j = index[a], index[b]
        return (bool(tools[i].description.strip()) and bool(tools[j].description.strip())
                and bool(params[i] & params[j]) and float(np.dot(desc[i], desc[j])) >= EQUIVALENT_COSINE)

    return same


def retrieval(k: int = 5, limit: int | None = None, threshold: float | None = None) -> dict:
    """recall@k of the ground-truth functions and query latency over the whole pool.

    Recall is per function: a query with three expected functions (parallel
    multiple) counts three times, once per function found in its kept tools;
    `query_recall` counts a query only when all of them are kept. Queries are
    split in two halves by position (even: the half retrieval settings were
    tuned on; odd: held out), reported separately. `live_multiple_prompt_tokens`
    is `prompt_savings` over the same items (what retrieval saves in a prompt).
    `recall_equivalent` also counts an expected function as found when an
    equivalent tool (`equivalence`) is kept instead: a secondary figure, for
    pool tools that do the same job under another name.
    """
    import os

    import numpy as np

    from ..tools.registry import Registry

    reg = Registry()
    skipped = 0
    fns, several = pool()
    for fn in fns:
        try:
            reg.add(fn)
        except EdgeError:
            skipped += 1
    t0 = time.perf_counter()
    retriever = reg.retriever
    build_s = time.perf_counter() - t0
    queries = retrieval_queries(set(reg.names), limit)
    lat: list[float] = []
    halves: dict[str, list[bool]] = {"tune": [], "held_out": []}
    equiv: dict[str, list[bool]] = {"tune": [], "held_out": []}
    same = equivalence(list(reg), retriever.encoder)
    by_cat: dict[str, list[bool]] = {}
    whole: list[bool] = []
    load_before = os.getloadavg()[0]
    for i, (q, want, cat) in enumerate(queries):
        t = time.perf_counter()
        got = {n for n, _ in retriever.search(q, k=k, threshold=threshold)}
        lat.append(time.perf_counter() - t)
        hits = [w in got for w in want]
        half = "tune" if i % 2 == 0 else "held_out"
        halves[half].extend(hits)
        equiv[half].extend(any(same(w, g) for g in got) for w in want)
        by_cat.setdefault(cat, []).extend(hits)
        whole.append(all(hits))
    lat_ms = np.array(lat) * 1000
    rate = lambda xs: round(sum(xs) / max(1, len(xs)), 4)  # noqa: E731
    return {
        "pool_tools": len(reg), "skipped_tools": skipped, "names_with_several_definitions": several,
        "queries": len(queries), "functions": sum(len(h) for h in halves.values()), "k": k,
        f"recall@{k}": rate(halves["tune"] + halves["held_out"]),
        "recall_tune_half": rate(halves["tune"]), "recall_held_out_half": rate(halves["held_out"]),
        "query_recall": rate(whole),
        "recall_equivalent": rate(equiv["tune"] + equiv["held_out"]),
        "recall_equivalent_tune_half": rate(equiv["tune"]), "recall_equivalent_held_out_half": rate(equiv["held_out"]),
        "equivalent_cosine": EQUIVALENT_COSINE,
        "by_category": {c: rate(v) for c, v in by_cat.items()},
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2), "p95_ms": round(float(np.percentile(lat_ms, 95)), 2),
        "index_build_s": round(build_s, 2),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "live_multiple_prompt_tokens": prompt_savings("live_multiple", limit),
    }


def prompt_savings(category: str = "live_multiple", limit: int | None = None, model: str | None = None) -> dict:
    """Prompt tokens with every offered tool vs with the tools `call` keeps, per item.

    The same prompt (edge.tools.call.messages_for) is tokenized twice, with
    all of an item's functions and with the ones the default CallOptions
    keep; `ratio` is total tokens with all tools over total with the kept
    ones. `expected_kept` is the share of ground-truth functions among the
    kept tools. Items are split by position like `retrieval` (even: the half
    the retrieval defaults were chosen on; odd: held out).
    """
    import edge
    from ..tools import CallOptions, Registry
    from ..tools.call import prompt_tokens, select

    opts = CallOptions()
    m = edge.load(model, threads=1)
    halves: dict[str, dict[str, list]] = {h: {"all": [], "kept": [], "hits": []} for h in ("tune", "held_out")}
    try:
        for i, it in enumerate(load(category, limit)):
            reg = Registry.from_bfcl(it.functions)
            names = [n for n, _ in select(it.query, reg, opts)]
            h = halves["tune" if i % 2 == 0 else "held_out"]
            h["all"].append(prompt_tokens(m, it.query, list(reg), it.history))
            h["kept"].append(prompt_tokens(m, it.query, reg.subset(names), it.history))
            h["hits"].extend(next(iter(a)) in names for a in it.answer or [])
    finally:
        m.close()
    both = {k: halves["tune"][k] + halves["held_out"][k] for k in ("all", "kept", "hits")}
    ratio = lambda h: round(sum(h["all"]) / max(1, sum(h["kept"])), 3)  # noqa: E731
    rate = lambda xs: round(sum(xs) / max(1, len(xs)), 4)  # noqa: E731
    return {
        "category": category, "items": len(both["all"]), "model": m.name,
        "top_k": opts.top_k, "margin": opts.margin, "threshold": opts.threshold,
        "prompt_tokens_all_tools": round(statistics.fmean(both["all"]), 1) if both["all"] else None,
        "prompt_tokens": round(statistics.fmean(both["kept"]), 1) if both["kept"] else None,
        "ratio": ratio(both), "ratio_tune_half": ratio(halves["tune"]), "ratio_held_out_half": ratio(halves["held_out"]),
        "expected_kept": rate(both["hits"]), "expected_kept_tune_half": rate(halves["tune"]["hits"]),
        "expected_kept_held_out_half": rate(halves["held_out"]["hits"]),
    }


def table(result: dict) -> str:
    """The result of `run` as a fixed-width table, with what the columns mean."""
    head = (f"{'system':<10}{'category':<15}{'n':>4}{'accuracy':>10}{'valid':>7}{'prompt tok':>12}"
            f"{'all tools':>11}{'p50 s':>8}{'mean s':>8}{'over ctx':>10}{'unfinished':>11}")
    lines = [f"model {result['model']} on {result['backend']}, top-k {result['top_k']}, first {result['limit']} items "
             f"per category, max {result['max_tokens']} tokens", head]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in result["rows"]:
        lines.append(f"{r['system']:<10}{r['category']:<15}{r['n']:>4}{fmt(r['accuracy'], '.3f'):>10}"
                     f"{fmt(r['schema_valid'], '.3f'):>7}{fmt(r['prompt_tokens'], '.1f'):>12}"
                     f"{fmt(r['prompt_tokens_all_tools'], '.1f'):>11}{fmt(r['latency_p50_s'], '.2f'):>8}"
                     f"{fmt(r['latency_s'], '.2f'):>8}{r['over_context']:>10}{r['unfinished']:>11}")
    if result.get("baseline_ctx"):
        lines.append(f"baseline: llama-cpp-python chatml-function-calling, all tools, context {result['baseline_ctx']}; "
                     "over-context and unfinished items count as wrong.")
    lines.append("valid: share of items whose calls all validate against the offered schemas (no call counts as valid).")
    return "\n".join(lines)
