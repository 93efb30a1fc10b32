"""The service's one error family: typed errors with stable codes, and the JSON body every error response has.

Every failure a client can see is a `ServiceError` subclass, and each class is one row of the table from error to
answer: its HTTP `status` and its stable machine-readable `code` are class attributes (set by the constructor only
where the code varies: framework refusals and stream protocol errors), never changed afterwards.
Media errors (`MediaError`: what the decoder refuses, with a finer `reason`) and live-stream protocol errors
(`ProtocolError`: error events on the WebSocket, with the stream's own codes) are members too. Clients never see
stack traces: anything unexpected becomes a 500 `internal` with the request id to look up in the logs.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from s2d.service import metrics


class ServiceError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class ForbiddenError(ServiceError):
    """A known API key without the scope the route needs (service.auth)."""

    status, code = 403, "forbidden"


class BadRequestError(ServiceError):
    status, code = 400, "bad_request"


class UnauthorizedError(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(
        self, message: str = "missing or wrong API key (send it as 'Authorization: Bearer KEY' or 'X-API-Key')"
    ):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFoundError(ServiceError):
    status, code = 404, "not_found"


class UnknownModelError(ServiceError):
    status, code = 404, "unknown_model"


class MethodNotAllowedError(ServiceError):
    status, code = 405, "method_not_allowed"


class HTTPStatusError(ServiceError):
    """Any other HTTP-level refusal the framework raises (its status is the instance's, its code `http_<status>`)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, headers=headers)
        self.status, self.code = status, f"http_{status}"


class UploadTimeoutError(ServiceError):
    """The upload did not arrive in time (too slow, or stalled). The connection is closed after the answer: the rest
    of the body is never read."""

    status, code = 408, "upload_timeout"

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message, details=details, headers={"Connection": "close"})


class MediaError(ServiceError):
    """Media that cannot be used (an upload, a file, a stream frame); `reason` is the finer cause ("zero_bytes",
    "truncated", "no_video", "pixels", "bytes", ...) and is sent in the details."""

    def __init__(self, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None):
        self.reason = reason or self.code
        extra = {"reason": reason} if reason and reason != self.code else {}
        super().__init__(message, details={**extra, **(details or {})} or None)


class UndecodableMediaError(MediaError):
    """Empty, truncated or corrupt data: FFmpeg cannot read it."""

    status, code = 400, "undecodable"


class MediaTooLargeError(MediaError):
    """Over a configured limit: bytes, pixels per frame, duration or frame count."""

    status, code = 413, "too_large"


class UnsupportedMediaError(MediaError):
    """Readable, but not something we take: no video stream (audio only), a refused file type, frames too small."""

    status, code = 415, "unsupported_media"


class InvalidParametersError(ServiceError):
    status, code = 422, "invalid_parameters"


class SourcesDisabledError(ServiceError):
    """Server-side sources are off (settings.sources_enabled): the service opens no URL it is given."""

    status, code = 403, "sources_disabled"

    def __init__(self):
        super().__init__("server-side sources are disabled; an operator enables them with S2D_SOURCES_ENABLED=true "
                         "and names the hosts they may open in S2D_SOURCES_ALLOW")  # fmt: skip


class SourceNotAllowedError(ServiceError):
    """A source URL whose host is not in the allow-list (settings.sources_allow), or cannot be resolved."""

    status, code = 403, "source_not_allowed"


class UnsupportedSchemeError(ServiceError):
    """A source URL that is not rtsp://, rtsps://, http:// or https:// (file:// among them)."""

    status, code = 422, "unsupported_scheme"


class TooManySourcesError(ServiceError):
    """As many sources as allowed (settings.sources_max) are running: stop one first."""

    status, code = 409, "too_many_sources"


class NoFramesError(ServiceError):
    """An input with no frame at all (a frame folder without images). A video in which no face is found is not an
    error: it is answered with no persons and a note."""

    status, code = 422, "no_frames"


class RetryLaterError(ServiceError):
    """A refusal that passes: the answer says when to try again (`retry_after` whole seconds, Retry-After)."""

    def __init__(self, message: str, retry_after: float):
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            message, details={"retry_after_s": self.retry_after}, headers={"Retry-After": str(self.retry_after)}
        )


