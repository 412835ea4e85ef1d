"""Render a model's own chat template (Jinja, as Hugging Face tokenizers do).

Shared by every backend so the same messages give the same prompt text
everywhere; rendered in a sandbox as transformers does.
"""
from __future__ import annotations

from functools import lru_cache

from .errors import InvalidOption

# Used only when a model ships no template at all.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2 import StrictUndefined  # noqa: F401  (kept lenient like transformers)

    def raise_exception(msg):
        raise InvalidOption(f"The chat template refused the messages: {msg}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    import json as _json

    env.filters["tojson"] = lambda x, indent=None, **_: _json.dumps(x, ensure_ascii=False, indent=indent)
    return env.from_string(template)


def render(template: str | None, messages: list[dict], add_generation_prompt: bool = True,
           bos_token: str = "", eos_token: str = "", tools: list | None = None) -> str:
    check_messages(messages)
    tpl = _compile(template or CHATML)
    return tpl.render(messages=messages, add_generation_prompt=add_generation_prompt,
                      bos_token=bos_token, eos_token=eos_token, tools=tools)


def check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidOption("messages must be a non-empty list of {'role', 'content'} objects.")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content", ""), str):
            raise InvalidOption(f"Each message needs a 'role' and a text 'content' (got {m!r:.80}).")
