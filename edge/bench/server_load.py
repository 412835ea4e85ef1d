"""Load test of the OpenAI-compatible server: concurrent streaming clients.

    python -m edge.bench.server_load                      # 8 clients, 100 requests, own server on SmolLM2
    python -m edge.bench.server_load --requests 24 --max-tokens 16 --threads 1
    python -m edge.bench.server_load --url http://127.0.0.1:8080 --api-key KEY

Each client streams chat completions (SSE) one after the other until the
requests are used up. Reported: time to first token (p50/p95, from sending
the request to the first content delta, so queueing counts), request
latency, completion tokens per second over the wall time, and errors: any
non-200 status, broken stream, missing usage or missing [DONE]. A request
that never completes counts as lost. The goal is 0 errors, 0 lost.

`sweep` (what `edge bench --server --clients 1,2,4,8` runs) measures batching:
for each client count, that many clients stream greedy replies at once
through the official `openai` client; reported are aggregate and per-client
tokens/s and time to first token, for edge and, on the same GGUF and
threads, for llama.cpp's own `llama-server --parallel` (built by
`make llama-tools`; skipped with a message when it is missing).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

QUESTIONS = [
    "What is the capital of France?", "Name three colours.", "What is 2 + 2?", "Say hello in Spanish.",
    "What is the boiling point of water?", "Name a planet.", "What do bees make?", "Give me a fruit.",
    "What is the opposite of hot?", "How many days are in a week?", "What animal barks?", "Name a tree.",
]


@dataclass
class Outcome:
    ok: bool
    ttft_s: float | None = None
    latency_s: float = 0.0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Report:
    url: str
    clients: int
    requests: int
    max_tokens: int
    completed: int = 0
    errors: int = 0
    lost: int = 0
    wall_s: float = 0.0
    ttft_p50_s: float = 0.0
    ttft_p95_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    completion_tokens: int = 0
    throughput_tok_s: float = 0.0
    requests_per_s: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join([
            f"server      {self.url}",
            f"load        {self.clients} concurrent streaming clients, {self.requests} requests, "
            f"max_tokens {self.max_tokens}",
            f"completed   {self.completed}/{self.requests}   errors {self.errors}   lost {self.lost}",
            f"TTFT        p50 {self.ttft_p50_s * 1000:.0f} ms   p95 {self.ttft_p95_s * 1000:.0f} ms",
            f"latency     p50 {self.latency_p50_s:.2f} s   p95 {self.latency_p95_s:.2f} s",
            f"throughput  {self.throughput_tok_s:.1f} completion tok/s   {self.requests_per_s:.2f} req/s   "
            f"({self.completion_tokens} tokens in {self.wall_s:.1f} s)",
        ] + [f"error       {e}" for e in self.error_samples])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def one_request(client, url: str, model: str, question: str, max_tokens: int) -> Outcome:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, usage, done = None, None, False
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                return Outcome(False, error=f"HTTP {r.status_code}: {text[:120]}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                ev = json.loads(data)
                if "error" in ev:
                    return Outcome(False, error=f"stream error: {ev['error'].get('message')}")
                if ev.get("usage"):
                    usage = ev["usage"]
                for ch in ev.get("choices", []):
                    if ttft is None and ch.get("delta", {}).get("content"):
                        ttft = time.perf_counter() - t0
    except Exception as exc:  # a broken connection is an error to report, not a crash
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - t0
    if not done or usage is None:
        return Outcome(False, ttft, latency, error="stream ended without usage and [DONE]")
    return Outcome(True, ttft, latency, usage["completion_tokens"])


async def run_load(url: str, model: str, clients: int = 8, requests: int = 100, max_tokens: int = 32,
                   api_key: str | None = None, timeout_s: float = 600.0) -> Report:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    todo = list(range(requests))
    outcomes: list[Outcome] = []

    async def client_loop(client):
        while todo:
            i = todo.pop(0)
            outcomes.append(await one_request(client, url, model, QUESTIONS[i % len(QUESTIONS)], max_tokens))

    limits = httpx.Limits(max_connections=clients)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    wall = time.perf_counter() - t0

    ok = [o for o in outcomes if o.ok]
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    lat = [o.latency_s for o in ok]
    tokens = sum(o.completion_tokens for o in ok)
    errors = [o for o in outcomes if not o.ok]
    return Report(
        url, clients, requests, max_tokens, completed=len(ok), errors=len(errors),
        lost=requests - len(outcomes), wall_s=wall,
        ttft_p50_s=percentile(ttfts, 50), ttft_p95_s=percentile(ttfts, 95),
        latency_p50_s=percentile(lat, 50), latency_p95_s=percentile(lat, 95),
        completion_tokens=tokens, throughput_tok_s=tokens / wall if wall else 0.0,
        requests_per_s=len(ok) / wall if wall else 0.0,
        error_samples=sorted({o.error for o in errors if o.error})[:5],
    )


def start_server(model: str | None, threads: int | None = None, timeout_s: float = 300.0, extra: tuple = ()):
    """`edge serve` on a free loopback port (guard off: this measures generation and serving)."""
    import subprocess

    from edge.server.run import free_port

    port = free_port()
    cmd = [sys.executable, "-c", "from edge.cli import main; main()", "serve", "--port", str(port),
           "--no-guard", "--log-level", "warning", *extra] + (["-m", model] if model else [])
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    _wait(proc, url, "edge serve", timeout_s)
    return proc, url


# -- the client-count sweep ---------------------------------------------------------------

STORIES = [
    "Write a long story about a robot who learns to paint.", "Write a long story about a lighthouse keeper.",
    "Write a long story about a dragon who is afraid of fire.", "Write a long story about a city under the sea.",
    "Write a long story about a clock that runs backwards.", "Write a long story about a cat who becomes mayor.",
    "Write a long story about the last tree on Mars.", "Write a long story about a library that never closes.",
]


@dataclass
class SweepRow:
    server: str
    clients: int
    requests: int
    completion_tokens: int
    wall_s: float
    aggregate_tok_s: float
    per_client_tok_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    errors: int = 0


async def _openai_stream(client, model: str, question: str, max_tokens: int) -> Outcome:
    t0 = time.perf_counter()
    ttft, n_chunks, usage = None, 0, None
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0,
            stream=True, stream_options={"include_usage": True})
        async for ev in stream:
            if ev.usage:
                usage = ev.usage.completion_tokens
            for ch in ev.choices:
                if ch.delta.content:
                    n_chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    except Exception as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    return Outcome(True, ttft, time.perf_counter() - t0, usage if usage is not None else n_chunks)


async def _round(url: str, model: str, clients: int, per_client: int, max_tokens: int) -> tuple[list[Outcome], float]:
    import httpx
    import openai

    outcomes: list[Outcome] = []
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 2), timeout=600)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", http_client=http, max_retries=0)

    async def one_client(k: int):
        for j in range(per_client):
            outcomes.append(await _openai_stream(client, model, STORIES[(k + j * clients) % len(STORIES)], max_tokens))

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one_client(k) for k in range(clients)))
    finally:
        await http.aclose()
    return outcomes, time.perf_counter() - t0


def measure(server: str, url: str, model: str, clients: int, per_client: int, max_tokens: int) -> SweepRow:
    outcomes, wall = asyncio.run(_round(url, model, clients, per_client, max_tokens))
    ok = [o for o in outcomes if o.ok]
    tokens = sum(o.completion_tokens for o in ok)
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    # What one client sees: its reply's tokens over the time it streamed them.
    rates = [(o.completion_tokens - 1) / (o.latency_s - o.ttft_s) for o in ok
             if o.ttft_s is not None and o.completion_tokens > 1 and o.latency_s > o.ttft_s]
    return SweepRow(server, clients, len(outcomes), tokens, round(wall, 2), round(tokens / wall, 2) if wall else 0.0,
                    round(statistics.median(rates), 2) if rates else 0.0,
                    round(percentile(ttfts, 50) * 1000, 1), round(percentile(ttfts, 95) * 1000, 1),
                    len(outcomes) - len(ok))


def _wait(proc, url: str, what: str, timeout_s: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see its message above.")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(f"{what} did not answer on {url} within {timeout_s:.0f} s.")
        time.sleep(0.2)


def start_edge(model: str | None, threads: int | None, parallel: int, n_ctx: int):
    return start_server(model, threads, extra=("--no-embeddings", "--parallel", str(parallel), "--ctx", str(n_ctx),
                                                "--backend", "llama.cpp"))


def llama_server_binary():
    """llama.cpp's llama-server built by `make llama-tools`, or None."""
    import shutil
    from importlib.metadata import PackageNotFoundError, version

    from edge.store import home

    try:
        ver = version("llama-cpp-python")
    except PackageNotFoundError:
        return None
    exe = home() / f"llama.cpp-{ver}" / "bin" / "llama-server"
    if exe.is_file():
        return exe
    found = shutil.which("llama-server")
    return type(exe)(found) if found else None


