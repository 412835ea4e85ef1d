"""The catalog of known models and the device profiles, as package data.

`catalog.json` names each known model and where its files come from (a PyPI
package for the embedded default); `profiles/*.json` describe devices we
cannot run here, so selection can decide as it would on them; `rules.json` is
selection's table of which backend each kind of device prefers.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


def _read(name: str) -> dict:
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def catalog() -> dict:
    """Known models by name."""
    return _read("catalog.json")["models"]


def default_model() -> str:
    return _read("catalog.json")["default"]


@lru_cache(maxsize=1)
def rules() -> dict:
    """Selection's table: rules (first match wins), memory margins, quant order."""
    return _read("rules.json")


@lru_cache(maxsize=None)
def profiles() -> dict:
    """Device profiles by name."""
    folder = resources.files(__package__).joinpath("profiles")
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            out[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
    return out
