"""`edge call` and `edge eval bfcl`: forward options to edge.tools and edge.eval.bfcl."""
from __future__ import annotations

import json

import click

from .common import backend_option, guard_options, json_option, load_options, model_option, print_json, renamed, split


def _fmt_call(c) -> str:
    return f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})"


@click.command()
@click.argument("query")
@click.option("--tools", "tools_path", required=True, type=click.Path(dir_okay=False),
              help="Tools: a .json file (OpenAI or BFCL list) or a .py module of functions.")
@click.option("--max-tools", "top_k", type=int, default=None, help="Tools kept for the prompt (plus any above --min-similarity).")
@click.option("--min-similarity", "threshold", type=float, default=None, help="Also keep tools at least this similar to the query.")
@click.option("--choice", type=click.Choice(["auto", "required", "none"]), default=None,
              help="auto: call when a tool fits, else answer; required: always call; none: never call.")
@click.option("--execute", is_flag=True, help="Run the call and print the result and a final answer.")
@click.option("--timeout", type=float, default=None, help="Seconds each tool may run (with --execute).")
@click.option("-n", "--max-tokens", type=int, default=None, help="Token budget of the call.")
@model_option
@backend_option
@load_options
@guard_options
@json_option
@renamed("--top-k", "--max-tools", "top_k", type=int)
@renamed("--threshold", "--min-similarity", "threshold", type=float)
def call(query, tools_path, top_k, threshold, choice, execute, timeout, max_tokens, model, backend, as_json,
         guard, guard_threshold, **kw):
    """Pick the tools relevant to QUERY and make a schema-valid call."""
    import edge
    from ..tools import CallOptions, Registry, call as do_call

    registry = Registry.load(tools_path)  # bad tools fail before the model loads
    given = {"top_k": top_k, "threshold": threshold, "tool_choice": choice, "timeout": timeout, "max_tokens": max_tokens}
    opts = CallOptions(execute=execute, **{k: v for k, v in given.items() if v is not None})
    _, load = split(kw)
    g = guard_threshold if (guard and guard_threshold is not None) else guard
    with edge.load(model, backend=backend, guard=g, **load) as m:
        verdict = m.screen(query)
        if verdict is not None and verdict.unsafe:
            if as_json:
                print_json({"query": query, "blocked": True, "guard": verdict.to_dict(), "text": verdict.refusal,
                            "calls": []})
            else:
                click.echo(verdict.refusal)
            return
        res = do_call(m, query, registry, opts)
    if as_json:
        print_json(res.to_dict())
        return
    click.echo("tools: " + ", ".join(n if s is None else f"{n} ({s:.2f})" for n, s in res.kept))
    for c in res.calls:
        click.echo(f"call: {_fmt_call(c)}")
        if c.error is not None:
            click.echo(f"error: {c.error}" + (f" {c.hint}" if c.hint else ""))
        elif execute:
            click.echo(f"result: {c.result_text()}")
    for e in res.errors:
        click.echo(f"invalid: {e}")
    if res.text is not None:
        click.echo(f"text: {res.text}")
    if execute and res.answer is not None and res.calls:
        click.echo(f"answer: {res.answer}")
    click.echo(f"prompt tokens: {res.prompt_tokens} (all tools: {res.prompt_tokens_all}, saved {res.tokens_saved})")


@click.command("bfcl")
@click.option("--category", default="simple_python,multiple,live_simple,live_multiple,irrelevance", show_default=True,
              help="Comma-separated BFCL categories, spelt as BFCL does.")