def start_llama_server(exe, gguf: str, threads: int, parallel: int, n_ctx: int):
    import subprocess

    from edge.server.run import free_port

    port = free_port()
    # -c is the whole context, split between the --parallel slots: n_ctx each, as edge.
    cmd = [str(exe), "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads),
           "-np", str(parallel), "-c", str(n_ctx * parallel), "--no-kv-unified", "--no-webui", "-lv", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait(proc, url, "llama-server")
    return proc, url


def sweep(clients: list[int], model: str | None = None, threads: int | None = None, max_tokens: int = 96,
          per_client: int = 2, n_ctx: int = 1024, llama: bool = True, say=print) -> dict:
    """Edge (and llama-server) at each client count; returns {"rows": [...], "skipped": [...], ...}."""
    import edge
    from edge.config import default_threads

    threads = threads or default_threads()
    parallel = max(clients)
    m = edge.load(model, backend="llama.cpp", n_ctx=n_ctx, threads=threads, guard=False)
    gguf, label, name = str(m.artifact.main_path), m.artifact.label, m.name
    m.close()
    rows, skipped = [], []
    servers = [("edge", lambda: start_edge(model, threads, parallel, n_ctx))]
    exe = llama_server_binary() if llama else None
    if llama and exe is None:
        skipped.append("llama-server: not built; run `make llama-tools` (scripts/build_llama_tools.sh)")
        say(f"skipped {skipped[-1]}")
    if exe is not None:
        servers.append(("llama-server", lambda: start_llama_server(exe, gguf, threads, parallel, n_ctx)))
    for server, start in servers:
        proc, url = start()
        try:
            sent = name if server == "edge" else label
            measure(server, url, sent, 1, 1, 8)  # warm-up: page cache, thread pools
            for c in clients:
                row = measure(server, url, sent, c, per_client, max_tokens)
                rows.append(row)
                say(format_row(row))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"model": label, "threads": threads, "parallel": parallel, "max_tokens": max_tokens,
            "requests_per_client": per_client, "rows": [asdict(r) for r in rows], "skipped": skipped}


