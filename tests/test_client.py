"""The Python client (s2d.client) against real server processes on loopback (s2d.harness.server, the tiny test model,
torch blocked): typed REST results and raised errors, a stream's drop counts and close codes (1008 for the API key
and a bad hello, 1013 past `stream_max_streams`, 1001 on SIGTERM), and the commands built on it (`s2d predict
--server`, `s2d watch --server`).

What a verdict needs is forced, never hoped for from the machine's speed: every frame of a stream takes at least
`fault_frame_delay_ms` in the pipeline (a burst falls behind), every inference call at least
`fault_inference_delay_ms` (a request holds its slot while a second one arrives).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import av
import pytest

from s2d.cli import main
from s2d.client import (
    AsyncClient,
    BusyError,
    Client,
    ConnectionFailed,
    NotFoundError,
    PolicyViolation,
    RequestError,
    StreamClosed,
    StreamUnauthorized,
    TryLater,
    UnauthorizedError,
    UnavailableError,
)
from s2d.harness.server import free_port, running_server
from s2d.service.schemas import ClassifyResponse
from tests.service_helpers import TEST_CLASSES, TEST_MODEL, make_video
from tests.stream_helpers import aligned_frames, expect_shutdown_close
from tests.test_service_hostile import wait_for_metric

API_KEY = "client-key"
FRAME_DELAY_MS = 40
INFERENCE_DELAY_MS = 300


@pytest.fixture(scope="module")
def server(store):
    settings = dict(
        api_key=API_KEY, warmup=False, max_batch=2, max_wait_ms=5, max_active_requests=1,
        fault_frame_delay_ms=FRAME_DELAY_MS, fault_inference_delay_ms=INFERENCE_DELAY_MS,
    )  # fmt: skip
    with running_server(store, **settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("client") / "clip.mp4", seconds=2.0, fps=8)  # 3 windows (aligned)


def test_rest_answers_are_the_service_schemas(server, video):
    with Client(server.url, api_key=API_KEY) as client:
        assert client.health().status == "ok"
        assert client.ready().models == [TEST_MODEL]
        assert client.models().default == TEST_MODEL
        by_path = client.classify(video, mode="aligned")
        by_bytes = client.classify(video.read_bytes(), mode="aligned", smoothing="ema")
    assert isinstance(by_path, ClassifyResponse) and by_path.model.name == TEST_MODEL and by_path.request_id
    (person,) = by_path.persons
    assert [w.t_start for w in person.windows] == [0.0, 0.5, 1.0]
    assert set(person.windows[0].probs) == set(TEST_CLASSES)
    assert [w.label for w in by_bytes.persons[0].windows] == [w.label for w in person.windows]
    assert all(w.smoothed is not None for w in by_bytes.persons[0].windows)


def test_errors_are_raised_with_the_service_code(server, video):
    with Client(server.url, api_key=API_KEY) as client:
        with pytest.raises(NotFoundError) as unknown:
            client.classify(video, mode="aligned", model="no_such_model")
        with pytest.raises(RequestError) as invalid:
            client.classify(video, mode="aligned", hop_seconds=-1)
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_model") and unknown.value.request_id
    assert "no_such_model" in unknown.value.message and str(unknown.value).startswith("unknown_model 404")
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_parameters")
    assert invalid.value.details["errors"][0]["field"] == "hop_seconds"
    with Client(server.url) as keyless, pytest.raises(UnauthorizedError) as unauthorized:
        keyless.models()
    assert unauthorized.value.status == 401
    with Client(f"http://127.0.0.1:{free_port()}") as nobody, pytest.raises(ConnectionFailed) as unreachable:
        nobody.health()
    assert unreachable.value.code == "connection"


def test_a_full_service_raises_busy_with_retry_after(server, video):
    long = make_video(video.parent / "long.mp4", seconds=4.0, fps=8, seed=3)  # 7 windows: >= 4 slow calls
    outcome = {}

    def first() -> None:
        with Client(server.url, api_key=API_KEY) as client:
            outcome["first"] = client.classify(long, mode="aligned")

    holder = threading.Thread(target=first)
    holder.start()
    wait_for_metric(server, "s2d_active_requests", 1)  # its upload is spooled and it holds the only slot
    with Client(server.url, api_key=API_KEY) as client, pytest.raises(BusyError) as busy:
        client.classify(video, mode="aligned")
    holder.join(60)
    assert (busy.value.status, busy.value.code) == (429, "busy") and busy.value.retry_after >= 1
    assert len(outcome["first"].persons[0].windows) == 7  # the request holding the slot completed


def test_a_stream_that_falls_behind_counts_its_drops(server):
    frames = aligned_frames(8)

    async def run() -> tuple[dict, list[dict], dict]:
        async with AsyncClient(server.url, api_key=API_KEY) as client, client.stream(
            mode="aligned", fps=30, tracks_fps=0
        ) as stream:  # fmt: skip
            for i in range(30):  # 30 fps timestamps, sent at once: each frame costs >= 40 ms, so most wait behind
                await stream.send_frame(frames[i % 8], ts_ms=1000 + i * 34)
            for i in range(6):  # 5 ms apart: closer than half a 30 fps interval drops 3005-3015 and 3025
                await stream.send_frame(frames[0], ts_ms=3000 + i * 5)
            end = await stream.end()
            return end, [event async for event in stream], stream.stats

    end, events, stats = asyncio.run(run())
    frames_ = end["frames"]
    assert frames_["received"] == 36 == frames_["processed"] + frames_["dropped_total"]
    assert frames_["dropped"]["behind"] > 0 and frames_["dropped"]["rate"] == 4, frames_
    assert events[-1] is end and stats is end  # the events before the end stay readable; the latest counts
    assert any(e["type"] == "result" for e in events)


def test_refused_streams_raise_what_the_close_says(server):
    with Client(server.url, api_key="wrong-key") as client, pytest.raises(StreamUnauthorized) as unauthorized:
        client.open_stream()
    assert isinstance(unauthorized.value, PolicyViolation) and isinstance(unauthorized.value, UnauthorizedError)
    assert (unauthorized.value.close_code, unauthorized.value.status) == (1008, 403)
    with Client(server.url, api_key=API_KEY) as client:
        with pytest.raises(PolicyViolation) as unknown, client.stream(model="nope"):
            pass
        with pytest.raises(StreamClosed) as bad, client.stream(fps=-3):
            pass
    assert (unknown.value.close_code, unknown.value.code) == (1008, "unknown_model")
    assert "nope" in unknown.value.reason
    assert (bad.value.close_code, bad.value.code) == (1002, "bad_hello") and "fps" in bad.value.message


def test_predict_and_watch_commands_use_the_server(server, video, tmp_path, capsys):
    common = ["--server", server.url, "--api-key", API_KEY, "--mode", "aligned"]
    assert main(["predict", str(video), *common, "-o", str(tmp_path), "--no-plot"]) == 0
    answer = ClassifyResponse.model_validate_json((tmp_path / "clip.json").read_text())
    assert answer.model.name == TEST_MODEL and len(answer.persons[0].windows) == 3
    assert main(["predict", str(video), *common, "--model", "nope", "-o", str(tmp_path)]) == 2
    assert "error (unknown_model)" in capsys.readouterr().err

    annotated = tmp_path / "watched.mp4"
    assert main(["watch", str(video), *common, "--fps", "8", "--annotate", str(annotated)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    end = lines[-1]
    assert end["type"] == "end" and end["frames"]["received"] == 16, end  # 2 s at 8 fps, sent in real time
    results = [e for e in lines if e["type"] == "result"]
    assert results and {e["type"] for e in lines} <= {"result", "end", "error"}
    assert len(results) == end["windows"]["classified"]
    with av.open(str(annotated)) as written:
        assert sum(1 for _ in written.decode(video=0)) == 16
    assert main(["watch", str(video), "--mode", "aligned"]) == 2  # no server: nothing starts
    assert "--server" in capsys.readouterr().err


def test_sigterm_and_the_stream_limit_close_with_1001_and_1013(store, video):
    settings = dict(warmup=False, max_batch=1, stream_max_streams=1, fault_inference_delay_ms=500, shutdown_grace_s=5)
    with running_server(store, **settings) as server, Client(server.url) as client:
        with client.stream(mode="aligned") as stream:
            with pytest.raises(TryLater) as refused, client.stream(mode="aligned"):
                pass
            assert (refused.value.close_code, refused.value.code) == (1013, "busy")
            assert "too many streams" in refused.value.reason
            outcome = {}
            holder = threading.Thread(target=lambda: outcome.update(answer=client.classify(video, mode="aligned")))
            holder.start()  # in flight when the signal comes: the drain waits for it, readiness says why meanwhile
            wait_for_metric(server, "s2d_active_requests", 1)
            server.process.send_signal(signal.SIGTERM)
            expect_shutdown_close(stream)
            deadline = time.monotonic() + 5
            with pytest.raises(UnavailableError) as draining:
                while time.monotonic() < deadline:
                    client.ready()
            holder.join(30)
        assert (draining.value.code, draining.value.retry_after) == ("shutting_down", 5.0)
        assert len(outcome["answer"].persons[0].windows) == 3  # finished within the grace
