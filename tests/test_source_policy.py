"""Sources that cannot be turned against the network (issue 30), against real servers on loopback addresses.

The service (a subprocess, the tiny test model) allows 127.0.0.2 by address; a forbidden HTTP server listens on
127.0.0.3 on the same port and counts every request it receives: each test asserts it received none. A tiny DNS
server on 127.0.0.4 (dnspython, the service's resolver pointed at it by `sources_dns_server`) answers `cam.test`
with the allowed address on the first query and the forbidden one on every later one. Covered: a redirect from the
allowed host to the forbidden address; an HLS playlist whose segments name the forbidden host; the name that
rebinds between lookups; a redirect within the allowed host still followed. And, without a server, the allow-list's
rule that addresses inside the machine and its networks need an entry naming them by address.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from s2d.client import Client, RequestError
from s2d.harness.server import running_server
from s2d.service.errors import SourceNotAllowedError
from s2d.service.sources.policy import AllowList
from tests.faces_helpers import write_video
from tests.stream_helpers import face_frames
from tests.test_sources import FPS, _Quiet, make_hls, until

ALLOWED, FORBIDDEN, DNS = "127.0.0.2", "127.0.0.3", "127.0.0.4"
NAME = "cam.test"
SEGMENTS = {"/hls/index0.ts", "/hls/index1.ts", "/hls/index2.ts"}


# ---------------------------------------------------------------------------------------------------------------------
# The allow-list's rule, no server needed (addresses only: nothing is resolved)


@pytest.mark.parametrize(
    ("entries", "address", "allowed"),
    [
        (["0.0.0.0/0"], "93.184.216.34", True),  # a wide entry opens the internet...
        (["0.0.0.0/0", "::/0"], "127.0.0.1", False),  # ...not the inside
        (["0.0.0.0/0"], "10.1.2.3", False),
        (["0.0.0.0/0"], "169.254.169.254", False),  # the cloud metadata service
        (["0.0.0.0/0"], "100.64.0.1", False),  # carrier-grade NAT
        (["::/0"], "::1", False),
        (["::/0"], "fd00:ec2::254", False),  # the metadata service over IPv6
        (["127.0.0.0/8"], "::ffff:127.0.0.1", True),  # a mapped address is judged as the IPv4 one
        (["::/0"], "::ffff:127.0.0.1", False),
        (["::/0"], "64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        (["::/0"], "2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ([ALLOWED], ALLOWED, True),  # by address
        ([ALLOWED], FORBIDDEN, False),
        (["10.0.0.0/8"], "10.1.2.3", True),  # by a network inside a private block
        (["10.0.0.0/7"], "10.1.2.3", False),  # wider than the private block: not by address
    ],
)
def test_inside_addresses_need_an_entry_naming_them_by_address(entries, address, allowed):
    allow = AllowList.parse(entries)
    if allowed:
        pinned = allow.pin_host(address, 80)  # the address connected to: the one checked (mapped: the IPv4 one)
        assert any(pinned.address in n for n in allow.networks) and pinned.address.version == 4
        return
    with pytest.raises(SourceNotAllowedError) as refused:
        allow.pin_host(address, 80)
    assert refused.value.details["reason"] == "not_allowed"


# ---------------------------------------------------------------------------------------------------------------------
# Real servers


class CountingHttp:
    """http.server on `address`:`port` serving `folder`, plus the hostile paths and `/ranged/FILE` (with Range
    requests, which http.server does not take); counts the requests it receives and the Range offsets asked for."""

    def __init__(self, address: str, port: int, folder: Path, forbidden_base: str):
        self.requests: list[str] = []
        self.ranges: list[int] = []
        routes = {
            "/away.m3u8": (302, {"Location": f"{forbidden_base}/hls/index.m3u8"}, b""),
            "/hls/moved.m3u8": (302, {"Location": "/hls/index.m3u8"}, b""),
            "/evil/index.m3u8": (200, {"Content-Type": "application/vnd.apple.mpegurl"},
                                 _retarget(folder / "hls" / "index.m3u8", f"{forbidden_base}/hls/")),
        }  # fmt: skip
        server = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path.startswith("/ranged/"):
                    self._ranged(folder / self.path.removeprefix("/ranged/"))
                    return
                if self.path in routes:
                    status, headers, body = routes[self.path]
                    self.send_response(status)
                    for key, value in {**headers, "Content-Length": str(len(body))}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                    return
                super().do_GET()

            def _ranged(self, path: Path) -> None:
                data = path.read_bytes()
                asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                start = int(asked.group(1)) if asked else 0
                server.ranges.append(start)
                self.send_response(206 if asked else 200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if asked:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer((address, port), functools.partial(Handler, directory=str(folder)))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _retarget(playlist: Path, base: str) -> bytes:
    """The playlist with every segment named by an absolute URL under `base`."""
    lines = playlist.read_text().splitlines()
    return "\n".join(line if line.startswith("#") or not line else base + line for line in lines).encode()


class RebindingDns:
    """A DNS server on loopback (UDP): `cam.test` A is ALLOWED at the first query, FORBIDDEN at every later one; no
    AAAA. Counts the A queries."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS, 0))
        self.address = f"{DNS}:{self.sock.getsockname()[1]}"
        self.queries: Counter[str] = Counter()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            if question.rdtype == dns.rdatatype.A and name == NAME:
                self.queries[name] += 1
                answer = ALLOWED if self.queries[name] == 1 else FORBIDDEN
                response.answer.append(dns.rrset.from_text(question.name, 0, "IN", "A", answer))
            elif name != NAME:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def _shared_port() -> int:
    """A port free on both the allowed and the forbidden address."""
    while True:
        with socket.socket() as probe:
            probe.bind((ALLOWED, 0))
            port = probe.getsockname()[1]
            with socket.socket() as other:
                try:
                    other.bind((FORBIDDEN, port))
                except OSError:
                    continue
            return port


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("policy-media")
    frames = [image for image, _ in face_frames(30)]
    # A key frame a second, so the playlist has three segments (FFmpeg's HLS demuxer moves from one to the next
    # through our requests, not through its keep-alive).
    make_hls(write_video(folder / "clip.mp4", frames, fps=FPS, options={"g": str(FPS)}), folder / "hls")
    assert (folder / "hls" / "index.m3u8").read_text().count(".ts") == 3
    return folder


