"""A Python client for the S2D service: REST (classify, models, health, readiness, server-side sources) and live
streams (the WebSocket protocol of `/v1/stream`), typed with the service's own response schemas.

    from s2d.client import Client

    with Client("http://127.0.0.1:8000", api_key="KEY") as client:
        result = client.classify("clip.mp4", mode="faces")         # a ClassifyResponse
        with client.stream(mode="faces", fps=15) as stream:        # the sync wrapper of AsyncClient.stream
            stream.send_image(rgb, ts_ms=0.0)
            end = stream.end()                                     # the final `end` event
            results = [e for e in stream if e["type"] == "result"] # the events before it

    async with AsyncClient(url) as client:
        async with client.stream(fps=10) as stream:
            await stream.send_frame(jpeg_bytes, ts_ms, seq)
            async for event in stream:                             # dicts with a `type` (the protocol's events)
                ...

Errors are raised, never returned: every refusal is an `S2DError` with the service's `code`, HTTP `status`,
`message`, `request_id` and `details`, and a subclass that says what a caller does about it: `BusyError` (429) and
`UnavailableError` (503: not ready, shutting down) carry `retry_after`; `ServerTimeoutError` (504); `NotFoundError`;
`UnauthorizedError`; `RequestError` (other 4xx: the request itself is wrong); `ConnectionFailed` (no answer).
A stream that the server closes other than by its end (close 1000) raises `StreamClosed` with the close code and
reason (and the code of the fatal `error` event before it): `TryLater` (1013: too many streams, models not ready:
retry), `GoingAway` (1001: the server is shutting down or the stream was idle: reconnect), `PolicyViolation`
(1008: a bad hello's model or window, a slow reader, or, at the handshake, a missing or wrong API key).
Back-pressure is the server's (service.streams): its drops are counted in the `stats` and `end` events
(`stream.stats` holds the latest), and a reader that stops reading is closed with 1008 "slow reader".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from s2d.service.schemas import (
    ClassifyResponse,
    HealthResponse,
    ModelsResponse,
    SourceInfo,
    SourceList,
    SourceResults,
)
from s2d.service.streams.protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER, pack_frame

DEFAULT_TIMEOUT_S = 130.0  # above the service's 120 s request deadline, so its 504 arrives before ours

# ---------------------------------------------------------------------------------------------------------------------
# Errors


class S2DError(Exception):
    """A refusal or failure of the service, with what the service said about it."""

    def __init__(
        self, message: str, *, code: str = "error", status: int | None = None, request_id: str | None = None,
        details: dict[str, Any] | None = None, retry_after: float | None = None,
    ):  # fmt: skip
        super().__init__(message)
        self.message, self.code, self.status = message, code, status
        self.request_id, self.details, self.retry_after = request_id, details or {}, retry_after

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.code}{status}: {self.message}"


class RequestError(S2DError):
    """The request itself is refused (400, 403, 408, 409, 413, 415, 422): sending it again will not help."""


class UnauthorizedError(S2DError):
    """Missing or wrong API key (401; 403 at a WebSocket handshake)."""


class NotFoundError(RequestError):
    """No such model, source or route (404)."""


class BusyError(S2DError):
    """The service is at capacity (429): try again after `retry_after` seconds."""


class UnavailableError(S2DError):
    """Not ready yet, or shutting down (503): try again after `retry_after` seconds (maybe another replica)."""


class ServerTimeoutError(S2DError):
    """The request ran past the service's deadline (504)."""


class ConnectionFailed(S2DError):
    """The service could not be reached, or did not answer in time (code `connection` or `timeout`)."""


class StreamClosed(S2DError):
    """The server closed a stream other than by its end: `close_code`, `reason`, and the code and message of the
    fatal `error` event it sent before closing (else `close_<code>` and the reason)."""

    def __init__(self, close_code: int, reason: str, *, code: str | None = None, message: str | None = None,
                 status: int | None = None):  # fmt: skip
        super().__init__(message or reason or f"closed with code {close_code}", code=code or f"close_{close_code}",
                         status=status)  # fmt: skip
        self.close_code, self.reason = close_code, reason


