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

from s2d.client.aio import AsyncClient
from s2d.client.api import DEFAULT_TIMEOUT_S, Sources
from s2d.client.errors import (
    BusyError,
    ConnectionFailed,
    GoingAway,
    NotFoundError,
    PolicyViolation,
    RequestError,
    S2DError,
    ServerTimeoutError,
    StreamClosed,
    StreamUnauthorized,
    TryLater,
    UnauthorizedError,
    UnavailableError,
    error_from_response,
)
from s2d.client.streams import ReconnectingStream, Stream, encode_jpeg
from s2d.client.sync import Client, SyncStream

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AsyncClient",
    "BusyError",
    "Client",
    "ConnectionFailed",
    "GoingAway",
    "NotFoundError",
    "PolicyViolation",
    "ReconnectingStream",
    "RequestError",
    "S2DError",
    "ServerTimeoutError",
    "Sources",
    "Stream",
    "StreamClosed",
    "StreamUnauthorized",
    "SyncStream",
    "TryLater",
    "UnauthorizedError",
    "UnavailableError",
    "encode_jpeg",
    "error_from_response",
]
