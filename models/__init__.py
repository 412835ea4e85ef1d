"""The catalog of known models and the device profiles, as data files.

`catalog.json` names each known model and where its files come from (a PyPI
package for the embedded default); `profiles/*.json` describe devices we
cannot run here, so selection can decide as it would on them.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def catalog() -> dict:
    """Known models by name."""
    return json.loads((HERE / "catalog.json").read_text())["models"]


def default_model() -> str:
    return json.loads((HERE / "catalog.json").read_text())["default"]


@lru_cache(maxsize=None)
def profiles() -> dict:
    """Device profiles by name."""
    out = {}
    for p in sorted((HERE / "profiles").glob("*.json")):
        out[p.stem] = json.loads(p.read_text())
    return out