class TryLater(StreamClosed):
    """1013: too many streams, or the models are not ready; connect again later."""


class GoingAway(StreamClosed):
    """1001: the server is shutting down ("server shutting down") or closed an idle stream; reconnect."""


class PolicyViolation(StreamClosed):
    """1008: a hello naming an unknown model or a window out of range, a reader too slow, an unknown source."""


class StreamUnauthorized(PolicyViolation, UnauthorizedError):
    """The WebSocket handshake was refused for the API key (the server closes with 1008; HTTP shows 403)."""


_BY_STATUS: dict[int, type[S2DError]] = {
    401: UnauthorizedError, 404: NotFoundError, 429: BusyError, 503: UnavailableError, 504: ServerTimeoutError,
}  # fmt: skip
_BY_CLOSE: dict[int, type[StreamClosed]] = {
    CLOSE_TRY_LATER: TryLater, CLOSE_GOING_AWAY: GoingAway, CLOSE_POLICY: PolicyViolation,
}  # fmt: skip


def error_from_response(response: httpx.Response) -> S2DError:
    """The typed error of an error response (the service's JSON error body; anything else by its status)."""
    status = response.status_code
    try:
        info = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        info = {"code": f"http_{status}", "message": response.text[:500] or response.reason_phrase}
    retry_after = response.headers.get("retry-after")
    kind = _BY_STATUS.get(status) or (RequestError if status < 500 else S2DError)
    return kind(
        info.get("message", ""), code=info.get("code", f"http_{status}"), status=status,
        request_id=info.get("request_id") or response.headers.get("x-request-id"), details=info.get("details"),
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )  # fmt: skip


def _closed_error(close_code: int, reason: str, fatal: dict | None) -> StreamClosed:
    kind = _BY_CLOSE.get(close_code, StreamClosed)
    return kind(close_code, reason, code=fatal and fatal.get("code"), message=fatal and fatal.get("message"))


