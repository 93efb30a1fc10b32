"""The sync client: REST calls with httpx.Client; streams run on a private event loop thread (SyncStream)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np

from s2d.client.api import DEFAULT_TIMEOUT_S, Api, ApiRequest, SSEParser, transport_error
from s2d.client.errors import error_from_response
from s2d.client.streams import ReconnectingStream, Stream, connect


class LoopThread:
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

    def __init__(self, stream: Stream, runner: LoopThread):
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


class Client(Api):
    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        super().__init__(url, api_key, timeout)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)
        self._loop: LoopThread | None = None  # started by the first stream

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _call(self, request: ApiRequest):
        try:
            with request.files() as files:
                response = self._http.request(
                    request.method, request.path, params=request.params, json=request.json, files=files
                )
        except httpx.TransportError as err:
            raise transport_error(err) from None
        return request.parse(response)

    def _runner(self) -> LoopThread:
        if self._loop is None:
            self._loop = LoopThread()
        return self._loop

    def open_stream(self, path: str = "/v1/stream", via_subprotocol: bool = False) -> SyncStream:
        """A connected stream before its hello (`start`); `stream()` is the usual way in."""
        runner = self._runner()
        stream = runner.run(connect(self._ws_url(path), self.api_key, via_subprotocol, min(self.timeout, 30)))
        return SyncStream(stream, runner)

    @contextlib.contextmanager
    def stream(self, model: str | None = None, reconnect: int = 0, **options: Any) -> Iterator[SyncStream]:
        """As AsyncClient.stream, synchronously."""
        if reconnect:
            runner = self._runner()
            opened = ReconnectingStream(
                lambda: connect(self._ws_url("/v1/stream"), self.api_key, False, min(self.timeout, 30)), {}, reconnect
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
                parser = SSEParser()
                for line in response.iter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as err:
            raise transport_error(err) from None
