"""Hostile clients and restarts, over real HTTP against a real server process: stalled uploads, SIGTERM.

Every verdict is forced by tiny limits, never hoped for from the machine's speed: a stalled client sends 10 bytes of
a body it announced as 1 MB and nothing more, so it is late by construction; the work that must outlast a shutdown
grace is made slow on purpose (`fault_inference_delay_ms`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from s2d.harness.server import running_server
from tests.service_helpers import make_video
from tests.stream_helpers import StreamClient
from tests.test_service import assert_error, classify, metric_value

ACTIVE = 2  # max_active_requests
GRACE_S = 2.0  # upload_grace_s
MIN_RATE = 1000.0  # upload_min_bytes_per_s: 10 bytes are due by GRACE_S + 0.01 s


def stalled_upload(url: str, length: int = 1_000_000, sent: bytes = b"0123456789") -> socket.socket:
    """A raw socket that sends the headers of a `length`-byte raw video upload and `sent`, then nothing more."""
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /v1/classify?mode=aligned HTTP/1.1\r\nHost: {host}\r\nContent-Type: video/mp4\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes the connection: (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def wait_for_metric(server, name: str, value: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while metric_value(client.get("/metrics").text, name) != value:
            assert time.monotonic() < deadline, f"{name} never reached {value}"
            time.sleep(0.05)


def test_stalled_uploads_hold_no_request_slot_and_get_408_in_time(store, tmp_path):
    video = make_video(tmp_path / "clip.mp4", seconds=1.0, fps=8)
    settings = dict(max_active_requests=ACTIVE, upload_grace_s=GRACE_S, upload_min_bytes_per_s=MIN_RATE)
    with running_server(store, **settings) as server:
        stalled = [(stalled_upload(server.url), time.monotonic()) for _ in range(ACTIVE)]
        wait_for_metric(server, "s2d_active_uploads", ACTIVE)  # every stalled upload is being received
        with server.client() as client:
            honest = classify(client, video)
            assert honest.status_code == 200, honest.text  # not 429: a stalled upload holds no request slot
            assert client.get("/readyz").status_code == 200
        for sock, sent_at in stalled:
            status, headers, body = read_response(sock, timeout=GRACE_S + 30)
            late_s = time.monotonic() - sent_at
            error = json.loads(body)["error"]
            print(f"stalled upload answered {status} {error['code']} after {late_s:.2f} s (grace {GRACE_S} s)")
            assert status == 408 and error["code"] == "upload_timeout" and headers["connection"] == "close"
            assert error["details"]["received_bytes"] == 10 and "too slow" in error["message"]
            assert GRACE_S <= late_s < GRACE_S + 10, late_s  # never before the grace; the bound is generous
        wait_for_metric(server, "s2d_active_uploads", 0)
        with server.client() as client:
            assert metric_value(client.get("/metrics").text, "s2d_rejected_total", reason="upload_timeout") == ACTIVE


def test_upload_pace_is_the_earlier_of_the_rate_and_the_total_deadline():
    from s2d.service.uploads import UploadPace

    pace = UploadPace(timeout_s=60, min_bytes_per_s=1000, grace_s=10)
    assert (pace.due(0), pace.due(20_000), pace.due(10**9)) == (10, 30, 60)
    assert UploadPace(timeout_s=60, min_bytes_per_s=0, grace_s=10).due(0) == 60  # rate check off
    assert "too slow" in pace.timed_out(0, 10.0).message
    assert "longer than 60 s" in pace.timed_out(10**9, 60.0).message


DELAY_MS = 500  # every inference call (one window: max_batch 1) takes at least this long
SHUTDOWN_GRACE_S = 8.0


def _spool_files_left_behind(upload_dir: Path) -> dict[str, Path]:
    """Old spool files: one of a process that is gone (swept at start-up), one of a live process and an unrelated
    file (both kept)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = {
        "dead": upload_dir / f"s2d-upload-{dead.pid}-abc.bin",
        "live": upload_dir / f"s2d-upload-{os.getpid()}-def.bin",
        "other": upload_dir / "notes.bin",
    }
    an_hour_ago = time.time() - 3600
    for path in files.values():
        path.write_bytes(b"left behind")
        os.utime(path, (an_hour_ago, an_hour_ago))
    return files


