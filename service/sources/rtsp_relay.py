"""RTSP over TCP through a relay of ours, so that FFmpeg cannot follow a camera's redirect.

FFmpeg's RTSP client follows a 3xx answer to its DESCRIBE to whatever host the `Location` names, resolving and
connecting by itself, and no option turns that off. So FFmpeg talks to a loopback port of ours instead of the
camera: the relay has already connected to the camera's checked address (service.sources.policy.Pinned), passes
FFmpeg's bytes on unchanged, and reads the camera's: interleaved RTP (`$`, channel, length, payload) is passed on as
it is; an RTSP answer's head is looked at, and a redirect (3xx) ends the connection before FFmpeg sees it, kept as
the reason (`refusal`). FFmpeg then never learns another address. Used for `rtsp_transport=tcp` (the default); over
UDP the media does not pass the control connection, so the relay is not used and the README states the gap.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

from s2d.service.errors import SourceNotAllowedError
from s2d.service.sources.policy import Pinned

_MAX_HEAD = 64 * 1024  # an RTSP answer's head larger than this is not one
_STATUS = re.compile(rb"^RTSP/\d\.\d (\d{3})")
_LOCATION = re.compile(rb"^location:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_LENGTH = re.compile(rb"^content-length:\s*(\d+)", re.IGNORECASE | re.MULTILINE)


class RtspRelay:
    """One FFmpeg connection to one camera. `url(parts)` is what FFmpeg opens; `close()` ends both sides."""

    def __init__(self, pinned: Pinned, timeout_s: float):
        # The camera first: a camera that refuses the connection is refused as FFmpeg would have been.
        self.camera = socket.create_connection((str(pinned.address), pinned.port), timeout=timeout_s)
        self.camera.settimeout(None)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(timeout_s)
        self.refusal: SourceNotAllowedError | None = None
        self.client: socket.socket | None = None
        self._closed = threading.Event()
        threading.Thread(target=self._serve, name="s2d-rtsp-relay", daemon=True).start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def url(self, parts) -> str:
        """The source's URL with the relay's address (its user, password and path kept)."""
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}").geturl()

    def refused(self) -> SourceNotAllowedError | None:
        return self.refusal

    def close(self) -> None:
        self._closed.set()
        for sock in (self.listener, self.client, self.camera):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _serve(self) -> None:
        try:
            self.client, _ = self.listener.accept()  # FFmpeg's one control connection
        except OSError:
            self.close()
            return
        self.listener.close()
        threading.Thread(target=self._pump_requests, name="s2d-rtsp-relay-up", daemon=True).start()
        self._pump_answers()

    def _pump_requests(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.client.recv(65536):
                self.camera.sendall(chunk)
        self.close()

    def _pump_answers(self) -> None:
        reader = self.camera.makefile("rb")
        try:
            while (unit := _next_unit(reader)) is not None:
                if (status := _STATUS.match(unit)) and 300 <= int(status.group(1)) < 400:
                    location = _LOCATION.search(unit)
                    where = location.group(1).decode(errors="replace") if location else "(no Location)"
                    self.refusal = SourceNotAllowedError(
                        f"the camera answered {status.group(1).decode()} redirecting to {where}; RTSP redirects are "
                        "not followed (add the camera it names as a source of its own)",
                        details={"reason": "redirect", "location": where},
                    )
                    return
                self.client.sendall(unit)
        except OSError:
            pass
        finally:
            reader.close()
            self.close()


def _next_unit(reader) -> bytes | None:
    """The next interleaved frame or RTSP message from the camera, whole; None at the end."""
    first = reader.read(1)
    if not first:
        return None
    if first == b"$":
        header = reader.read(3)
        payload = reader.read(int.from_bytes(header[1:3], "big")) if len(header) == 3 else b""
        return first + header + payload
    head = first
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline(_MAX_HEAD)
        if not line or len(head) > _MAX_HEAD:
            return head or None
        head += line
    length = _LENGTH.search(head)
    return head + (reader.read(int(length.group(1))) if length else b"")
