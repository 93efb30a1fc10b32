"""Server-side sources against real servers on loopback: a real RTSP server (GStreamer's, tests/rtsp_server.py, under
Debian's python3) and a plain HTTP server (http.server in a thread) serving an HLS playlist and mp4 files; the service
in a subprocess (s2d.harness.server, the tiny test model, torch blocked) pulls them with PyAV.

Covered: results from an RTSP camera (REST, WebSocket events), the camera stopped (reconnecting) and started again
(live again), a clean DELETE; an HLS VOD playlist played to its end (Server-Sent Events); refusals (scheme, allow-list,
options, the limit on sources, frame size); URLs that never answer (nothing listening, a socket that accepts and never
speaks) and a video without a face, each a clear state while the service keeps serving; sources off by default.
Timing is forced by tiny settings (timeouts, back-off, attempts) and waited for by bounded polling.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import pytest

from s2d.client import Client, NotFoundError, RequestError
from s2d.harness.server import REPO, free_port, running_server
from s2d.service.schemas import SourceInfo
from tests.faces_helpers import write_video
from tests.service_helpers import TEST_CLASSES, make_video
from tests.stream_helpers import expect_shutdown_close, face_frames
from tests.test_service import metric_value

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: PyGObject and GStreamer are Debian packages, not in the venv
RTSP_SERVER = REPO / "tests" / "rtsp_server.py"
RTSP_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)
FPS = 10  # of the test videos
TAKE_FPS = 5  # sources_max_fps: what a source takes of them
OPEN_TIMEOUT_S = 1.0
ATTEMPTS = 3


def _rtsp_missing() -> str | None:
    try:
        check = subprocess.run([SYSTEM_PYTHON, str(RTSP_SERVER), "--check"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if check.returncode == 0 else (check.stdout + check.stderr).strip()


_MISSING = _rtsp_missing()
needs_rtsp = pytest.mark.skipif(
    _MISSING is not None,
    reason=f"no GStreamer RTSP server for Debian's python3 ({_MISSING}): apt-get install -y {RTSP_PACKAGES}",
)


class RtspServer:
    """tests/rtsp_server.py in a subprocess: started, stopped (a camera going away) and started again, same port."""

    def __init__(self, mounts: dict[str, Path], gop: int = FPS):
        self.port, self.mounts, self.gop = free_port(), mounts, gop
        self.process: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        mounts = [f"{name}={path}" for name, path in self.mounts.items()]
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port), str(self.gop), *mounts],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        line = self.process.stdout.readline().strip()  # "ready", or the reason it stopped
        assert line == "ready", line + self.process.stdout.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def until(value: Callable, what: str, timeout: float = 20.0, every: float = 0.1):
    """Poll `value()` until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while not (got := value()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)
    return got


def make_hls(video: Path, folder: Path) -> Path:
    """The video's H.264 remuxed into an HLS VOD playlist with MPEG-TS segments (FFmpeg's hls muxer)."""
    folder.mkdir()
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(video)) as source, av.open(str(folder / "index.m3u8"), "w", format="hls", options=options) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # the demuxer's last, empty packet
                packet.stream = stream
                out.mux(packet)
    return folder / "index.m3u8"


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for connection in held:
            connection.close()


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """The face video (30 s, longer than any test needs a camera), a 3 s face clip as HLS, a 3 s video without a
    face, and one with frames over the size limit."""
    folder = tmp_path_factory.mktemp("media")
    frames = [image for image, _ in face_frames(30)]
    write_video(folder / "face.mp4", (frames + frames[::-1]) * 5, fps=FPS)
    make_hls(write_video(folder / "clip.mp4", frames, fps=FPS), folder / "hls")
    make_video(folder / "noface.mp4", seconds=3.0, fps=FPS, size=(360, 640))
    make_video(folder / "large.mp4", seconds=1.0, fps=FPS, size=(544, 960))
    return folder


@pytest.fixture(scope="module")
def http_media(media) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(media)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server(store):
    settings = dict(
        warmup=False, max_batch=2, detect_every=3, sources_enabled=True, sources_allow=["127.0.0.1/32"],
        sources_max=3, sources_max_pixels=640 * 360, sources_max_fps=TAKE_FPS, sources_backoff_s=[0.2, 1.0],
        sources_max_attempts=ATTEMPTS, sources_open_timeout_s=OPEN_TIMEOUT_S, sources_read_timeout_s=2.0,
        sources_results_per_track=5,
    )  # fmt: skip
    with running_server(store, **settings) as srv:
        yield srv


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def metrics(server) -> str:
    with server.client() as http:
        return http.get("/metrics").text