# ---------------------------------------------------------------------------------------------------------------------
# Requests: built once, sent by the sync or the async client


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    upload: str | Path | bytes | None = None  # a video for /v1/classify: a path (streamed) or its bytes
    model: type | None = None  # the response schema
    pick: Callable[[Any], Any] = field(default=lambda value: value)

    @contextlib.contextmanager
    def files(self) -> Iterator[dict | None]:
        if self.upload is None:
            yield None
        elif isinstance(self.upload, bytes):
            yield {"file": ("upload.mp4", self.upload, "application/octet-stream")}
        else:
            path = Path(self.upload)
            with path.open("rb") as handle:
                yield {"file": (path.name, handle, "application/octet-stream")}

    def parse(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_from_response(response)
        body = response.json()
        return self.pick(self.model.model_validate(body) if self.model is not None else body)


def _params(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _transport_error(err: httpx.TransportError) -> ConnectionFailed:
    code = "timeout" if isinstance(err, httpx.TimeoutException) else "connection"
    return ConnectionFailed(f"{type(err).__name__}: {err}", code=code)


class _Api:
    """The routes, as requests; `_call` (sync or async) sends them."""

    def __init__(self, url: str, api_key: str | None, timeout: float):
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout
        self.sources = Sources(self)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def classify(self, video: str | Path | bytes, **options: Any):
        """Classify a video (a path, streamed, or its bytes). Options: those of `ClassifyOptions` (model, mode,
        window_seconds, hop_seconds, smoothing, ema_alpha, hysteresis)."""
        return self._call(_Request("POST", "/v1/classify", params=_params(options), upload=video,
                                   model=ClassifyResponse))  # fmt: skip

    def models(self):
        return self._call(_Request("GET", "/v1/models", model=ModelsResponse))

    def health(self):
        return self._call(_Request("GET", "/healthz", model=HealthResponse))

    def ready(self):
        """The readiness answer; raises UnavailableError (503) while models load or once the server shuts down."""
        return self._call(_Request("GET", "/readyz", model=HealthResponse))

    def _call(self, request: _Request):
        raise NotImplementedError

    def _ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + path


class Sources:
    """`client.sources`: server-side sources (RTSP / HLS / HTTP URLs the server pulls; POST /v1/sources ...)."""

    def __init__(self, api: _Api):
        self._api = api

    def create(self, url: str, *, name: str | None = None, model: str | None = None, **options: Any):
        """Start analysing `url`; options: those of `StreamOptions` (mode, fps, smoothing, ...) and of
        `SourceOptions` (rtsp_transport, realtime)."""
        body = _params({"url": url, "name": name, "model": model}) | {"options": options}
        return self._api._call(_Request("POST", "/v1/sources", json=body, model=SourceInfo))

    def list(self):
        return self._api._call(_Request("GET", "/v1/sources", model=SourceList, pick=lambda r: r.sources))

    def get(self, source_id: str):
        return self._api._call(_Request("GET", f"/v1/sources/{source_id}", model=SourceInfo))

    def delete(self, source_id: str):
        """Stop the source and forget it; returns its last state."""
        return self._api._call(_Request("DELETE", f"/v1/sources/{source_id}", model=SourceInfo))

    def results(self, source_id: str, last: int | None = None):
        """The last results per track (at most `last` each; default: all the server keeps)."""
        return self._api._call(_Request("GET", f"/v1/sources/{source_id}/results", params=_params({"last": last}),
                                        model=SourceResults))  # fmt: skip

    def events(self, source_id: str):
        """The source's events over a WebSocket, as a (sync or async) context manager yielding a stream to read."""
        return self._api._source_events(f"/v1/sources/{source_id}/events")

    def sse(self, source_id: str):
        """The source's events as Server-Sent Events: an (async) iterator of event dicts, until the source ends."""
        return self._api._sse(f"/v1/sources/{source_id}/events")


class _SSEParser:
    """Server-Sent Events, line by line: `data:` lines up to a blank line make one JSON event."""

    def __init__(self):
        self._data: list[str] = []

    def feed(self, line: str) -> dict | None:
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip(" "))
            return None
        if line or not self._data:  # `event:`, `id:` and `:` comments (keep-alives); the type is in the data
            return None
        event, self._data = json.loads("\n".join(self._data)), []
        return event


# ---------------------------------------------------------------------------------------------------------------------
# Streams


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """An RGB uint8 [H, W, 3] image as JPEG bytes (what a stream frame carries)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("the image could not be encoded as JPEG")
    return buf.tobytes()


class Stream:
    """One WebSocket stream (async): frames out, events in. `end()` returns the final `end` event; iterating
    yields events until the server closes normally, and raises `StreamClosed` for any other close."""

    def __init__(self, ws):
        self._ws = ws
        self.ready: dict | None = None
        self.stats: dict | None = None  # the latest `stats` or `end` event: frame and window counts, drops
        self.closed: tuple[int, str] | None = None  # (close code, reason) once the server closed
        self._pending: deque[dict] = deque()  # events read by end() that the caller has not iterated yet
        self._fatal: dict | None = None
        self._seq = 0

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    @property
    def local_address(self) -> tuple:
        return self._ws.local_address

    async def start(self, **hello: Any) -> dict:
        """Send the hello (StreamOptions and `model`); returns the `ready` event, or raises how it was refused."""
        await self.send_raw(json.dumps({"type": "hello", **hello}))
        while (event := await self.recv()) is not None:
            if event["type"] == "ready":
                self.ready = event
                return event
        raise StreamClosed(CLOSE_NORMAL, "closed before ready")

    async def send_frame(self, image: bytes, ts_ms: float, seq: int | None = None) -> None:
        """One encoded frame (JPEG, PNG or WebP) stamped `ts_ms` (strictly increasing); `seq` counts up if None."""
        seq = self._seq if seq is None else seq
        self._seq = seq + 1
        await self.send_raw(pack_frame(image, ts_ms, seq))

    async def send_image(self, rgb: np.ndarray, ts_ms: float, seq: int | None = None, quality: int = 85) -> None:
        await self.send_frame(encode_jpeg(rgb, quality), ts_ms, seq)

    async def ping(self, t: Any = None) -> None:
        await self.send_raw(json.dumps({"type": "ping", "t": t}))

    async def send_raw(self, message: str | bytes) -> None:
        """Any message as it is (tests of the protocol's refusals)."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(message)
        except ConnectionClosed:
            await self._closed_now()
            raise self._error() from None

    async def recv(self, timeout: float | None = None) -> dict | None:
        """The next event; None once the server closed normally (1000). TimeoutError after `timeout` seconds."""
        if self._pending:
            return self._pending.popleft()
        return await self._read(timeout)

    async def send_end(self) -> None:
        """Ask the server to classify what it has and end the stream; the `end` event and the close follow (for a
        reader that iterates the events in another task: one task at a time may read)."""
        await self.send_raw(json.dumps({"type": "end"}))

    async def end(self, timeout: float = 60) -> dict:
        """Send `end`; read until the `end` event (the events before it stay to be iterated). Returns it."""
        await self.send_end()
        async with asyncio.timeout(timeout):
            while (event := await self._read(None)) is not None:
                self._pending.append(event)
                if event["type"] == "end":
                    return event
        raise StreamClosed(CLOSE_NORMAL, "closed before the end event")

    async def close(self) -> None:
        await self._ws.close()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> dict:
        if (event := await self.recv()) is None:
            raise StopAsyncIteration
        return event

    async def _read(self, timeout: float | None) -> dict | None:
        from websockets.exceptions import ConnectionClosed

        if self.closed is None:
            try:
                return self._seen(json.loads(await asyncio.wait_for(self._ws.recv(), timeout)))
            except ConnectionClosed:
                self.closed = (self._ws.close_code or 1006, self._ws.close_reason or "")
        if self.closed[0] == CLOSE_NORMAL:
            return None
        raise self._error()

    def _seen(self, event: dict) -> dict:
        kind = event.get("type")
        if kind == "error" and event.get("fatal"):
            self._fatal = event
        elif kind in ("stats", "end"):
            self.stats = event
        return event

    async def _closed_now(self) -> None:
        """After a failed send: keep the events the server sent before closing (its fatal error says why)."""
        while self.closed is None:
            with contextlib.suppress(StreamClosed):
                if (event := await self._read(None)) is not None:
                    self._pending.append(event)

    def _error(self) -> StreamClosed:
        code, reason = self.closed
        return _closed_error(code, reason, self._fatal)


class ReconnectingStream:
    """A stream that survives its server going away: on a close with 1001 (server shutting down: behind a load
    balancer the next connection reaches another replica) or 1013 (try again later) it opens a new stream, sends
    the same hello and goes on, up to `max_reconnects` times; iterating then yields a `reconnected` event saying so.
    Stream time restarts with the new connection (its first frame is t = 0); windows in flight at the close are lost.
    Any other close raises as for `Stream`."""

    RECONNECT_ON = (CLOSE_GOING_AWAY, CLOSE_TRY_LATER)

    def __init__(self, open_stream, hello: dict[str, Any], max_reconnects: int, backoff_s: float = 0.2):
        self._open, self._hello = open_stream, hello
        self.max_reconnects, self.backoff_s = max_reconnects, backoff_s
        self.reconnects = 0
        self._stream: Stream | None = None
        self._events: deque[dict] = deque()

    ready = property(lambda self: self._stream.ready)
    stats = property(lambda self: self._stream.stats)
    closed = property(lambda self: self._stream.closed)
    subprotocol = property(lambda self: self._stream.subprotocol)
    local_address = property(lambda self: self._stream.local_address)

    async def start(self, **hello: Any) -> dict:
        self._hello = {**self._hello, **hello}
        self._stream = await self._open()
        return await self._stream.start(**self._hello)

    async def _reconnect(self, closed: StreamClosed) -> None:
        if closed.close_code not in self.RECONNECT_ON or self.reconnects >= self.max_reconnects:
            raise closed
        self.reconnects += 1
        await asyncio.sleep(self.backoff_s * 2 ** (self.reconnects - 1))
        with contextlib.suppress(Exception):
            await self._stream.close()
        self._stream = await self._open()
        await self._stream.start(**self._hello)
        self._events.append({"type": "reconnected", "attempt": self.reconnects, "close_code": closed.close_code,
                             "reason": closed.reason})  # fmt: skip

    async def send_frame(self, image: bytes, ts_ms: float, seq: int | None = None) -> None:
        while True:
            try:
                return await self._stream.send_frame(image, ts_ms, seq)
            except StreamClosed as closed:
                await self._reconnect(closed)

    async def send_image(self, rgb: np.ndarray, ts_ms: float, seq: int | None = None, quality: int = 85) -> None:
        await self.send_frame(encode_jpeg(rgb, quality), ts_ms, seq)

    async def send_raw(self, message: str | bytes) -> None:
        await self._stream.send_raw(message)

    async def ping(self, t: Any = None) -> None:
        await self._stream.ping(t)

    async def recv(self, timeout: float | None = None) -> dict | None:
        while True:
            if self._events:
                return self._events.popleft()
            try:
                return await self._stream.recv(timeout)
            except StreamClosed as closed:
                await self._reconnect(closed)

    async def send_end(self) -> None:
        await self._stream.send_end()

    async def end(self, timeout: float = 60) -> dict:
        return await self._stream.end(timeout)

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()

    def __aiter__(self) -> ReconnectingStream:
        return self

    async def __anext__(self) -> dict:
        if (event := await self.recv()) is None:
            raise StopAsyncIteration
        return event


async def _connect(url: str, api_key: str | None, via_subprotocol: bool, open_timeout: float) -> Stream:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    headers, subprotocols = {}, None
    if api_key and via_subprotocol:  # what browsers do: they cannot set headers on a WebSocket
        subprotocols = ["s2d.v1", f"bearer.{api_key}"]
    elif api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        ws = await connect(url, additional_headers=headers, subprotocols=subprotocols, open_timeout=open_timeout,
                           max_size=None, compression=None)  # fmt: skip
    except InvalidStatus as err:
        status = err.response.status_code
        if status in (401, 403):
            raise StreamUnauthorized(CLOSE_POLICY, "unauthorized", code="unauthorized", status=status) from None
        raise S2DError(f"the WebSocket handshake was refused with HTTP {status}", code=f"http_{status}",
                       status=status) from None  # fmt: skip
    except (OSError, TimeoutError, InvalidHandshake) as err:
        raise ConnectionFailed(f"cannot open {url}: {err}", code="connection") from None
    return Stream(ws)


# ---------------------------------------------------------------------------------------------------------------------
# The async client


class AsyncClient(_Api):
    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        super().__init__(url, api_key, timeout)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, request: _Request):
        try:
            with request.files() as files:
                response = await self._http.request(
                    request.method, request.path, params=request.params, json=request.json, files=files
                )
        except httpx.TransportError as err:
            raise _transport_error(err) from None
        return request.parse(response)

    async def open_stream(self, path: str = "/v1/stream", via_subprotocol: bool = False) -> Stream:
        """A connected stream before its hello (`start`); `stream()` is the usual way in."""
        return await _connect(self._ws_url(path), self.api_key, via_subprotocol, min(self.timeout, 30))

    @contextlib.asynccontextmanager
    async def stream(
        self, model: str | None = None, reconnect: int = 0, **options: Any
    ) -> AsyncIterator[Stream | ReconnectingStream]:
        """A live stream, its hello sent and answered: `async with client.stream(mode="faces", fps=15) as s`.
        `reconnect=N`: reopen it up to N times when the server goes away (ReconnectingStream)."""
        stream = ReconnectingStream(self.open_stream, {}, reconnect) if reconnect else await self.open_stream()
        try:
            await stream.start(model=model, **options)
            yield stream
        finally:
            await stream.close()

    @contextlib.asynccontextmanager
    async def _source_events(self, path: str) -> AsyncIterator[Stream]:
        stream = await self.open_stream(path)
        try:
            yield stream
        finally:
            await stream.close()

    async def _sse(self, path: str) -> AsyncIterator[dict]:
        timeout = httpx.Timeout(self.timeout, read=None)  # events come when they come
        try:
            async with self._http.stream("GET", path, headers={"Accept": "text/event-stream"},
                                         timeout=timeout) as response:  # fmt: skip
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                parser = _SSEParser()
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as err:
            raise _transport_error(err) from None


# ---------------------------------------------------------------------------------------------------------------------
# The sync client: REST with httpx's sync client; streams through the async ones on a private event loop thread


class _LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="s2d-client", daemon=True)
        self._thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncStream:
    """The synchronous face of `Stream`: the same methods without `await`, run on the client's event loop thread."""

    def __init__(self, stream: Stream, runner: _LoopThread):
        self._stream, self._run = stream, runner.run

    ready = property(lambda self: self._stream.ready)
    stats = property(lambda self: self._stream.stats)
    closed = property(lambda self: self._stream.closed)
    subprotocol = property(lambda self: self._stream.subprotocol)
    local_address = property(lambda self: self._stream.local_address)

    def start(self, **hello: Any) -> dict:
        return self._run(self._stream.start(**hello))

    def send_frame(self, image: bytes, ts_ms: float, seq: int | None = None) -> None:
        self._run(self._stream.send_frame(image, ts_ms, seq))

    def send_image(self, rgb: np.ndarray, ts_ms: float, seq: int | None = None, quality: int = 85) -> None:
        self._run(self._stream.send_image(rgb, ts_ms, seq, quality))

    def send_raw(self, message: str | bytes) -> None:
        self._run(self._stream.send_raw(message))

    def ping(self, t: Any = None) -> None:
        self._run(self._stream.ping(t))

    def recv(self, timeout: float | None = None) -> dict | None:
        return self._run(self._stream.recv(timeout))

    def end(self, timeout: float = 60) -> dict:
        return self._run(self._stream.end(timeout))

    def close(self) -> None:
        self._run(self._stream.close())

    def __iter__(self) -> Iterator[dict]:
        while (event := self.recv()) is not None:
            yield event


