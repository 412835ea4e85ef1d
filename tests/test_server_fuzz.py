"""Fuzz the server against its own /openapi.json with schemathesis: no request gets a 500.

Schemathesis generates bodies that fit the request models and bodies that do not
(positive and negative modes), a bounded number per route, against the app in
process with the tiny random model, a keyword guard and a stub encoder, so the
whole run takes seconds. Answers are also checked against the response models.
"""
from __future__ import annotations

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance, response_schema_conformance, status_code_conformance)

from edge.server.app import create_app  # noqa: E402
from edge.server.options import ServerOptions  # noqa: E402
from edge.server.run import Background, free_port  # noqa: E402
from test_server_api import KeywordGuard, tiny_model  # noqa: E402

# Examples per route and generation mode: enough to reach every field, small enough for make test.
EXAMPLES = 30


class StubEncoder:
    """Stands in for MiniLM: one 8-float vector per text, from its length."""

    def encode(self, texts):
        return np.array([[len(t) % 7] * 8 for t in texts], dtype=np.float32)


def server_app(**kw):
    return dict(model=tiny_model(n_ctx=512), options=ServerOptions(port=free_port(), embeddings=True, max_tokens=8),
                guard=KeywordGuard(), encoder=StubEncoder(), **kw)


def spec() -> dict:
    """The spec, read at collection (schemathesis makes one test per route) from an app that serves nothing."""
    app = create_app(**server_app())
    app.state.server.worker.stop()
    return app.openapi()


schema = schemathesis.openapi.from_dict(spec())


@pytest.fixture(scope="module")
def srv():
    # A real server on loopback: the same path (uvicorn, threads, streaming) clients take.
    args = server_app()
    with Background(args.pop("model"), args.pop("options"), **args) as s:
        yield s


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case, srv):
    case.call_and_validate(base_url=srv.url, checks=[not_a_server_error, status_code_conformance,
                                                     content_type_conformance, response_schema_conformance])