HEADER = f"{'server':<13}{'clients':>8}{'agg tok/s':>11}{'per-client':>12}{'TTFT p50':>10}{'TTFT p95':>10}{'errors':>8}"


def format_row(r: SweepRow) -> str:
    return (f"{r.server:<13}{r.clients:>8}{r.aggregate_tok_s:>11.1f}{r.per_client_tok_s:>12.1f}"
            f"{r.ttft_p50_ms:>8.0f}ms{r.ttft_p95_ms:>8.0f}ms{r.errors:>8}")


def table(result: dict) -> str:
    lines = [f"model {result['model']}, {result['threads']} threads, --parallel {result['parallel']}, "
             f"{result['max_tokens']}-token greedy replies, {result['requests_per_client']} per client", HEADER]
    base = {}
    for d in result["rows"]:
        r = SweepRow(**d)
        base.setdefault(r.server, r.aggregate_tok_s)
        lines.append(format_row(r) + (f"   x{r.aggregate_tok_s / base[r.server]:.2f}" if base[r.server] else ""))
    lines += [f"skipped {s}" for s in result["skipped"]]
    return "\n".join(lines)


def plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for i, server in enumerate(dict.fromkeys(r["server"] for r in result["rows"])):
        rows = [r for r in result["rows"] if r["server"] == server]
        x, color = [r["clients"] for r in rows], f"C{i}"
        a.plot(x, [r["aggregate_tok_s"] for r in rows], marker="o", color=color, label=server)
        b.plot(x, [r["ttft_p50_ms"] for r in rows], marker="o", color=color, label=f"{server} p50")
        b.plot(x, [r["ttft_p95_ms"] for r in rows], marker="x", ls="--", color=color, label=f"{server} p95")
    a.set(xlabel="concurrent clients", ylabel="aggregate tok/s", title=result["model"])
    b.set(xlabel="concurrent clients", ylabel="time to first token (ms)")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.bench.server_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="A running server (default: start one on a free loopback port).")
    p.add_argument("-m", "--model", default=None, help="Model to load for the server it starts, or the id to "
                   "send to --url (default: SmolLM2-135M-Instruct / the first of GET /v1/models).")
    p.add_argument("--clients", type=int, default=8, help="Concurrent streaming clients (default 8).")
    p.add_argument("--requests", type=int, default=100, help="Requests in all, shared by the clients (default 100).")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each request (default 32).")
    p.add_argument("--api-key", default=None, help="Bearer token for --url.")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the server it starts (default: edge's).")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    a = p.parse_args(argv)
    if a.clients < 1 or a.requests < 1 or a.max_tokens < 1:
        p.error("--clients, --requests and --max-tokens must be at least 1")

    server = None
    url, model = a.url, a.model
    if url is None:
        # A separate process, as in production: the clients here do not share its GIL or event loop.
        server, url = start_server(a.model, a.threads)
    url = url.rstrip("/")
    if model is None:
        import httpx

        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        model = httpx.get(f"{url}/v1/models", headers=headers).json()["data"][0]["id"]
    try:
        report = asyncio.run(run_load(url, model, a.clients, a.requests, a.max_tokens, a.api_key))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(asdict(report), indent=2) if a.json else report.text())
    return 0 if report.errors == 0 and report.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
