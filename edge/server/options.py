"""Settings of the OpenAI-compatible server, and its constants.

`ServerOptions` is what `edge serve` forwards and what `create_app` reads;
each field carries its help text so the CLI cannot drift from the library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080
# The name /v1/embeddings answers to (and /v1/models lists) when an encoder is loaded.
EMBEDDING_MODEL = "all-minilm-l6-v2"
# Refusal text a guard-blocked chat request receives as its assistant message.
REFUSAL = "I can't help with that request."
OWNER = "edge"


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ServerOptions:
    """How the server listens, queues and checks requests."""

    host: str = _opt(LOOPBACK, "Address to bind; the default accepts connections from this machine only.")
    port: int = _opt(DEFAULT_PORT, "TCP port to listen on.")
    api_key: Optional[str] = _opt(None, "Require `Authorization: Bearer KEY` on every /v1 request.")
    cors: list[str] = _opt(None, "Origins allowed by CORS ('*' for any); CORS is off when empty.")
    queue_size: int = _opt(32, "Requests that may wait for the model; past this the server answers 503 with Retry-After.")
    max_body_bytes: int = _opt(4 * 1024 * 1024, "Largest request body accepted; larger ones get 413.")
    max_tokens: int = _opt(256, "Completion length when a request does not set max_tokens.")
    guard: bool = _opt(True, "Check chat prompts with the prompt guard; blocked ones get a refusal, flagged.")
    guard_threshold: Optional[float] = _opt(None, "Guard score above which a prompt is blocked (default: the guard's own).")
    embeddings: bool = _opt(True, "Serve /v1/embeddings with the MiniLM encoder (loaded on first use).")
    schema_max_bytes: int = _opt(8192, "Largest JSON schema (response_format or one tool's parameters), in bytes of "
                                 "compact JSON; the schema also goes into the prompt, so larger ones get 400.")
    schema_max_enum: int = _opt(64, "Most enum values a schema may list in all; longer enums get 400.")
    grammar_timeout_s: float = _opt(2.0, "Seconds a response_format grammar may take to compile (and give its first "
                                    "mask) before the request runs; slower ones get 400.")
    served_name: Optional[str] = _opt(None, "Model id clients send and /v1/models lists (default: the model's name).")

    def __post_init__(self):
        from ..errors import InvalidOption

        self.cors = [self.cors] if isinstance(self.cors, str) else list(self.cors or [])
        if not 0 < self.port < 65536:
            raise InvalidOption(f"port must be in 1..65535 (got {self.port}).")
        if self.queue_size < 1:
            raise InvalidOption(f"queue_size must be at least 1 (got {self.queue_size}).")
        if self.max_body_bytes < 1024:
            raise InvalidOption(f"max_body_bytes must be at least 1024 (got {self.max_body_bytes}).")
        if self.schema_max_bytes < 64 or self.schema_max_enum < 1 or self.grammar_timeout_s <= 0:
            raise InvalidOption("schema_max_bytes must be at least 64, schema_max_enum at least 1 and "
                                "grammar_timeout_s above 0.")
        if self.max_tokens < 1:
            raise InvalidOption(f"max_tokens must be at least 1 (got {self.max_tokens}).")
