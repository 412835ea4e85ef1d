"""Server counters, rendered in the Prometheus text exposition format.

Updated from the event loop and the generation worker, hence the lock.
"""
from __future__ import annotations

import threading
from collections import defaultdict

PREFIX = "edge"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.decode_tokens = 0  # tokens after the first, over decode_seconds: the average tok/s
        self.decode_seconds = 0.0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.last_decode_tok_s = 0.0
        self.guard_blocks = 0
        self.cancelled = 0
        self.rejected = 0
        self.embedded_inputs = 0
        self.rpc_workers_lost = 0

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def generation(self, prompt_tokens: int, completion_tokens: int, ttft_s: float, decode_tok_s: float) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if ttft_s > 0:
                self.ttft_sum += ttft_s
                self.ttft_count += 1
            if decode_tok_s > 0 and completion_tokens > 1:
                self.last_decode_tok_s = decode_tok_s
                self.decode_tokens += completion_tokens - 1
                self.decode_seconds += (completion_tokens - 1) / decode_tok_s

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def render(self, queue_depth: int, active: int, devices: list[dict] | None = None) -> str:
        """The /metrics page."""
        with self._lock:
            lines: list[str] = []

            def metric(name, kind, help_, samples):
                # samples: (suffix, labels, value); the suffix serves summaries' _sum/_count.
                lines.append(f"# HELP {PREFIX}_{name} {help_}")
                lines.append(f"# TYPE {PREFIX}_{name} {kind}")
                for suffix, labels, value in samples:
                    lab = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
                    text = f"{value:.6g}" if isinstance(value, float) else str(value)
                    lines.append(f"{PREFIX}_{name}{suffix}{lab} {text}")

            def one(value):
                return [("", {}, value)]

            metric("requests_total", "counter", "HTTP requests answered, by endpoint and status.",
                   [("", {"endpoint": e, "status": s}, n) for (e, s), n in sorted(self.requests.items())])
            metric("prompt_tokens_total", "counter", "Prompt tokens processed.", one(self.prompt_tokens))
            metric("completion_tokens_total", "counter", "Completion tokens generated.", one(self.completion_tokens))
            avg = self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0
            metric("decode_tokens_per_second", "gauge", "Decode speed of the last generation.",
                   one(float(self.last_decode_tok_s)))
            metric("decode_tokens_per_second_avg", "gauge", "Decode speed over all generations.", one(float(avg)))
            metric("time_to_first_token_seconds", "summary", "Time from the start of a generation to its first token.",
                   [("_sum", {}, float(self.ttft_sum)), ("_count", {}, self.ttft_count)])
            metric("guard_blocks_total", "counter", "Requests the prompt guard refused.", one(self.guard_blocks))
            metric("cancelled_total", "counter", "Generations stopped because the client went away.", one(self.cancelled))
            metric("rejected_total", "counter", "Requests refused with 503 because the queue was full.", one(self.rejected))
            metric("embedded_inputs_total", "counter", "Texts embedded by /v1/embeddings.", one(self.embedded_inputs))
            metric("queue_depth", "gauge", "Requests waiting for the model.", one(queue_depth))
            metric("active_generations", "gauge", "Generations running now (0 or 1: one model, one worker).", one(active))
            if devices:
                metric("device_layers", "gauge", "Model layers each device holds (model split across RPC workers).",
                       [("", {"device": d["name"], "endpoint": d["endpoint"] or "local"}, d["n_layers"]) for d in devices])
            metric("rpc_workers_lost_total", "counter", "Generations stopped because an RPC worker went away.",
                   one(self.rpc_workers_lost))
            return "\n".join(lines) + "\n"