# ---------------------------------------------------------------------------------------------------------------------
# Tests


@needs_rtsp
def test_rtsp_camera_results_reconnection_and_delete(server, client, media):
    camera = RtspServer({"face": media / "face.mp4"})
    camera.start()
    try:
        created = client.sources.create(camera.url("face"), name="door")
        assert created.state == "connecting" and created.name == "door" and created.options.fps == 15
        events: list[dict] = []
        with client.sources.events(created.id) as socket_events:
            reader = threading.Thread(target=lambda: events.extend(socket_events))
            reader.start()
            live = until(lambda: (s := client.sources.get(created.id)).results >= 2 and s, "results from the camera")
            assert live.state == "live" and live.faces_detected > 0 and not live.notes
            camera.stop()
            stopped = time.monotonic()
            dropped = until(lambda: (s := client.sources.get(created.id)).state == "reconnecting" and s, "reconnecting")
            print(f"camera stopped: reconnecting after {time.monotonic() - stopped:.2f} s ({dropped.last_error})")
            camera.start()
            restarted = time.monotonic()
            again = until(lambda: (s := client.sources.get(created.id)).state == "live" and s, "live again")
            print(f"camera restarted: live again after {time.monotonic() - restarted:.2f} s, {again.reconnects} "
                  f"reconnection(s); frames decoded {again.frames.decoded}, taken {again.frames.taken}")  # fmt: skip
            more = until(lambda: (s := client.sources.get(created.id)).results > again.results and s, "new results")
            text = metrics(server)
            deleted = client.sources.delete(created.id)
            reader.join(30)
    finally:
        camera.stop()
    assert dropped.last_error and again.reconnects >= 1 and again.attempts == 0
    assert more.frames.taken > again.frames.taken and more.frames.decoded > 1.5 * more.frames.taken  # 5 of 10 fps
    labels = {"source_id": created.id}
    assert metric_value(text, "s2d_source_state", state="live", **labels) == 1
    # Frames go on being taken between the snapshot and the scrape, and until the delete.
    assert more.frames.taken <= metric_value(text, "s2d_source_frames_total", stage="taken", **labels)
    assert metric_value(text, "s2d_source_frames_total", stage="taken", **labels) <= deleted.frames.taken
    assert metric_value(text, "s2d_source_reconnects_total", **labels) == again.reconnects
    assert metric_value(text, "s2d_frames_total", source="source") >= more.stream["frames"]["processed"]

    assert deleted.state == "ended" and deleted.last_error == "stopped"
    with pytest.raises(NotFoundError):
        client.sources.get(created.id)
    assert f'source_id="{created.id}"' not in metrics(server)  # its series went with it
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["source", "ready"] and kinds[-1] == "end" and "result" in kinds
    assert events[1]["limits"]["fps"] == TAKE_FPS  # 15 asked, the server's cap taken
    states = [e["state"] for e in events if e["type"] == "source"]
    assert states[-1] == "ended" and "live" in states[states.index("reconnecting") :]
    results = [e for e in events if e["type"] == "result"]
    assert all(r["label"] in TEST_CLASSES for r in results)
    assert events[-1]["windows"]["classified"] == len(results)  # every classified window reached the subscriber


def test_hls_playlist_plays_to_its_end(server, client, http_media):
    source = client.sources.create(f"{http_media}/hls/index.m3u8", fps=15, smoothing="none")
    events = list(client.sources.sse(source.id))  # until the source ends: the `end` event, then the response ends
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["source", "ready"] and kinds[-1] == "end"
    ended = client.sources.get(source.id)
    assert ended.state == "ended" and ended.last_error is None  # the VOD playlist ran out: no reconnection
    # Every frame decoded (counted up to the last one taken), 5 fps of the 10 converted and handed over.
    assert 29 <= ended.frames.decoded <= 30 and ended.frames.taken + ended.frames.replaced == 15
    results = client.sources.results(source.id, last=2)
    assert results.source.id == source.id and results.tracks
    assert all(1 <= len(t.results) <= 2 and t.results[-1].smoothed is None for t in results.tracks)
    assert sum(1 for k in kinds if k == "result") == ended.results > 0
    client.sources.delete(source.id)


