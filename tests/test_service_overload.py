"""Overload and deadlines over real HTTP: a tiny queue and a slow model give 429s with Retry-After and no crash; a
deadline gives 504; a client that disconnects frees its queued work.

The model is made slow on purpose (`fault_inference_delay_ms`: every inference call takes at least that long), so
the verdicts hold on a machine of any speed; none of them hopes the machine is slow.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from s2d.harness.server import running_server
from tests.service_helpers import TEST_MODEL, make_video
from tests.test_service import assert_error, classify, metric_value


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    # 3 s at hop 0.25 s and 1 s windows: 9 windows.
    return make_video(tmp_path_factory.mktemp("overload") / "long.mp4", seconds=3.0, fps=8, seed=3)


def test_tiny_queue_and_slow_model_answer_429_with_retry_after_and_keep_serving(store, long_video):
    # 10 x 9 windows at >= 0.2 s each, one at a time: the queue of one is full while the uploads arrive.
    settings = dict(max_batch=1, max_wait_ms=0, queue_size=1, max_active_requests=64, fault_inference_delay_ms=200)
    with running_server(store, **settings) as server:

        def send(_: int) -> httpx.Response:
            with server.client(timeout=120) as client:
                return classify(client, long_video, hop_seconds=0.25)

        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(send, range(10)))
        statuses = sorted(r.status_code for r in responses)
        print(
            f"10 simultaneous uploads against queue_size=1: {statuses.count(200)} answered, {statuses.count(429)} busy"
        )
        assert set(statuses) <= {200, 429} and statuses.count(429) >= 1 and statuses.count(200) >= 1, statuses
        for response in responses:
            if response.status_code == 429:
                assert_error(response, 429, "busy")
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["error"]["details"]["retry_after_s"] == int(response.headers["retry-after"])
            else:  # every accepted request is answered in full
                assert response.json()["persons"][0]["summary"]["num_windows"] == 9
        assert server.process.poll() is None
        with server.client() as client:
            assert classify(client, long_video).status_code == 200  # back to normal once the burst is over
            text = client.get("/metrics").text
        assert metric_value(text, "s2d_rejected_total") == statuses.count(429)
        assert metric_value(text, "s2d_errors_total", code="busy") == statuses.count(429)
        assert metric_value(text, "s2d_inference_queue_clips", model=TEST_MODEL) == 0


def _post_and_hang_up(url: str, video: Path, headers: dict[str, str], after_s: float) -> None:
    """Send a complete multipart upload over a raw socket, then close the connection without reading the answer."""
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()
    boundary = "s2dboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n'
        f"Content-Type: video/mp4\r\n\r\n".encode()
        + video.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/classify?mode=aligned&hop_seconds=0.25 HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode() + body)
        time.sleep(after_s)


def test_deadline_gives_504_and_a_disconnected_client_frees_its_work(store, tmp_path):
    video = make_video(tmp_path / "long.mp4", seconds=20.0, fps=8, seed=4)  # 77 windows
    delay_s = 0.5  # per inference call of one clip: the 77 windows need >= 38 s, the deadline is 2 s
    settings = dict(max_batch=1, max_wait_ms=0, request_timeout_s=2.0, fault_inference_delay_ms=delay_s * 1000)
    with running_server(store, **settings) as server, server.client() as client:
        started = time.monotonic()
        body = assert_error(classify(client, video, hop_seconds=0.25), 504, "timeout")
        assert body["error"]["details"]["request_timeout_s"] == 2.0 and time.monotonic() - started < 10
        time.sleep(0.5)
        clips_before = metric_value(client.get("/metrics").text, "s2d_clips_total", model=TEST_MODEL)
        hung_up = time.monotonic()
        _post_and_hang_up(server.url, video, server.headers, after_s=0.3)
        time.sleep(1.5)
        text = client.get("/metrics").text
        assert metric_value(text, "s2d_inference_queue_clips", model=TEST_MODEL) == 0
        # At most one call per delay_s can have run while the client was connected, plus the one it left running.
        done = metric_value(text, "s2d_clips_total", model=TEST_MODEL) - clips_before
        assert done <= (time.monotonic() - hung_up) / delay_s + 1, done
        time.sleep(2 * delay_s)  # nothing more runs for it: its remaining windows were dropped
        text = client.get("/metrics").text
        assert metric_value(text, "s2d_clips_total", model=TEST_MODEL) - clips_before == done
        assert "client disconnected" in server.logs()
        assert client.get("/readyz").status_code == 200