@click.option("--limit", type=int, default=20, show_default=True, help="Items per category (0: all).")
@click.option("--max-tools", "top_k", type=int, default=None, help="Tools kept per query by retrieval.")
@click.option("--baseline/--no-baseline", default=True, help="Also run llama-cpp-python's chatml-function-calling handler.")
@click.option("--retrieval", is_flag=True, help="Measure retrieval recall@k and latency over all BFCL tools instead.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="k of recall@k (with --retrieval).")
@click.option("-c", "--ctx", "n_ctx", type=int, default=8192, show_default=True, help="Context length of edge's runs.")
@click.option("--baseline-ctx", type=int, default=4096, show_default=True,
              help="Context cap of the baseline; prompts over it count as wrong.")
@click.option("-n", "--max-tokens", type=int, default=192, show_default=True,
              help="Tokens each system may generate per item; unfinished counts as wrong.")
@click.option("--threads", type=int, default=None,
              help="CPU threads of both systems (1 stays fast when other jobs share the cores).")
@click.option("--failures", "show_failures", type=int, default=0, help="Print this many failures per row.")
@model_option
@backend_option
@json_option
@renamed("--top-k", "--max-tools", "top_k", type=int)
def eval_bfcl(category, limit, top_k, baseline, retrieval, k, n_ctx, baseline_ctx, max_tokens, threads, show_failures,
              model, backend, as_json):
    """Function-calling accuracy on BFCL: edge vs the chatml-function-calling baseline."""
    from ..eval import bfcl

    if retrieval:
        out = bfcl.retrieval(k=k, limit=limit or None)
        if as_json:
            print_json(out)
            return
        click.echo(f"pool: {out['pool_tools']} tools ({out['skipped_tools']} unusable skipped), "
                   f"{out['queries']} queries, {out['functions']} expected functions")
        click.echo(f"recall@{k} per function: {out[f'recall@{k}']:.4f} (tuning half {out['recall_tune_half']:.4f}, "
                   f"held-out half {out['recall_held_out_half']:.4f}); all functions of a query: {out['query_recall']:.4f}")
        click.echo(f"recall@{k} counting equivalent tools: {out['recall_equivalent']:.4f} (tuning half "
                   f"{out['recall_equivalent_tune_half']:.4f}, held-out half {out['recall_equivalent_held_out_half']:.4f}); "
                   f"equivalent: description cosine >= {out['equivalent_cosine']} and a parameter name in common")
        click.echo(f"latency p50 {out['p50_ms']:.2f} ms, p95 {out['p95_ms']:.2f} ms "
                   f"(load average {out['load_average'][0]:.2f} -> {out['load_average'][1]:.2f})")
        for cat, r in out["by_category"].items():
            click.echo(f"  {cat:<24}{r:.4f}")
        ps = out["live_multiple_prompt_tokens"]
        click.echo(f"prompt tokens on {ps['category']} ({ps['items']} items): all tools {ps['prompt_tokens_all_tools']}, "
                   f"kept tools {ps['prompt_tokens']}: {ps['ratio']:.2f}x smaller (tuning half {ps['ratio_tune_half']:.2f}x, "
                   f"held-out half {ps['ratio_held_out_half']:.2f}x); expected functions kept {ps['expected_kept']:.4f}")
        return
    cats = [c.strip() for c in category.split(",") if c.strip()]

    def progress(system, cat, i, n, ok):
        click.echo(f"\r{system:<9}{cat:<24}{i}/{n}", nl=False, err=True)

    out = bfcl.run(cats, limit=limit or None, model=model, backend=backend, baseline=baseline, top_k=top_k,
                   n_ctx=n_ctx, baseline_ctx=baseline_ctx, max_tokens=max_tokens, threads=threads,
                   progress=progress)
    click.echo("", err=True)
    if as_json:
        print_json(out)
        return
    click.echo(bfcl.table(out))
    for row, fails in out["failures"].items():
        for f in fails[:show_failures]:
            click.echo(f"{row} {f['id']}: {f['why']}; calls {json.dumps(f['calls'], ensure_ascii=False)[:160]}")


@click.command("tools")
@click.option("--backend", "backends", default="llama.cpp,onnx", show_default=True,
              help="Comma-separated backends to evaluate, each on the same requests.")
@click.option("--limit", type=int, default=0, show_default=True, help="Requests to run (0: all 100).")
@click.option("--threads", type=int, default=None, help="CPU threads of the model.")
@click.option("--failures", "show_failures", type=int, default=0, help="Print this many failures per backend.")
@model_option
@json_option
def eval_tools(backends, limit, threads, show_failures, model, as_json):
    """Assistant requests with known results: call accuracy and answer-states-result per backend.

    \b
    Examples:
      edge eval tools                          # llama.cpp and onnx, all 100 requests
      edge eval tools --backend llama.cpp --limit 20 --failures 5
    """
    from ..eval import tools as ev

    def progress(backend, i, n):
        click.echo(f"\r{backend:<12}{i}/{n}", nl=False, err=True)

    out = ev.run(split_list(backends), model=model, limit=limit or None, threads=threads, progress=progress)
    click.echo("", err=True)
    if as_json:
        print_json(out)
        return
    click.echo(ev.table(out))
    for backend, fails in out["failures"].items():
        for f in fails[:show_failures]:
            click.echo(f"{backend} {f['request']!r}: {f['why']}; calls {json.dumps(f['calls'], ensure_ascii=False)[:120]}; "
                       f"answer {f['answer'][:120]!r}")


def split_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]