def test_refused_sources_say_why(server, client):
    refusals = {
        "file:///etc/passwd": (422, "unsupported_scheme"),
        "gopher://127.0.0.1/x": (422, "unsupported_scheme"),
        "rtsp://10.1.2.3/stream": (403, "source_not_allowed"),
        "http://[::1]:9/x.m3u8": (403, "source_not_allowed"),  # loopback, but not the allowed 127.0.0.1
        "rtsp://camera.invalid/stream": (403, "source_not_allowed"),  # cannot be resolved
    }
    for url, (status, code) in refusals.items():
        with pytest.raises(RequestError) as refused:
            client.sources.create(url)
        assert (refused.value.status, refused.value.code) == (status, code), url
    with pytest.raises(RequestError) as bad:
        client.sources.create("rtsp://127.0.0.1/x", fps=0, colour="blue")
    assert (bad.value.status, bad.value.code) == (422, "invalid_parameters")
    assert client.sources.list() == []


def test_sources_that_never_answer_or_show_no_face_get_a_clear_state(server, client, http_media, media):
    with silent_listener() as silent_port:
        silent = client.sources.create(f"http://127.0.0.1:{silent_port}/live.m3u8")
        mute = client.sources.create(f"rtsp://127.0.0.1:{silent_port}/cam")
        noface = client.sources.create(f"{http_media}/noface.mp4")
        with pytest.raises(RequestError) as full:  # three running: the limit
            client.sources.create(f"{http_media}/noface.mp4")
        assert (full.value.status, full.value.code) == (409, "too_many_sources")
        with server.client() as http:  # the service keeps serving meanwhile
            assert http.get("/readyz").status_code == 200
            with (media / "clip.mp4").open("rb") as clip:
                assert http.post("/v1/classify", params={"mode": "aligned"}, files={"file": clip}).status_code == 200
        over = {s.id: until(lambda s=s: (i := client.sources.get(s.id)).state in ("ended", "failed") and i, s.url)
                for s in (silent, mute, noface)}  # fmt: skip
    for info in over.values():  # forgotten: room for the next ones
        assert isinstance(client.sources.delete(info.id), SourceInfo)
    refused = client.sources.create(f"rtsp://127.0.0.1:{free_port()}/nobody")
    large = client.sources.create(f"{http_media}/large.mp4")
    over |= {s.id: until(lambda s=s: (i := client.sources.get(s.id)).state in ("ended", "failed") and i, s.url)
             for s in (refused, large)}  # fmt: skip
    for source in (silent, mute, refused):
        info = over[source.id]
        assert info.state == "failed" and info.attempts == ATTEMPTS, info
        assert f"{ATTEMPTS} connection attempts failed in a row" in info.last_error
    assert "refused" in over[refused.id].last_error.lower()
    assert over[large.id].state == "failed" and "960x544" in over[large.id].last_error and over[large.id].attempts == 0
    quiet = over[noface.id]
    assert quiet.state == "ended" and quiet.results == 0 and quiet.faces_detected == 0
    assert quiet.notes == [f"no face was found in {quiet.stream['frames']['processed']} frames"]
    assert quiet.stream["frames"]["processed"] > 0
    with server.client() as http:
        assert http.get("/readyz").status_code == 200
        assert metric_value(http.get("/metrics").text, "s2d_sources", state="failed") == 2  # the two still listed
    for source in (refused, large):
        client.sources.delete(source.id)
    assert client.sources.list() == []


def test_sigterm_closes_source_subscribers_with_1001(store, http_media):
    settings = dict(warmup=False, sources_enabled=True, sources_allow=["127.0.0.1/32"], sources_max_fps=TAKE_FPS)
    with running_server(store, **settings) as server, Client(server.url) as client:
        source = client.sources.create(f"{http_media}/hls/index.m3u8")
        with client.sources.events(source.id) as events:
            assert [events.recv(10)["type"] for _ in range(2)] == ["source", "ready"]
            server.process.send_signal(signal.SIGTERM)
            expect_shutdown_close(events)
        assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)


def test_sources_are_off_unless_enabled(store):
    from fastapi.testclient import TestClient

    from s2d.service.app import create_app
    from s2d.service.settings import Settings, load_settings

    app = create_app(load_settings(model_store=store, warmup=False, log_format="text"))
    with TestClient(app) as http:
        for method, path in (("POST", "/v1/sources"), ("GET", "/v1/sources"), ("GET", "/v1/sources/x/results")):
            response = http.request(method, path, json={"url": "rtsp://127.0.0.1/x"})
            assert response.status_code == 403 and response.json()["error"]["code"] == "sources_disabled", path
        assert "S2D_SOURCES_ENABLED" in response.json()["error"]["message"]
    defaults = Settings.model_fields
    assert defaults["sources_enabled"].default is False and defaults["sources_allow"].default == []
