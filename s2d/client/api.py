"""The routes as requests, built once and sent by the sync or the async client (`Api._call`); server-side sources
(`client.sources`); Server-Sent Events."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from s2d.client.errors import ConnectionFailed, error_from_response
from s2d.service.schemas import (
    ClassifyResponse,
    HealthResponse,
    ModelsResponse,
    SourceInfo,
    SourceList,
    SourceResults,
)

DEFAULT_TIMEOUT_S = 130.0  # above the service's 120 s request deadline, so its 504 arrives before ours


@dataclass
class ApiRequest:
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


def drop_none(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def transport_error(err: httpx.TransportError) -> ConnectionFailed:
    code = "timeout" if isinstance(err, httpx.TimeoutException) else "connection"
    return ConnectionFailed(f"{type(err).__name__}: {err}", code=code)


class Api:
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
        return self._call(ApiRequest("POST", "/v1/classify", params=drop_none(options), upload=video,
                                   model=ClassifyResponse))  # fmt: skip

    def models(self):
        return self._call(ApiRequest("GET", "/v1/models", model=ModelsResponse))

    def health(self):
        return self._call(ApiRequest("GET", "/healthz", model=HealthResponse))

    def ready(self):
        """The readiness answer; raises UnavailableError (503) while models load or once the server shuts down."""
        return self._call(ApiRequest("GET", "/readyz", model=HealthResponse))

    def _call(self, request: ApiRequest):
        raise NotImplementedError

    def _ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + path


class Sources:
    """`client.sources`: server-side sources (RTSP / HLS / HTTP URLs the server pulls; POST /v1/sources ...)."""

    def __init__(self, api: Api):
        self._api = api

    def create(self, url: str, *, name: str | None = None, model: str | None = None, **options: Any):
        """Start analysing `url`; options: those of `StreamOptions` (mode, fps, smoothing, ...) and of
        `SourceOptions` (rtsp_transport, realtime)."""
        body = drop_none({"url": url, "name": name, "model": model}) | {"options": options}
        return self._api._call(ApiRequest("POST", "/v1/sources", json=body, model=SourceInfo))

    def list(self):
        return self._api._call(ApiRequest("GET", "/v1/sources", model=SourceList, pick=lambda r: r.sources))

    def get(self, source_id: str):
        return self._api._call(ApiRequest("GET", f"/v1/sources/{source_id}", model=SourceInfo))

    def delete(self, source_id: str):
        """Stop the source and forget it; returns its last state."""
        return self._api._call(ApiRequest("DELETE", f"/v1/sources/{source_id}", model=SourceInfo))

    def results(self, source_id: str, last: int | None = None):
        """The last results per track (at most `last` each; default: all the server keeps)."""
        return self._api._call(ApiRequest("GET", f"/v1/sources/{source_id}/results", params=drop_none({"last": last}),
                                        model=SourceResults))  # fmt: skip

    def events(self, source_id: str):
        """The source's events over a WebSocket, as a (sync or async) context manager yielding a stream to read."""
        return self._api._source_events(f"/v1/sources/{source_id}/events")

    def sse(self, source_id: str):
        """The source's events as Server-Sent Events: an (async) iterator of event dicts, until the source ends."""
        return self._api._sse(f"/v1/sources/{source_id}/events")


class SSEParser:
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