@pytest.fixture(scope="module")
def servers(media) -> Iterator[tuple[CountingHttp, CountingHttp, int]]:
    port = _shared_port()
    forbidden = CountingHttp(FORBIDDEN, port, media, f"http://{FORBIDDEN}:{port}")
    allowed = CountingHttp(ALLOWED, port, media, f"http://{FORBIDDEN}:{port}")
    try:
        yield allowed, forbidden, port
    finally:
        allowed.close()
        forbidden.close()


@pytest.fixture(scope="module")
def resolver() -> Iterator[RebindingDns]:
    server = RebindingDns()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def client(store, resolver) -> Iterator[Client]:
    settings = dict(
        warmup=False, sources_enabled=True, sources_allow=[ALLOWED], sources_dns_server=resolver.address,
        sources_max_fps=5, sources_backoff_s=[0.2, 0.5], sources_max_attempts=2, sources_open_timeout_s=2.0,
        sources_read_timeout_s=2.0,
    )  # fmt: skip
    with running_server(store, **settings) as server, Client(server.url) as c:
        yield c


def _over(client: Client, source_id: str):
    return until(lambda: (s := client.sources.get(source_id)).state in ("ended", "failed") and s, source_id, 60)


def test_a_redirect_to_a_forbidden_address_is_refused(client, servers):
    allowed, forbidden, port = servers
    source = client.sources.create(f"http://{ALLOWED}:{port}/away.m3u8")
    over = _over(client, source.id)
    assert over.state == "failed" and over.attempts == 0, over  # a retry would get the same answer
    assert f"{FORBIDDEN}" in over.last_error and "not in the allowed" in over.last_error
    assert "/away.m3u8" in allowed.requests and forbidden.requests == []
    client.sources.delete(source.id)


def test_playlist_segments_on_a_forbidden_host_are_refused(client, servers):
    allowed, forbidden, port = servers
    source = client.sources.create(f"http://{ALLOWED}:{port}/evil/index.m3u8")
    over = _over(client, source.id)
    assert over.state == "failed" and FORBIDDEN in over.last_error, over
    assert "/evil/index.m3u8" in allowed.requests and over.frames.decoded == 0 and forbidden.requests == []
    client.sources.delete(source.id)


def test_a_redirect_within_the_allowed_host_is_followed(client, servers):
    allowed, forbidden, port = servers
    before = len(allowed.requests)
    source = client.sources.create(f"http://{ALLOWED}:{port}/hls/moved.m3u8", fps=15)
    over = _over(client, source.id)
    assert over.state == "ended" and over.last_error is None and over.frames.decoded >= 29, over
    assert set(allowed.requests[before:]) == {"/hls/moved.m3u8", "/hls/index.m3u8", *SEGMENTS}
    assert forbidden.requests == []
    client.sources.delete(source.id)


