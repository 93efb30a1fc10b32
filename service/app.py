"""The FastAPI application: `create_app(settings)`; models load at start-up, warm up in the background.

Start-up fails (the process exits with the reason) when a requested ONNX Runtime provider is unavailable, a model is
missing or its card is invalid. /healthz answers at once; /readyz and the model routes answer 503 until every model
is warmed up at every batch size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from s2d.service.auth import KeyRing
from s2d.service.errors import (
    HTTPStatusError,
    InvalidParametersError,
    MethodNotAllowedError,
    NotFoundError,
    ServiceError,
    UndecodableMediaError,
    error_response,
)
from s2d.service.media import decoder_message
from s2d.service.middleware import CatchAllMiddleware, RequestContextMiddleware
from s2d.service.openapi import install_openapi
from s2d.service.routes import classify, health, models, page, sources, stream
from s2d.service.settings import Settings, load_settings
from s2d.service.state import AppState
from s2d.service.triton_engine import TritonStartupError
from s2d.service.uploads import (
    UploadAborted,
)

log = logging.getLogger(__name__)
# Start-up failures that are the configuration's, not the code's: no store or model, a broken card, a variant or
# provider that is not there, a Triton server that does not serve the model. Logged as one line, no traceback.
STARTUP_CONFIG_ERRORS = (KeyError, OSError, ValueError, TritonStartupError)


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> JSONResponse:
        return error_response(err, _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "message": e["msg"]} for e in err.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return error_response(InvalidParametersError(summary, details={"errors": problems}), _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = {404: NotFoundError, 405: MethodNotAllowedError}.get(err.status_code)
        headers = {**(err.headers or {}), **_allow(request)} if err.status_code == 405 else err.headers
        typed = (
            kind(str(err.detail), headers=headers)
            if kind is not None
            else HTTPStatusError(err.status_code, str(err.detail), headers)
        )
        return error_response(typed, _request_id(request))

    @app.exception_handler(UploadAborted)
    async def aborted(request: Request, err: UploadAborted) -> JSONResponse:
        # The client is gone; nobody reads this. 499 is the conventional "client closed request" in logs.
        return JSONResponse({"error": {"code": "client_closed", "message": "client disconnected"}}, status_code=499)


def _unexpected(err: Exception, request_id: str | None) -> JSONResponse:
    """The answer to an exception no handler took (CatchAllMiddleware): 500, or 400 for a decoder's error."""
    log.error("unhandled error", exc_info=err)  # the trace goes to the log, never to the client
    if _is_decoder_error(err):
        message = f"the media could not be decoded: {decoder_message(err)}"
        return error_response(UndecodableMediaError(message), request_id)
    internal = ServiceError("internal error; the request id finds the details in the server log")
    return error_response(internal, request_id)


def _allow(request: Request) -> dict[str, str]:
    """`Allow` for a 405: every method some route on the path takes (Starlette names only the first route's, and a
    path such as /v1/sources has a route per method)."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    methods = [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]
    return {"Allow": ", ".join(methods)} if methods else {}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _is_decoder_error(err: Exception) -> bool:
    return type(err).__module__.startswith("av.")


async def drain(app: FastAPI) -> None:
    """The first SIGTERM (service.server): the state's drain; nothing to do before the lifespan has built it."""
    state = getattr(app.state, "s2d", None)
    if state is not None:
        await state.drain()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state = AppState.start(settings)  # raises: the server does not start without its models
        except STARTUP_CONFIG_ERRORS as err:  # what the operator must fix, in one line (service.server shows it)
            app.state.startup_error = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            log.error("cannot start: %s", app.state.startup_error)
            raise
        app.state.s2d = state  # the one thing the app holds; routes take it by Depends (service.deps)
        warmup = asyncio.create_task(state.registry.warmup(), name="warmup")
        try:
            yield
        finally:
            warmup.cancel()
            await asyncio.gather(warmup, return_exceptions=True)
            await state.stop()

    app = FastAPI(
        title="S2D facial expression service",
        version="1.0",
        description="Per-person facial expression recognition on video (S2D on ONNX Runtime). Errors are JSON "
        "bodies `{error: {code, message, request_id}}` with stable codes.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(CatchAllMiddleware, respond=_unexpected)  # innermost: its answers pass CORS and the ids
    install_openapi(app, settings)
    for routes in (health, models, classify, stream, sources, page):
        app.include_router(routes.router)
    page.mount_static(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    keys = KeyRing.from_settings(settings)  # a keys file that does not parse stops the start-up, with its reason
    keys.reload_on_sighup()
    app.add_middleware(RequestContextMiddleware, keys=keys)  # outermost: ids and auth before anything else
    return app