class Client(_Api):
    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        super().__init__(url, api_key, timeout)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)
        self._loop: _LoopThread | None = None  # started by the first stream

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _call(self, request: _Request):
        try:
            with request.files() as files:
                response = self._http.request(
                    request.method, request.path, params=request.params, json=request.json, files=files
                )
        except httpx.TransportError as err:
            raise _transport_error(err) from None
        return request.parse(response)

    def _runner(self) -> _LoopThread:
        if self._loop is None:
            self._loop = _LoopThread()
        return self._loop

    def open_stream(self, path: str = "/v1/stream", via_subprotocol: bool = False) -> SyncStream:
        """A connected stream before its hello (`start`); `stream()` is the usual way in."""
        runner = self._runner()
        stream = runner.run(_connect(self._ws_url(path), self.api_key, via_subprotocol, min(self.timeout, 30)))
        return SyncStream(stream, runner)

    @contextlib.contextmanager
    def stream(self, model: str | None = None, reconnect: int = 0, **options: Any) -> Iterator[SyncStream]:
        """As AsyncClient.stream, synchronously."""
        if reconnect:
            runner = self._runner()
            opened = ReconnectingStream(
                lambda: _connect(self._ws_url("/v1/stream"), self.api_key, False, min(self.timeout, 30)), {}, reconnect
            )
            stream = SyncStream(opened, runner)
        else:
            stream = self.open_stream()
        try:
            stream.start(model=model, **options)
            yield stream
        finally:
            stream.close()

    @contextlib.contextmanager
    def _source_events(self, path: str) -> Iterator[SyncStream]:
        stream = self.open_stream(path)
        try:
            yield stream
        finally:
            stream.close()

    def _sse(self, path: str) -> Iterator[dict]:
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                parser = _SSEParser()
                for line in response.iter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as err:
            raise _transport_error(err) from None
