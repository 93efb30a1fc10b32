"""Every HTTP request FFmpeg makes for an http(s) source, made by us: FFmpeg opens the URL, the playlists and
segments of an HLS stream (its own demuxer parses them) and any other nested URL through PyAV's `io_open`, which
lands in `CheckedHttp.open`. There each URL's scheme is checked (http and https only: no `file`, `data`, `crypto`,
...), its host resolved once and checked against the allow-list (service.sources.policy; the result kept for the
connection, so a name is never looked up twice), the request sent with httpx to that checked address (the name
still in the Host header and TLS's SNI and certificate check), and redirects followed here, one hop at a time,
each hop checked the same way. FFmpeg reads the bytes through a file-like `HttpFile`, seekable (an mp4 whose index
sits at its end) with Range requests where the server takes them, else only when small enough to read again.

A refused URL raises SourceNotAllowedError in FFmpeg's call and is kept in `refusals`: FFmpeg's HLS demuxer skips a
segment it cannot open, so the reader asks `refused()` between frames and fails the source with the reason.
"""

from __future__ import annotations

import threading
from urllib.parse import urljoin, urlsplit

import httpx

from s2d.service.errors import SourceNotAllowedError
from s2d.service.sources.policy import AllowList, Pinned

MAX_REDIRECTS = 5
_SKIP_BYTES = 256 * 1024  # a forward seek this short reads on instead of a new request
_REREAD_BYTES = 8 * 1024 * 1024  # the largest file read again to emulate a seek (a server without Range requests)
_CHUNK = 64 * 1024
_HTTP_SCHEMES = ("http", "https")


class CheckedHttp:
    """One source connection's HTTP client: every URL checked, each host resolved once (pins given or found)."""

    def __init__(self, allow: AllowList, timeout: tuple[float, float], pins: list[Pinned] = ()):
        self.allow = allow
        self.pins = {(p.host, p.port): p for p in pins}
        self.refusals: list[SourceNotAllowedError] = []
        self._lock = threading.Lock()  # FFmpeg opens from the reader thread; keep it right if that ever changes
        open_s, read_s = timeout
        self.client = httpx.Client(
            follow_redirects=False, trust_env=False,  # no proxy from the environment: the address is ours to pick
            timeout=httpx.Timeout(read_s, connect=open_s), headers={"Accept-Encoding": "identity"},
        )  # fmt: skip

    def io_open(self, url: str, flags: int, options: dict) -> HttpFile:
        """PyAV's `io_open`: FFmpeg's every open of a URL for this source."""
        return self.open(url)

    def open(self, url: str, offset: int = 0) -> HttpFile:
        try:
            response, final = self._get(url, offset)
        except SourceNotAllowedError as err:
            self.refusals.append(err)
            raise
        if offset and response.status_code != 206:
            response.close()
            raise OSError(f"{_origin(final)} ignored a Range request")
        return HttpFile(self, final, response, offset)

    def refused(self) -> SourceNotAllowedError | None:
        return self.refusals[0] if self.refusals else None

    def close(self) -> None:
        self.client.close()

    def _get(self, url: str, offset: int) -> tuple[httpx.Response, str]:
        """GET `url` from byte `offset`, following redirects ourselves (each hop checked): the response and the URL
        that gave it."""
        for _ in range(MAX_REDIRECTS + 1):
            request = self._request(url, offset)
            try:
                response = self.client.send(request, stream=True)
            except httpx.TimeoutException as err:
                raise TimeoutError(f"{_origin(url)}: timed out ({type(err).__name__})") from None
            except httpx.HTTPError as err:
                raise ConnectionError(f"{_origin(url)}: {err}") from None
            if not response.is_redirect:
                if response.status_code >= 400:
                    response.close()
                    raise OSError(f"{_origin(url)} answered HTTP {response.status_code}")
                return response, url
            response.close()
            url = urljoin(url, response.headers["location"])
        raise OSError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, url: str, offset: int) -> httpx.Request:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _HTTP_SCHEMES or not parts.hostname:
            raise SourceNotAllowedError(
                f"the source asked for {scheme or 'a relative'}:// ({url[:100]}); only http and https are followed",
                details={"reason": "scheme", "scheme": scheme},
            )
        pinned = self._pin(parts.hostname, parts.port or (443 if scheme == "https" else 80))
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        extensions = {"sni_hostname": parts.hostname} if scheme == "https" else {}
        return self.client.build_request("GET", pinned.url(parts), headers=headers, extensions=extensions)

    def _pin(self, host: str, port: int) -> Pinned:
        key = (host.lower(), port)
        with self._lock:
            if key not in self.pins:
                self.pins[key] = self.allow.pin_host(*key)
            return self.pins[key]


class HttpFile:
    """One HTTP response as the file-like object PyAV reads; `seek` reopens with a Range request."""

    def __init__(self, http: CheckedHttp, url: str, response: httpx.Response, offset: int):
        self.http, self.url, self.response = http, url, response
        self.pos = offset
        self.size = _size(response, offset)
        self.ranges = response.headers.get("accept-ranges", "").lower() == "bytes" or response.status_code == 206
        self._chunks = response.iter_raw(_CHUNK)
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        """At most `n` bytes, from the chunk at hand (FFmpeg takes short reads; b"" is the end)."""
        if not self._buffer:
            self._buffer = next(self._chunks, b"")
        if n < 0 or n >= len(self._buffer):
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        self.pos += len(data)
        return data

    def seekable(self) -> bool:
        """With Range requests; on a server without them, a small file (read again to emulate a seek). A larger
        one is read as a stream, as FFmpeg's own client reads it."""
        return self.size is not None and (self.ranges or self.size <= _REREAD_BYTES)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """A Range request (a short skip forward reads on); without Range requests, the file read again from its
        start up to the offset, or read on."""
        if not self.seekable():
            raise OSError("not seekable")
        target = offset + (0, self.pos, self.size)[whence]
        if target < self.pos or (self.ranges and target - self.pos > _SKIP_BYTES):
            self._reopen(target if self.ranges else 0)
        while self.pos < target and self.read(min(target - self.pos, _CHUNK)):
            pass
        return self.pos

    def _reopen(self, offset: int) -> None:
        self.response.close()
        reopened = self.http.open(self.url, offset)
        self.response, self._chunks, self._buffer, self.pos = reopened.response, reopened._chunks, b"", offset

    def close(self) -> None:
        self.response.close()


def _size(response: httpx.Response, offset: int) -> int | None:
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
