"""Hostile clients and restarts, over real HTTP against a real server process: stalled uploads.

Every verdict is forced by tiny limits, never hoped for from the machine's speed: a stalled client sends 10 bytes of
a body it announced as 1 MB and nothing more, so it is late by construction.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from bench.server import running_server
from tests.service_helpers import build_store, make_video
from tests.test_service import classify, metric_value

ACTIVE = 2  # max_active_requests
GRACE_S = 2.0  # upload_grace_s
MIN_RATE = 1000.0  # upload_min_bytes_per_s: 10 bytes are due by GRACE_S + 0.01 s


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(str(tmp_path_factory.getbasetemp() / "service-store"))


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
    from service.uploads import UploadPace

    pace = UploadPace(timeout_s=60, min_bytes_per_s=1000, grace_s=10)
    assert (pace.due(0), pace.due(20_000), pace.due(10**9)) == (10, 30, 60)
    assert UploadPace(timeout_s=60, min_bytes_per_s=0, grace_s=10).due(0) == 60  # rate check off
    assert "too slow" in pace.timed_out(0, 10.0).message
    assert "longer than 60 s" in pace.timed_out(10**9, 60.0).message
