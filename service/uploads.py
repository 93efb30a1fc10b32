"""Uploads streamed to a temporary file, the size limit and the pace enforced while reading, the file deleted
whatever happens.

Pace (`UploadPace`): the body must arrive within `upload_timeout_s`, and after the first `upload_grace_s` at an
average of at least `upload_min_bytes_per_s`; otherwise 408 `upload_timeout` and the connection is closed. Uvicorn
times out idle keep-alive connections only (`timeout_keep_alive`), never a body being read, so without this one
stalled client would hold its connection and its work for as long as it likes.

Two request shapes: a raw body (`Content-Type: video/mp4`, `application/octet-stream`, ...) or
`multipart/form-data` with the video in a field named `file` (or `video`). Multipart is parsed incrementally with
python-multipart, so neither shape ever holds the whole upload in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from s2d.service import metrics
from s2d.service.errors import BadRequestError, MediaTooLargeError, UnsupportedMediaError, UploadTimeoutError

log = logging.getLogger(__name__)

FILE_FIELDS = ("file", "video")
# Spool files are named s2d-upload-<pid>-<random>.bin: the pid says which process owns one, so a process sweeps only
# what a dead one left behind (a SIGKILL, a crash) and, when it stops, what it left itself.
SPOOL_PREFIX = "s2d-upload-"
_SPOOL_NAME = re.compile(rf"^{SPOOL_PREFIX}(\d+)-[^/]*\.bin$")
PROCESS_STARTED = time.time()  # this module is imported as the service starts
# Content types a raw body may have: the decoder looks at the bytes, this only refuses bodies that say they are
# something else (JSON, text, forms).
RAW_TYPES = ("video/", "image/", "application/octet-stream", "application/mp4")


class UploadAborted(Exception):
    """The client went away before the upload was complete."""


@dataclass
class Upload:
    path: Path
    size: int
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class UploadPace:
    """How long receiving one upload may take: `timeout_s` in all and, after the first `grace_s`, an average of at
    least `min_bytes_per_s` (0: no rate check)."""

    timeout_s: float
    min_bytes_per_s: float
    grace_s: float

    @classmethod
    def from_settings(cls, settings) -> UploadPace:
        return cls(settings.upload_timeout_s, settings.upload_min_bytes_per_s, settings.upload_grace_s)

    def due(self, received: int) -> float:
        """Seconds from the start by which more than `received` bytes must have arrived."""
        if not self.min_bytes_per_s:
            return self.timeout_s
        return min(self.timeout_s, self.grace_s + received / self.min_bytes_per_s)

    def timed_out(self, received: int, elapsed_s: float) -> UploadTimeoutError:
        details = {
            "received_bytes": received, "elapsed_s": round(elapsed_s, 3), "upload_timeout_s": self.timeout_s,
            "upload_min_bytes_per_s": self.min_bytes_per_s, "upload_grace_s": self.grace_s,
        }  # fmt: skip
        if self.due(received) >= self.timeout_s:
            message = f"the upload took longer than {self.timeout_s:g} s ({received} bytes received)"
        else:
            message = (
                f"the upload is too slow: {received} bytes in {elapsed_s:.1f} s; after the first {self.grace_s:g} s "
                f"it must average at least {self.min_bytes_per_s:g} bytes/s"
            )
        return UploadTimeoutError(message, details)


def _too_large(limit: int) -> MediaTooLargeError:
    message = f"the upload is larger than the limit of {limit} bytes"
    return MediaTooLargeError(message, reason="bytes", details={"max_upload_bytes": limit})


async def _chunks(request: Request, limit: int, pace: UploadPace) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)  # refused before reading a byte
    loop = asyncio.get_running_loop()
    started, received = loop.time(), 0
    body = request.stream()
    try:
        while True:
            try:
                async with asyncio.timeout_at(started + pace.due(received)):
                    chunk = await anext(body)
            except StopAsyncIteration:
                return
            except TimeoutError:
                metrics.REJECTED.labels("upload_timeout").inc()
                raise pace.timed_out(received, loop.time() - started) from None
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            yield chunk
    except ClientDisconnect:
        raise UploadAborted() from None
    finally:
        await body.aclose()


class _MultipartSink:
    """Callbacks for python-multipart: the first file field goes to `out`, other parts are ignored."""

    def __init__(self, out):
        self.out = out
        self.headers: dict[bytes, bytes] = {}
        self._field: bytes = b""
        self._value: bytes = b""
        self.writing = False
        self.found = False
        self.filename: str | None = None
        self.content_type: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": lambda data, start, end: setattr(self, "_field", self._field + data[start:end]),
            "on_header_value": lambda data, start, end: setattr(self, "_value", self._value + data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.headers, self.writing = {}, False

    def on_header_end(self) -> None:
        self.headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("latin-1")
        if name in FILE_FIELDS and not self.found:
            self.writing = self.found = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw else None
            ctype = self.headers.get(b"content-type")
            self.content_type = ctype.decode("latin-1") if ctype else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.writing:
            self.out.write(data[start:end])

    def on_part_end(self) -> None:
        self.writing = False


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request, limit: int, pace: UploadPace, directory: Path | None = None
) -> AsyncIterator[Upload]:
    """Stream the request body to a temp file and yield it; the file is deleted on exit, error or not."""
    ctype_header = request.headers.get("content-type", "")
    ctype, params = parse_options_header(ctype_header)
    ctype = ctype.decode("latin-1").lower()
    if ctype != "multipart/form-data" and not ctype.startswith(RAW_TYPES):
        raise UnsupportedMediaError(
            f"send the video as multipart/form-data (field 'file') or as a raw video body; got {ctype or 'no type'!r}"
        )
    fd, name = tempfile.mkstemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", suffix=".bin", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, filename, content_type = 0, None, ctype
            if ctype == "multipart/form-data":
                boundary = params.get(b"boundary")
                if not boundary:
                    raise BadRequestError("multipart/form-data without a boundary")
                sink = _MultipartSink(out)
                parser = MultipartParser(boundary, sink.callbacks())
                try:
                    async for chunk in _chunks(request, limit, pace):
                        size += len(chunk)
                        parser.write(chunk)
                    parser.finalize()
                except (ValueError, TypeError) as err:  # python-multipart's MultipartParseError is a ValueError
                    raise BadRequestError(f"malformed multipart body: {err}") from None
                if not sink.found:
                    raise BadRequestError(f"the multipart body has no file field (expected one of {FILE_FIELDS})")
                filename, content_type = sink.filename, sink.content_type
            else:
                async for chunk in _chunks(request, limit, pace):
                    size += len(chunk)
                    out.write(chunk)
        if path.stat().st_size == 0:
            raise BadRequestError("the upload is empty")
        yield Upload(path, path.stat().st_size, filename, content_type)
    finally:
        path.unlink(missing_ok=True)


def spool_files(directory: Path | None) -> list[tuple[Path, int]]:
    """(path, owning pid) of the spool files in `directory` (default: the system's temp folder)."""
    folder = Path(directory or tempfile.gettempdir())
    found = []
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if match := _SPOOL_NAME.match(path.name):
                found.append((path, int(match.group(1))))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def sweep_stale_spool_files(directory: Path | None) -> int:
    """At start-up: delete spool files older than this process whose owner is gone (its pid is dead, or is this
    process's own: a container restarts with the same pid). A live process's files are never touched."""
    removed = 0
    for path, pid in spool_files(directory):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < PROCESS_STARTED and (pid == os.getpid() or not _alive(pid)):
                path.unlink()
                removed += 1
    if removed:
        log.info("removed %d spool file(s) left by processes that are gone", removed)
    return removed


def remove_own_spool_files(directory: Path | None) -> int:
    """At exit: this process's spool files (each upload deletes its own; this catches what an exit cut short)."""
    own = [path for path, pid in spool_files(directory) if pid == os.getpid()]
    for path in own:
        path.unlink(missing_ok=True)
    return len(own)
