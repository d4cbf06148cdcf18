"""The FastAPI application: routes, API keys, body limit, CORS, errors, the chat page.

Only translation and streaming happen here; every request is handed to the
:class:`~llmkit.serve.scheduler.Scheduler`, which feeds the engines. Build one with
:func:`create_app` (``llmkit serve`` does, then runs it under uvicorn).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmkit import __version__
from llmkit.console import say
from llmkit.errors import LLMKitError
from llmkit.serve import chat, completions
from llmkit.serve.errors import APIError, bad_request, model_not_found, unavailable
from llmkit.serve.metrics import Metrics
from llmkit.serve.models import ServedModel
from llmkit.serve.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from llmkit.serve.scheduler import Scheduler
from llmkit.serve.translate import Limits

WEB = resources.files("llmkit.serve") / "web"

PAGE_HEADERS = {
    # the page runs only its own script: even text that slipped into the DOM as HTML could not run
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class ServerSettings:
    """What ``llmkit serve`` lets its operator limit (the defaults suit one machine on loopback)."""

    api_keys: list[str] = field(default_factory=list)
    """Accepted ``Authorization: Bearer`` keys; empty: no key needed."""
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = 4 * 1024 * 1024
    """Requests with a larger body get 413."""
    max_queue: int = 256
    """Requests waiting for the batch beyond this get 429."""
    cors_origins: list[str] = field(default_factory=list)
    """Origins allowed to call the API from a browser (empty: CORS off)."""


_ERRORS = {"model": ErrorResponse}
_RESPONSES = {
    code: _ERRORS | {"description": why}
    for code, why in [
        (400, "A field the engine cannot honour, a prompt too long, a limit passed"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model"),
        (413, "Body too large"),
        (422, "Malformed request (types, ranges, missing fields)"),
        (429, "Queue full"),
        (503, "Shutting down"),
    ]
}


def create_app(models: dict[str, ServedModel], settings: ServerSettings | None = None, rag=None) -> FastAPI:
    """The server for ``models`` (name -> model; the first is the default). ``rag``: a
    :class:`~llmkit.rag.index.RagIndex` whose passages chat requests are answered from."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    scheduler = Scheduler(models, metrics, max_queue=settings.max_queue)

    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.drain(0)
        scheduler.stop()

    app = FastAPI(
        title="llmkit",
        version=__version__,
        description="OpenAI-compatible API over llmkit's engine, with continuous batching.",
        lifespan=lifespan,
        responses=_RESPONSES,
        docs_url=None,  # FastAPI's schema pages load their scripts from a CDN: nothing here does
        redoc_url=None,
    )
    app.state.models, app.state.scheduler, app.state.metrics, app.state.settings = models, scheduler, metrics, settings
    app.state.rag = rag

    def served(name: str | None) -> ServedModel:
        if name is None:
            return next(iter(models.values()))
        if name not in models:
            raise model_not_found(name, list(models))
        return models[name]

    async def check_key(request: Request) -> None:
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(
                401, "missing API key: send the header 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        if not any(hmac.compare_digest(key.strip().encode(), k.encode()) for k in settings.api_keys):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    api = [Depends(check_key)]
    limits = settings.limits

    # ------------------------------------------------------------------ OpenAI endpoints
    @app.post("/v1/completions", dependencies=api, response_model=Completion, tags=["openai"])
    async def create_completion(req: CompletionRequest, request: Request):
        """Complete prompts (``stream`` for server-sent events; ``echo`` + ``logprobs`` score them)."""
        return await completions.create(req, served(req.model), scheduler, limits, request)

    @app.post("/v1/chat/completions", dependencies=api, response_model=ChatCompletion, tags=["openai"])
    async def create_chat_completion(req: ChatCompletionRequest, request: Request):
        """Answer a conversation through the model's chat template."""
        return await chat.create(req, served(req.model), scheduler, limits, request, rag)

    @app.get("/v1/models", dependencies=api, response_model=ModelList, tags=["openai"])
    async def list_models():
        return ModelList(data=[_card(m) for m in models.values()])

    @app.get("/v1/models/{model_id:path}", dependencies=api, response_model=ModelCard, tags=["openai"])
    async def get_model(model_id: str):
        return _card(served(model_id))

    # ------------------------------------------------------------------ tokenizer endpoints (vLLM's, used by lm-eval)
    @app.post("/tokenize", dependencies=api, response_model=TokenizeResponse, tags=["tokenizer"])
    async def tokenize(req: TokenizeRequest):
        m = served(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise bad_request("give exactly one of prompt (text) or messages (chat)", "prompt")
        if req.messages is not None:
            text = _render(m, req)
        else:
            text = req.prompt
        bos = req.add_special_tokens and m.engine.add_bos and m.tokenizer.bos_id is not None
        if req.messages is not None and m.tokenizer.bos_id is not None:
            bos = bos and not text.startswith(m.tokenizer.id_to_token(m.tokenizer.bos_id) or "\0")
        ids = m.tokenizer.encode(text, bos=bos)
        return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=m.context)

    @app.post("/detokenize", dependencies=api, response_model=DetokenizeResponse, tags=["tokenizer"])
    async def detokenize(req: DetokenizeRequest):
        m = served(req.model)
        bad = [t for t in req.tokens if t >= len(m.raw_bytes)]
        if bad:
            raise bad_request(f"token id {bad[0]} is outside the vocabulary (0..{len(m.raw_bytes) - 1})", "tokens")
        return DetokenizeResponse(prompt=m.tokenizer.decode(req.tokens))

    @app.get("/tokenizer_info", dependencies=api, tags=["tokenizer"])
    async def tokenizer_info(model: str | None = None):
        m = served(model)
        tok = m.tokenizer

        def name(i):
            return None if i is None else tok.id_to_token(i)

        return {
            "model": m.name,
            "bos_token": name(tok.bos_id),
            "eos_token": name(tok.eos_id),
            "pad_token": name(tok.pad_id),
            "chat_template": tok.chat_template,
            "model_max_length": m.context,
            "vocab_size": len(m.raw_bytes),
        }

    # ------------------------------------------------------------------ operations
    @app.get("/health", tags=["operations"])
    async def health():
        if scheduler.draining:
            raise unavailable("shutting down")
        return {"status": "ok", "models": list(models)}

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ the chat page
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(WEB / "index.html"), headers=PAGE_HEADERS)

    app.mount("/web", StaticFiles(directory=str(WEB)), name="web")

    _install_errors(app)
    app.add_middleware(_PageHeaders)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_CountRequests, metrics=metrics)
    return app