def test_an_mp4_with_its_index_at_the_end_is_read_with_range_requests(client, servers, media):
    allowed, forbidden, port = servers
    before = len(allowed.ranges)
    source = client.sources.create(f"http://{ALLOWED}:{port}/ranged/clip.mp4", fps=15)
    over = _over(client, source.id)
    assert over.state == "ended" and over.last_error is None and over.frames.decoded >= 29, over
    assert any(0 < offset < (media / "clip.mp4").stat().st_size for offset in allowed.ranges[before:])  # a seek
    assert forbidden.requests == []
    client.sources.delete(source.id)


def test_a_name_that_rebinds_is_looked_up_once_per_connection(client, servers, resolver):
    """The first lookup (the allowed address) serves the whole connection: the playlist and its segments come from
    the address checked, though every later lookup of the name gives the forbidden one. The next source's lookup
    gets the forbidden address: refused."""
    allowed, forbidden, port = servers
    before = len(allowed.requests)
    source = client.sources.create(f"http://{NAME}:{port}/hls/index.m3u8", fps=15)
    over = _over(client, source.id)
    assert over.state == "ended" and over.frames.decoded >= 29, over
    assert resolver.queries[NAME] == 1  # FFmpeg never looked the name up itself
    assert set(allowed.requests[before:]) == {"/hls/index.m3u8", *SEGMENTS}
    with pytest.raises(RequestError) as refused:
        client.sources.create(f"http://{NAME}:{port}/hls/index.m3u8")
    assert (refused.value.status, refused.value.code) == (403, "source_not_allowed")
    assert FORBIDDEN in refused.value.message and forbidden.requests == []
    client.sources.delete(source.id)


class RedirectingCamera:
    """An RTSP server on the allowed address that answers OPTIONS, then 302 to an RTSP URL on the forbidden address,
    where a listener counts the connections it receives."""

    def __init__(self):
        self.reached: list = []
        self.forbidden = socket.create_server((FORBIDDEN, 0))
        self.camera = socket.create_server((ALLOWED, 0))
        self.location = f"rtsp://{FORBIDDEN}:{self.forbidden.getsockname()[1]}/cam"
        self.url = f"rtsp://{ALLOWED}:{self.camera.getsockname()[1]}/cam"
        for serve in (self._count, self._answer):
            threading.Thread(target=serve, daemon=True).start()

    def _count(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, peer = self.forbidden.accept()
                self.reached.append(peer)
                connection.close()

    def _answer(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=self._talk, args=(self.camera.accept()[0],), daemon=True).start()

    def _talk(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection, connection.makefile("rb") as requests:
            while True:
                head = []
                while (line := requests.readline()) not in (b"\r\n", b""):
                    head.append(line.decode().strip())
                if not head or not line:
                    return
                cseq = next(h.split(":", 1)[1].strip() for h in head if h.lower().startswith("cseq"))
                answer = "200 OK\r\nPublic: DESCRIBE, SETUP, PLAY" if head[0].startswith("OPTIONS") else (
                    f"302 Moved\r\nLocation: {self.location}")  # fmt: skip
                connection.sendall(f"RTSP/1.0 {answer}\r\nCSeq: {cseq}\r\n\r\n".encode())

    def close(self) -> None:
        self.forbidden.close()
        self.camera.close()


def test_ffmpeg_by_itself_follows_rtsp_redirects():
    """FFmpeg's RTSP client follows a 3xx answer to DESCRIBE to the host its Location names, resolving and connecting
    by itself (no option turns this off): why the service puts its relay between FFmpeg and a camera (next test)."""
    import av

    camera = RedirectingCamera()
    try:
        with contextlib.suppress(av.FFmpegError, OSError):
            av.open(camera.url, options={"rtsp_transport": "tcp"}, timeout=(2, 2)).close()
        until(lambda: camera.reached, "FFmpeg at the redirect's address", timeout=5)
    finally:
        camera.close()
    assert len(camera.reached) == 1


def test_an_rtsp_redirect_is_refused(client):
    camera = RedirectingCamera()
    try:
        source = client.sources.create(camera.url)
        over = _over(client, source.id)
    finally:
        camera.close()
    assert over.state == "failed" and over.attempts == 0, over
    assert "302" in over.last_error and "not followed" in over.last_error and camera.location in over.last_error
    assert camera.reached == []
    client.sources.delete(source.id)