def test_sigterm_finishes_or_refuses_work_in_flight_closes_streams_and_leaves_no_spool_file(store, tmp_path):
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    old = _spool_files_left_behind(upload_dir)
    short = make_video(tmp_path / "short.mp4", seconds=2.0, fps=8, seed=1)  # 3 windows: >= 1.5 s
    long = make_video(tmp_path / "long.mp4", seconds=12.0, fps=8, seed=2)  # 45 windows at hop 0.25: >= 22 s
    settings = dict(
        max_batch=1, max_wait_ms=0, fault_inference_delay_ms=DELAY_MS, shutdown_grace_s=SHUTDOWN_GRACE_S,
        upload_grace_s=120, upload_dir=upload_dir,
    )  # fmt: skip
    with running_server(store, **settings) as server, ThreadPoolExecutor(2) as pool:
        assert not old["dead"].exists() and old["live"].exists() and old["other"].exists()

        def post(video: Path, **params) -> httpx.Response:
            with server.client() as client:
                return classify(client, video, **params)

        stream = StreamClient(server.url, mode="aligned")
        assert stream.start()["type"] == "ready"
        unfinishable = pool.submit(post, long, hop_seconds=0.25)
        wait_for_metric(server, "s2d_active_requests", 1)
        finishing = pool.submit(post, short)
        stalled = stalled_upload(server.url)
        wait_for_metric(server, "s2d_active_requests", 2)
        wait_for_metric(server, "s2d_active_uploads", 1)
        since = len(server.logs())
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Draining: the socket still listens, readiness and new work say why they are refused.
        deadline = time.monotonic() + 5
        while (ready := httpx.get(f"{server.url}/readyz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_error(ready, 503, "shutting_down")
        assert_error(post(short), 503, "shutting_down")
        code, reason = stream.wait_closed(timeout=10)
        assert (code, reason) == (1001, "server shutting down")
        assert [e["code"] for e in stream.of("error")] == ["shutting_down"]

        assert finishing.result().status_code == 200, finishing.result().text  # finished within the grace
        refused = unfinishable.result()
        refused_after = time.monotonic() - signalled
        assert_error(refused, 503, "shutting_down")
        assert int(refused.headers["retry-after"]) >= 1
        status, headers, body = read_response(stalled, timeout=SHUTDOWN_GRACE_S + 10)
        assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down"
        assert headers["connection"] == "close"
        assert SHUTDOWN_GRACE_S <= refused_after < SHUTDOWN_GRACE_S + 10, refused_after
        assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        drained = [r["message"] for r in server.records(since) if r["message"].startswith("shutting down:")]
        print(f"SIGTERM: {drained}; the unfinishable request was refused after {refused_after:.1f} s")
        assert drained[0].startswith("shutting down: 3 request(s) in flight, 1 stream(s) closed"), drained
    assert sorted(p.name for p in upload_dir.iterdir()) == sorted([old["live"].name, old["other"].name])


def test_an_unexpected_error_is_answered_and_not_raised_on(tmp_path, caplog):
    """A bug in a route is a 500 body with the request id, the trace in the log only; and the exception stops there.
    Starlette's own catch-all raises it on after answering, and uvicorn then drops the client's keep-alive
    connection: the test client raises whatever the app raises on, so this fails if it does."""
    from fastapi.testclient import TestClient

    from s2d.service.app import create_app
    from s2d.service.settings import Settings

    app = create_app(Settings(model_store=tmp_path, cors_origins=["http://example.test"]))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug with a secret in it")

    client = TestClient(app)  # no lifespan: the route needs no model
    response = client.get("/boom", headers={"x-request-id": "boom-1", "origin": "http://example.test"})
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"] == "boom-1"
    assert response.headers["access-control-allow-origin"] == "http://example.test"  # inside CORS, unlike Starlette's
    assert "secret" not in response.text
    assert "unhandled error" in caplog.text and "RuntimeError: a bug with a secret in it" in caplog.text