def _card(m: ServedModel) -> ModelCard:
    return ModelCard(id=m.name, created=m.created, max_model_len=m.context, root=str(m.path), parent=m.base)


def _render(m: ServedModel, req: TokenizeRequest) -> str:
    msgs = [{"role": "system" if x.role == "developer" else x.role, "content": x.content or ""} for x in req.messages]
    if any(not isinstance(x["content"], str) for x in msgs):
        raise bad_request("tokenize takes text message content only", "messages")
    try:
        return m.tokenizer.apply_chat_template(msgs, add_generation_prompt=req.add_generation_prompt)
    except LLMKitError as e:
        raise bad_request(str(e), "messages") from None


# --------------------------------------------------------------------- errors
def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _validation_message(errors: list[dict]) -> tuple[str, str | None, int]:
    """(message, param, status) for pydantic's errors: malformed JSON is 400, the rest 422."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx", {}).get("error", "")
        return f"malformed JSON in the request body: {ctx}".rstrip(": "), None, 400
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    # a union (prompt, stop, content) reports one error per alternative: name the field once
    loc = [x for x in loc if not x.startswith(("list[", "str", "int", "constrained-", "function-"))]
    param = ".".join(loc) or None
    if param is None and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return "the request body must be a JSON object with the endpoint's fields", None, 422
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param, 422


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        message, param, status = _validation_message(list(e.errors()))
        return _error_response(APIError(status, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}"}.get(e.status_code, str(e.detail))
        return _error_response(APIError(e.status_code, message, headers=getattr(e, "headers", None)))

    @app.exception_handler(LLMKitError)
    async def user_error(request, e: LLMKitError):
        return _error_response(bad_request(str(e)))

    @app.exception_handler(Exception)
    async def bug(request, e: Exception):
        import traceback

        say(f"internal error on {request.method} {request.url.path}:\n{traceback.format_exc()}")
        return _error_response(APIError(500, f"internal error ({type(e).__name__}); see the server log"))


# --------------------------------------------------------------------- middleware (plain ASGI: streams pass through)
class _BodyLimit:
    """413 for a body over ``limit`` bytes, by its Content-Length or as it arrives."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        e = APIError(413, f"request body is larger than this server accepts ({self.limit} bytes)")
        await _error_response(e)(scope, receive, send)


class _PageHeaders:
    """The chat page's security headers on its static files too."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/web/"):
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


_COUNTED = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/detokenize", "/health", "/"}


class _CountRequests:
    """``llmkit_http_requests_total{endpoint, status}`` for /metrics."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in _COUNTED else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
        status = {"code": 500}

        async def spy(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, spy)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