class BusyError(RetryLaterError):
    """The queue or the request limit is full (this process's, or the Triton server's): try again after
    `retry_after` seconds."""

    status, code = 429, "busy"


class RateLimitedError(RetryLaterError):
    """An API key over its own limit (requests per second, or streams open at once; service.auth)."""

    status, code = 429, "rate_limited"


class NotReadyError(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, message: str = "models are still loading or warming up; see /readyz"):
        super().__init__(message, headers={"Retry-After": "5"})


class ShuttingDownError(ServiceError):
    """The server is shutting down (SIGTERM): try again, another instance or this one restarted."""

    status, code = 503, "shutting_down"

    def __init__(self, message: str = "the server is shutting down; try again shortly"):
        super().__init__(message, headers={"Retry-After": "5", "Connection": "close"})


class InferenceUnavailableError(RetryLaterError):
    """The inference tier (a Triton server: settings.engine) cannot be reached or does not serve the model now:
    try again after `retry_after` seconds; this process is up and its other work goes on."""

    status, code = 503, "inference_unavailable"
    RETRY_AFTER_S = 5  # the server is down or restarting: as long as a restart takes at the least

    def __init__(self, message: str, retry_after: float = RETRY_AFTER_S):
        super().__init__(message, retry_after)


class InferenceFailedError(ServiceError):
    """The inference server (Triton) failed a call in a way no retry fixes (an internal error, a refused request,
    outputs unlike the card's): its answer is in this server's log, under the request id."""

    status, code = 502, "inference_failed"


class DeadlineError(ServiceError):
    status, code = 504, "timeout"


STREAM_ERROR_CODES = frozenset(
    {"bad_frame", "bad_message", "too_large", "undecodable", "unsupported_media", "out_of_order"}
)


class ProtocolError(ServiceError):
    """A malformed live-stream message: an `error` event with one of STREAM_ERROR_CODES (the WebSocket has no HTTP
    status); the stream goes on unless `fatal`."""

    status = 400

    def __init__(self, code: str, message: str, fatal: bool = False):
        if code not in STREAM_ERROR_CODES:
            raise ValueError(f"unknown stream error code {code!r}")
        super().__init__(message)
        self.code, self.fatal = code, fatal


class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code", examples=["busy"])
    message: str = Field(description="what went wrong, for humans", examples=["the inference queue is full"])
    request_id: str | None = Field(None, description="the X-Request-ID of the request, to find it in the logs")
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for these statuses, all with the ErrorBody schema."""
    descriptions = {
        400: "undecodable media or a malformed request (codes: undecodable, bad_request)",
        401: "missing or wrong API key (code: unauthorized)",
        403: "the API key lacks the route's scope, server-side sources are off, or the URL's host is not allowed "
        "(codes: forbidden, sources_disabled, source_not_allowed)",
        404: "no such model or source (codes: unknown_model, not_found)",
        408: "the upload was too slow or stalled; the connection is closed (code: upload_timeout)",
        409: "as many sources as allowed are running (code: too_many_sources)",
        413: "upload, video duration or frame size over the limits (code: too_large)",
        415: "not a video format the service reads (code: unsupported_media)",
        422: "invalid parameters, or a source URL scheme other than rtsp(s) or http(s) (codes: invalid_parameters, "
        "unsupported_scheme)",
        429: "busy: the inference queue (this process's, or Triton's), the request or the upload limit is full; or "
        "the API key is over its rate limit; see Retry-After (codes: busy, rate_limited)",
        502: "the inference server (Triton) failed the request; its answer is in the server log (code: "
        "inference_failed)",
        503: "models not loaded and warmed up yet, the server is shutting down, or the inference server (Triton) "
        "cannot be reached; see Retry-After (codes: not_ready, shutting_down, inference_unavailable)",
        504: "the request ran past its deadline, or the inference server did not answer in time (code: timeout)",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}


def error_response(err: ServiceError, request_id: str | None) -> JSONResponse:
    """The JSON answer of an error (`ErrorBody`), counted in `s2d_errors_total`: the one place error bodies are made."""
    metrics.ERRORS.labels(err.code).inc()
    body = {"error": {"code": err.code, "message": err.message, "request_id": request_id}}
    if err.details:
        body["error"]["details"] = err.details
    return JSONResponse(body, status_code=err.status, headers=err.headers)
