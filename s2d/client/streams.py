"""Live streams over the WebSocket protocol of `/v1/stream` (async): one stream, a stream that reconnects, and
opening one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import numpy as np

from s2d.client.errors import ConnectionFailed, S2DError, StreamClosed, StreamUnauthorized, closed_error
from s2d.service.streams.protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER, pack_frame


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
        return closed_error(code, reason, self._fatal)


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


async def connect(url: str, api_key: str | None, via_subprotocol: bool, open_timeout: float) -> Stream:
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
