"""The async client: REST calls and streams on one event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from s2d.client.api import DEFAULT_TIMEOUT_S, Api, ApiRequest, SSEParser, transport_error
from s2d.client.errors import error_from_response
from s2d.client.streams import ReconnectingStream, Stream, connect


class AsyncClient(Api):
    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        super().__init__(url, api_key, timeout)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, request: ApiRequest):
        try:
            with request.files() as files:
                response = await self._http.request(
                    request.method, request.path, params=request.params, json=request.json, files=files
                )
        except httpx.TransportError as err:
            raise transport_error(err) from None
        return request.parse(response)

    async def open_stream(self, path: str = "/v1/stream", via_subprotocol: bool = False) -> Stream:
        """A connected stream before its hello (`start`); `stream()` is the usual way in."""
        return await connect(self._ws_url(path), self.api_key, via_subprotocol, min(self.timeout, 30))

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
                parser = SSEParser()
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as err:
            raise transport_error(err) from None
