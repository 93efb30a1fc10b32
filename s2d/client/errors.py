"""What the client raises: every refusal of the service is an `S2DError` with its code; a stream closed other than
by its end is a `StreamClosed` with the close code."""

from __future__ import annotations

from typing import Any

import httpx

from s2d.service.streams.protocol import CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TRY_LATER


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


def closed_error(close_code: int, reason: str, fatal: dict | None) -> StreamClosed:
    kind = _BY_CLOSE.get(close_code, StreamClosed)
    return kind(close_code, reason, code=fatal and fatal.get("code"), message=fatal and fatal.get("message"))
