"""Typed errors with stable codes, and the JSON body every error response has.

Every failure a client can see is a `ServiceError` subclass: HTTP status + a stable machine-readable `code` + a
human message. Media errors from `service.media` (each carrying a `code`) map onto the same body. Clients never see
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


class UndecodableError(ServiceError):
    status, code = 400, "undecodable"


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


class UploadTimeoutError(ServiceError):
    """The upload did not arrive in time (too slow, or stalled). The connection is closed after the answer: the rest
    of the body is never read."""

    status, code = 408, "upload_timeout"

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message, details=details, headers={"Connection": "close"})


class TooLargeError(ServiceError):
    status, code = 413, "too_large"


class UnsupportedMediaError(ServiceError):
    status, code = 415, "unsupported_media"


class InvalidParametersError(ServiceError):
    status, code = 422, "invalid_parameters"


class NoFramesError(ServiceError):
    """An input with no frame at all (a frame folder without images). A video in which no face is found is not an
    error: it is answered with no persons and a note."""

    status, code = 422, "no_frames"


class BusyError(ServiceError):
    """The queue or the request limit is full: try again after `retry_after` seconds."""

    status, code = 429, "busy"

    def __init__(self, message: str, retry_after: float):
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            message, details={"retry_after_s": self.retry_after}, headers={"Retry-After": str(self.retry_after)}
        )


class NotReadyError(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, message: str = "models are still loading or warming up; see /readyz"):
        super().__init__(message, headers={"Retry-After": "5"})


class ShuttingDownError(ServiceError):
    """The server is shutting down (SIGTERM): try again, another instance or this one restarted."""

    status, code = 503, "shutting_down"

    def __init__(self, message: str = "the server is shutting down; try again shortly"):
        super().__init__(message, headers={"Retry-After": "5", "Connection": "close"})


class DeadlineError(ServiceError):
    status, code = 504, "timeout"


# Stable codes of `service.media.MediaError` subclasses -> HTTP status.
MEDIA_STATUS = {"undecodable": 400, "unsupported_media": 415, "too_large": 413}


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
        404: "no such model (code: unknown_model)",
        408: "the upload was too slow or stalled; the connection is closed (code: upload_timeout)",
        413: "upload, video duration or frame size over the limits (code: too_large)",
        415: "not a video format the service reads (code: unsupported_media)",
        422: "invalid parameters (code: invalid_parameters)",
        429: "busy: the inference queue, the request or the upload limit is full; see Retry-After (code: busy)",
        503: "models not loaded and warmed up yet, or the server is shutting down (codes: not_ready, shutting_down)",
        504: "the request ran past its deadline (code: timeout)",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}


def error_response(err: ServiceError, request_id: str | None) -> JSONResponse:
    """The JSON answer of an error (`ErrorBody`), counted in `s2d_errors_total`: the one place error bodies are made."""
    metrics.ERRORS.labels(err.code).inc()
    body = {"error": {"code": err.code, "message": err.message, "request_id": request_id}}
    if err.details:
        body["error"]["details"] = err.details
    return JSONResponse(body, status_code=err.status, headers=err.headers)
