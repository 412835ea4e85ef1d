"""Shared test set-up: an isolated model store per test session.

Tests never touch the user's store: EDGE_HOME points into a temporary folder.
Tests marked `slow` load the real SmolLM2-135M or convert it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"  # screenshots and other artefacts a person may look at


@pytest.fixture(scope="session", autouse=True)
def edge_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("edge-home")
    old = os.environ.get("EDGE_HOME")
    os.environ["EDGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EDGE_HOME", None)
    else:
        os.environ["EDGE_HOME"] = old


@pytest.fixture(scope="session")
def output_dir():
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT
