"""The OpenAI-compatible ASGI app (FastAPI) around one loaded `Model`.

Routes: GET /health, GET /metrics, GET /v1/models[/{id}], POST
/v1/chat/completions (SSE or not, tools, response_format), POST
/v1/completions, POST /v1/embeddings, and GET /openapi.json and /docs from
the pydantic models in protocol.py. Handlers read the body themselves
(size limit, nesting limit, OpenAI error codes) and only parse, check and
format; the model runs on the single generation worker (worker.py); the
prompt guard, tool calls and JSON schemas come through features.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from . import features, protocol
from .errors import NOT_FOUND, OVERLOADED, APIError, bad, from_edge
from .gate import Gate
from .jobs import DISCONNECT_POLL_S, new_id, collect, first_event, generation, read_json, sse, usage
from .metrics import Metrics
from .options import EMBEDDING_MODEL, OWNER, REFUSAL, ServerOptions
from .scheduler import for_model
from .worker import ERROR, PIECE, Job, QueueFull

class ClientGone(Exception):
    """The client disconnected while its request waited or ran: nothing to answer, nothing to log."""


async def until_gone(awaitable, request, job: Job):
    """Await a job's events while watching the client: if it leaves, cancel the job and raise ClientGone."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                break
    except asyncio.CancelledError:
        if not await request.is_disconnected():
            raise
    finally:
        task.cancel()
    job.cancel()
    raise ClientGone()


class Server:
    """State shared by the handlers: model, worker, metrics, optional encoder and guard."""

    def __init__(self, model, options: ServerOptions, guard=None, encoder=None):
        self.model = model
        self.options = options
        self.metrics = Metrics()
        self.worker = for_model(model, self.metrics, options.queue_size)
        self.name = options.served_name or model.name
        self.created = int(time.time())
        self.guard = guard if guard is not None else (features.Guard(options.guard_threshold) if options.guard else None)
        self._encoder = encoder

    @property
    def n_ctx(self) -> int:
        return self.model.backend.n_ctx

    def encoder(self):
        if self._encoder is None:
            self._encoder = features.encoder()
        return self._encoder

    def served(self) -> list[str]:
        return [self.name] + ([EMBEDDING_MODEL] if self.options.embeddings else [])

    def check_model(self, name: str, kind: str = "chat") -> None:
        wanted = EMBEDDING_MODEL if kind == "embedding" else self.name
        if name != wanted and not (kind == "chat" and name == self.model.name):
            if name in self.served():
                raise bad(f"The model '{name}' cannot serve this endpoint; use '{wanted}'.", "model", "wrong_model_type")
            raise protocol.unknown_model(name, self.served())

    # -- running jobs ------------------------------------------------------------
    def submit(self, start) -> Job:
        job = Job(start, asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except QueueFull as exc:
            self.metrics.add("rejected")
            raise APIError(503, f"{exc} The model is busy; retry later.", OVERLOADED, None, "queue_full",
                           {"Retry-After": str(exc.retry_after)}) from None
        return job


# -- the app -------------------------------------------------------------------

def create_app(model, options: ServerOptions | None = None, guard=None, encoder=None):
    """The FastAPI app serving `model` (an `edge.Model`).

    guard: an object with `check(text) -> verdict` (default: edge's prompt
    guard when options.guard); encoder: an object with `encode(texts)`
    (default: the MiniLM encoder, loaded at the first /v1/embeddings call).
    """
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

    options = options or ServerOptions()
    server = Server(model, options, guard, encoder)

    def error_response(exc: APIError):
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": server.name, "backend": model.backend_name,
                             "queue_depth": server.worker.depth, "active": server.worker.active,
                             "devices": getattr(model, "devices", None)})

    async def metrics(request: Request):
        return PlainTextResponse(server.metrics.render(server.worker.depth, server.worker.active,
                                                       getattr(server.model, "devices", None)),
                                 media_type="text/plain; version=0.0.4")

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": server.created, "owned_by": OWNER}

    async def list_models(request: Request):
        return JSONResponse({"object": "list", "data": [model_card(n) for n in server.served()]})

    async def get_model(name: str):
        if name not in server.served():
            raise protocol.unknown_model(name, server.served())
        return JSONResponse(model_card(name))

    # -- chat ------------------------------------------------------------------
    async def chat(request: Request):
        req = protocol.parse_chat(await read_json(request, options.max_body_bytes))
        server.check_model(req.model)
        cid, created = new_id("chatcmpl"), int(time.time())
        if server.guard is not None:
            verdict = await features.screen(server.guard, req.messages)
            if verdict is not None:
                server.metrics.add("guard_blocks")
                return blocked_chat(req, cid, created, verdict)
        plan = features.plan(req, features.SchemaLimits.of(options))
        if plan.grammar is not None:
            await features.check_grammar(model.backend, plan.grammar, options.grammar_timeout_s, "response_format")
        start = generation(server, plan.prompt, req.sampling, plan.post, plan.run)
        job = server.submit(start)
        first = await until_gone(first_event(job, request), request, job)
        if first[0] == ERROR:
            raise from_edge(first[1])
        if req.sampling.stream:
            return StreamingResponse(stream_chat(job, first, plan, req, cid, created, start.stats),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        text = await until_gone(collect(job, request, first), request, job)
        message, finish = plan.message(text, start.stats.get("finish_reason", "stop"))
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": server.name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage(start.stats), "system_fingerprint": f"edge-{model.backend_name}",
        })

    def chunk(cid, created, delta, finish=None) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": server.name,
                "system_fingerprint": f"edge-{model.backend_name}",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    async def stream_chat(job, first, plan, req, cid, created, stats) -> AsyncIterator[str]:
        try:
            yield sse(chunk(cid, created, {"role": "assistant", "content": ""}))
            kind, value = first
            while kind == PIECE:
                if plan.streams_text:
                    yield sse(chunk(cid, created, {"content": value}))
                else:
                    plan.buffer.append(value)
                kind, value = await job.events.get()
            if kind == ERROR:
                yield sse(from_edge(value).body())
                return
            finish = stats.get("finish_reason", "stop")
            if not plan.streams_text:
                message, finish = plan.message("".join(plan.buffer), finish)
                yield sse(chunk(cid, created, plan.delta(message)))
            yield sse(chunk(cid, created, {}, finish))
            if req.sampling.include_usage:
                yield sse({**chunk(cid, created, {}), "choices": [], "usage": usage(stats)})
            yield "data: [DONE]\n\n"
        finally:
            # Runs when the client disconnects too: the worker stops after the token in flight.
            job.cancel()

    def blocked_chat(req, cid, created, verdict):
        flag = {"blocked": True, **features.verdict_dict(verdict)}
        refusal = features.refusal_text(verdict, REFUSAL)
        if req.sampling.stream:
            async def events():
                yield sse({**chunk(cid, created, {"role": "assistant", "content": "", "refusal": refusal}), "guard": flag})
                yield sse({**chunk(cid, created, {"content": refusal}), "guard": flag})
                yield sse({**chunk(cid, created, {}, "content_filter"), "guard": flag})
                if req.sampling.include_usage:
                    yield sse({**chunk(cid, created, {}), "choices": [], "usage": usage({})})
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": server.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": refusal, "refusal": refusal},
                         "finish_reason": "content_filter", "logprobs": None}],
            "usage": usage({}), "guard": flag,
        })

    # -- text completions -------------------------------------------------------------
    async def completions(request: Request):
        req = protocol.parse_completion(await read_json(request, options.max_body_bytes))
        server.check_model(req.model)
        cid, created = new_id("cmpl"), int(time.time())
        if server.guard is not None:
            verdict = await features.screen(server.guard, prompt=req.prompt, model=model)
            if verdict is not None:
                server.metrics.add("guard_blocks")
                return blocked_completion(req, cid, created, verdict)
        start = generation(server, lambda m: req.prompt, req.sampling)
        job = server.submit(start)
        first = await until_gone(first_event(job, request), request, job)
        if first[0] == ERROR:
            raise from_edge(first[1])

        def body(text, finish):
            return {"id": cid, "object": "text_completion", "created": created, "model": server.name,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

        if req.sampling.stream:
            async def events():
                try:
                    kind, value = first
                    while kind == PIECE:
                        yield sse(body(value, None))
                        kind, value = await job.events.get()
                    if kind == ERROR:
                        yield sse(from_edge(value).body())
                        return
                    yield sse(body("", start.stats.get("finish_reason", "stop")))
                    if req.sampling.include_usage:
                        yield sse({**body("", None), "choices": [], "usage": usage(start.stats)})
                    yield "data: [DONE]\n\n"
                finally:
                    job.cancel()
            return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        text = await until_gone(collect(job, request, first), request, job)
        return JSONResponse({**body(text, start.stats.get("finish_reason", "stop")), "usage": usage(start.stats)})

    def blocked_completion(req, cid, created, verdict):
        flag = {"blocked": True, **features.verdict_dict(verdict)}
        refusal = features.refusal_text(verdict, REFUSAL)

        def body(text, finish):
            return {"id": cid, "object": "text_completion", "created": created, "model": server.name,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], "guard": flag}

        if req.sampling.stream:
            async def events():
                yield sse(body(refusal, None))
                yield sse(body("", "content_filter"))
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({**body(refusal, "content_filter"), "usage": usage({})})

    # -- embeddings -----------------------------------------------------------------
    async def embeddings(request: Request):
        from starlette.concurrency import run_in_threadpool

        req = protocol.parse_embedding(await read_json(request, options.max_body_bytes))
        if not options.embeddings:
            raise protocol.unknown_model(req.model, server.served())
        server.check_model(req.model, "embedding")
        try:
            vectors, n_tokens = await run_in_threadpool(features.embed, server.encoder(), req.inputs)
        except Exception as exc:
            raise from_edge(exc) from None
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            raise bad(f"'dimensions' must be {vectors.shape[1]} for {EMBEDDING_MODEL} (got {req.dimensions}).",
                      "dimensions", "invalid_value")
        server.metrics.add("embedded_inputs", len(req.inputs))
        data = [{"object": "embedding", "index": i, "embedding": features.encode_vector(v, req.base64)}
                for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": EMBEDDING_MODEL,
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    # -- errors --------------------------------------------------------------------
    async def api_error(request, exc: APIError):
        return error_response(exc)

    async def http_error(request, exc: HTTPException):
        kind = NOT_FOUND if exc.status_code == 404 else "invalid_request_error"
        what = {404: f"No route {request.method} {request.url.path}; see GET /v1/models and the OpenAI API.",
                405: f"Method {request.method} is not allowed on {request.url.path}."}.get(exc.status_code, exc.detail)
        return error_response(APIError(exc.status_code, what, kind))

    async def client_gone(request, exc: ClientGone):
        # Nobody reads this answer; it only closes the exchange without a traceback in the log.
        return Response(status_code=499)

    async def server_error(request, exc: Exception):
        return error_response(from_edge(exc))

    async def invalid_request(request, exc: RequestValidationError):  # only path parameters reach FastAPI
        return error_response(bad(f"Invalid request: {exc.errors()[0].get('msg', 'bad parameter')}."))

    middleware = [Middleware(Gate, server=server)]
    if options.cors:
        from starlette.middleware.cors import CORSMiddleware

        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=options.cors, allow_methods=["GET", "POST"],
                                        allow_headers=["Authorization", "Content-Type"]))
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.worker.stop()

    from .. import __version__

    app = FastAPI(title="edge", version=__version__, description=API_DESCRIPTION, middleware=middleware,
                  lifespan=lifespan, exception_handlers={
                      APIError: api_error, HTTPException: http_error, RequestValidationError: invalid_request,
                      ClientGone: client_gone, Exception: server_error})
    P = protocol
    errors = {status: {"model": P.ErrorResponse, "description": what} for status, what in ERRORS.items()}
    app.add_api_route("/health", health, methods=["GET"], response_model=P.Health, tags=["server"])
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=PlainTextResponse, tags=["server"],
                      summary="Prometheus metrics")
    app.add_api_route("/v1/models", list_models, methods=["GET"], response_model=P.ModelList, tags=["models"],
                      responses={401: errors[401]})
    app.add_api_route("/v1/models/{name:path}", get_model, methods=["GET"], response_model=P.ModelCard,
                      tags=["models"], responses={k: errors[k] for k in (401, 404)})
    for path, handler, request_model, response_model, event in (
            ("/v1/chat/completions", chat, P.ChatCompletionRequest, P.ChatCompletion, P.ChatCompletionChunk),
            ("/v1/completions", completions, P.CompletionRequest, P.Completion, P.Completion),
            ("/v1/embeddings", embeddings, P.EmbeddingRequest, P.EmbeddingList, None)):
        content = {"application/json": {"schema": _ref(response_model)}}
        said = "The answer."
        if event is not None:
            content["text/event-stream"] = {"schema": _events(event)}
            said = "The answer; with stream: true, server-sent events `data: {chunk}` ending with `data: [DONE]`."
        app.add_api_route(path, handler, methods=["POST"], tags=["openai"], response_model=None, responses={
            200: {"description": said, "content": content}, **errors}, openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request_model)}}}})
    app.openapi = lambda: _openapi(app)
    app.state.server = server
    return app


