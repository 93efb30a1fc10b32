"""ASGI middleware: request id, API key (service.auth: who, within which limits, for a WebSocket which scope), access
log (JSON lines, with the key's name) and HTTP metrics, in one pass.

Pure ASGI (not BaseHTTPMiddleware) so request bodies stream through untouched and the endpoint still sees the
client's disconnect.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s2d.service import metrics
from s2d.service.auth import ApiKey, KeyRing, check_scope, given_key, scope_of_connection
from s2d.service.errors import RateLimitedError, ServiceError, error_response
from s2d.service.logs import request_id_var

log = logging.getLogger("s2d.service.access")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})  # "/": the webcam page, which asks for the key itself
PUBLIC_PREFIXES = ("/static/",)  # the page's scripts and styles
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyRing | None = None):
        self.app = app
        self.keys = keys or KeyRing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex[:16]
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500}
        key: ApiKey | None = None

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with contextlib.ExitStack() as held:
                try:
                    if self._needs_key(scope):
                        key = self.keys.authenticate(given_key(headers))
                        scope["state"]["api_key"] = key  # for the routes' require_scope
                        if scope["type"] == "websocket":
                            check_scope(key, scope_of_connection(scope))
                            held.enter_context(self.keys.stream_slot(key))
                except ServiceError as err:
                    await self._refuse(err, scope, receive, send_with_id, request_id)
                    return
                await self.app(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                self._record(scope, status["code"], time.perf_counter() - started, key)
            request_id_var.reset(token)

    @staticmethod
    async def _refuse(err: ServiceError, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """The error's JSON answer; a WebSocket is refused before its handshake: over the key's limits with the 429
        answer itself where the server can send one, else (and for 401 / 403, as before keys had scopes) closed with
        1008 (policy violation), which the handshake shows as HTTP 403."""
        denial = isinstance(err, RateLimitedError) and "websocket.http.response" in scope.get("extensions", {})
        if scope["type"] == "http" or denial:
            await error_response(err, request_id)(scope, receive, send)
        else:
            metrics.ERRORS.labels(err.code).inc()
            await send({"type": "websocket.close", "code": 1008, "reason": err.code})

    def _needs_key(self, scope: Scope) -> bool:
        # CORS preflights carry no credentials by design; the CORS middleware answers them.
        path = scope["path"]
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        return self.keys.enabled and not public and scope.get("method") != "OPTIONS"

    def _record(self, scope: Scope, status: int, seconds: float, key: ApiKey | None) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"  # the template, never the raw path
        labels = (route, scope["method"], str(status))
        metrics.HTTP_REQUESTS.labels(*labels).inc()
        metrics.HTTP_DURATION.labels(*labels).observe(seconds)
        extra = {"route": route, "status": status, "duration_s": round(seconds, 6)}
        if self.keys.enabled:
            extra["key"] = key.name if key is not None else "-"
            metrics.KEY_REQUESTS.labels(extra["key"], str(status)).inc()
        log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000, extra=extra)


class CatchAllMiddleware:
    """Answers an exception no route or handler took with `respond(err, request_id)`, and does not raise it on.
    Starlette's own catch-all (ServerErrorMiddleware) raises it on after answering, and uvicorn then closes the
    client's keep-alive connection. Once a response has started, the exception goes on up: nothing else can be sent."""

    def __init__(self, app: ASGIApp, respond: Callable[[Exception, str | None], Response]):
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as err:
            if started:
                raise
            await self.respond(err, scope.get("state", {}).get("request_id"))(scope, receive, send)