API_DESCRIPTION = ("OpenAI-compatible API of one local model. Errors are OpenAI error objects "
                   "(`{\"error\": {message, type, param, code}}`).")
ERRORS = {400: "Bad request: the `param` field names the request field at fault.",
          401: "Missing or wrong API key.", 404: "Unknown model.", 413: "Request body too large.",
          501: "A feature this install lacks (e.g. embeddings without the onnx extra).",
          503: "Queue full (retry after Retry-After seconds) or backend unavailable."}


def _ref(model) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _events(model) -> dict:
    """One server-sent event (before Open API 3.2, `schema` describes each event): `data` holds a chunk
    as JSON text (an error object if generation fails midway), or the final `[DONE]`."""
    chunk = {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"anyOf": [_ref(model), _ref(protocol.ErrorResponse)]}}
    return {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [{"const": "[DONE]"}, chunk]}}}


def _openapi(app) -> dict:
    """FastAPI's spec, plus the request and event models the routes name by reference."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi
        from pydantic.json_schema import models_json_schema

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        models = [(m, "validation") for m in protocol.REQUESTS] + [(m, "serialization") for m in protocol.EVENTS]
        models += [(m, "serialization") for m in (protocol.ChatCompletion, protocol.EmbeddingList)]
        _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(defs.get("$defs", {}))
        # The model ids this server answers to (others get 404 model_not_found).
        server = app.state.server
        for name, ids in (("ChatCompletionRequest", [server.name]), ("CompletionRequest", [server.name]),
                          ("EmbeddingRequest", [EMBEDDING_MODEL] if server.options.embeddings else [])):
            if ids:
                schemas[name]["properties"]["model"]["enum"] = ids
        app.openapi_schema = spec
    return app.openapi_schema
