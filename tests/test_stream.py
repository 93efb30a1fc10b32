"""The live stream over a real WebSocket: a uvicorn server in a subprocess (torch blocked), the client s2d.client.

Covers ordering, timestamps, drop accounting, smoothing, limits and malformed messages; plus the small parts
(image header sizes, the outbox policy, hysteresis) directly, and (in-process, to see the server's own objects)
that a closed stream's state is released and the idle server gives memory back.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import cv2
import httpx
import numpy as np
import pytest

from s2d.client import StreamUnauthorized
from s2d.harness.server import running_server
from s2d.service.errors import ProtocolError
from s2d.service.settings import Settings
from s2d.service.smoothing import EmaSmoother, Hysteresis
from s2d.service.streams import Outbox, decode_image, pack_frame
from s2d.service.streams.live import StreamConfig
from tests.faces_helpers import astronaut_face
from tests.service_helpers import TEST_CLASSES, TEST_WINDOW_S
from tests.stream_helpers import StreamClient, aligned_frames, face_frames, jpeg

API_KEY = "stream-key-1"
MAX_STREAMS = 4
MAX_FRAME_BYTES = 200_000
IDLE_S = 3.0


@pytest.fixture(scope="module")
def server(store):
    with running_server(
        store,
        api_key=API_KEY,
        max_batch=4,
        max_wait_ms=20,
        detect_every=3,
        stream_max_streams=MAX_STREAMS,
        stream_idle_timeout_s=IDLE_S,
        stream_max_frame_bytes=MAX_FRAME_BYTES,
        stream_max_pixels=640 * 480,
        stream_max_fps=30,
    ) as srv:
        yield srv


def client(server, **hello) -> StreamClient:
    return StreamClient(server.url, API_KEY, **hello)


def send_paced(c: StreamClient, frames: list[bytes], fps: float, t0_ms: float = 5000.0) -> list[float]:
    """Send frames in real time at `fps`; returns their timestamps (ms)."""
    stamps = []
    start = time.monotonic()
    for i, data in enumerate(frames):
        ts = t0_ms + i * 1000 / fps
        stamps.append(ts)
        c.send_frame(data, ts, i)
        time.sleep(max(0.0, start + (i + 1) / fps - time.monotonic()))
    return stamps


def check_accounting(end: dict, sent: int) -> None:
    frames = end["frames"]
    assert frames["received"] == sent
    assert frames["received"] == frames["processed"] + frames["dropped_total"], frames
    assert frames["dropped_total"] == sum(frames["dropped"].values())


# ---------------------------------------------------------------------------------------------------------------------
# Results: ordering, timestamps, smoothing


def test_aligned_stream_results_in_order_with_timestamps_and_smoothing(server):
    c = client(server, mode="aligned", fps=10, smoothing="ema", ema_alpha=0.5, hysteresis=0.05, tracks_fps=0)
    ready = c.start()
    assert ready["type"] == "ready" and ready["classes"] == TEST_CLASSES
    assert ready["window"] == {"num_frames": 2, "window_seconds": TEST_WINDOW_S, "hop_seconds": TEST_WINDOW_S / 2}
    assert ready["model"]["name"] == "tiny_test" and ready["model"]["demo"] is False
    stamps = send_paced(c, aligned_frames(30), fps=10)  # stream time 0.0 .. 2.9 s
    end = c.finish()
    assert c.wait_closed()[0] == 1000
    check_accounting(end, 30)

    results = c.of("result")
    # Windows start every hop: 0, 0.5, ..., 2.0 (the last one, [2, 3], covers the last frame at 2.9 s, so the end
    # adds no padded window). Each is classified or counted as dropped, never lost.
    assert len(results) + sum(end["windows"]["dropped"].values()) == 5
    assert len(results) >= 4
    starts = [r["t_start"] for r in results]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # in order, once each
    assert all(s in (0.0, 0.5, 1.0, 1.5, 2.0) for s in starts)
    by_ts = {ts: i for i, ts in enumerate(stamps)}
    for r in results:
        assert r["track_id"] == 0
        assert r["t_end"] == pytest.approx(r["t_start"] + TEST_WINDOW_S)
        probs = np.array([r["probs"][k] for k in TEST_CLASSES])
        assert probs.sum() == pytest.approx(1, abs=1e-3)
        assert r["label"] == TEST_CLASSES[int(np.argmax(probs))]
        assert r["confidence"] == pytest.approx(probs.max())
        if not r["padded"]:  # the frame that completed the window: at or after its last sampling time
            assert by_ts[r["frame_ts"]] == r["seq"]
            assert (r["frame_ts"] - stamps[0]) / 1000 >= r["t_start"] + 0.75 * TEST_WINDOW_S - 1e-6
            lat = r["latency_ms"]
            assert lat["server"] >= lat["queue"] >= 0 and lat["inference"] > 0

    # Smoothing: the EMA of the raw probabilities over the classified windows, then the hysteresis label.
    ema, hyst = EmaSmoother(0.5), Hysteresis(0.05)
    for r in results:
        expected = ema.update(np.array([r["probs"][k] for k in TEST_CLASSES]))
        got = np.array([r["smoothed"]["probs"][k] for k in TEST_CLASSES])
        np.testing.assert_allclose(got, expected, atol=2e-5)
        assert r["smoothed"]["label"] == TEST_CLASSES[hyst.update(expected)]
        assert r["smoothed"]["confidence"] == pytest.approx(got[TEST_CLASSES.index(r["smoothed"]["label"])])


def test_smoothing_none_gives_raw_only(server):
    c = client(server, mode="aligned", fps=10, smoothing="none", tracks_fps=0)
    c.start()
    send_paced(c, aligned_frames(12), fps=10)
    c.finish()
    results = c.of("result")
    assert results and all(r["smoothed"] is None for r in results)
    c.close()


def test_hysteresis_and_ema_units():
    h = Hysteresis(0.2)
    assert h.update(np.array([0.6, 0.4])) == 0
    assert h.update(np.array([0.45, 0.55])) == 0  # leads by 0.1 < 0.2: the label stays
    assert h.update(np.array([0.35, 0.65])) == 1  # leads by 0.3: it changes
    assert Hysteresis(0).update(np.array([0.2, 0.8])) == 1
    e = EmaSmoother(0.25)
    e.update(np.array([1.0, 0.0]))
    np.testing.assert_allclose(e.update(np.array([0.0, 1.0])), [0.75, 0.25])


# ---------------------------------------------------------------------------------------------------------------------
# Faces


def test_faces_stream_tracks_the_face_and_classifies_it(server):
    frames = face_frames(24)
    c = client(server, mode="faces", fps=10, tracks_fps=30)
    ready = c.start()
    assert ready["detect_every_frames"] == 10  # the default interval, 1 s, at the 10 fps the hello declares
    send_paced(c, [jpeg(img) for img, _ in frames], fps=10)
    end = c.finish()
    check_accounting(end, 24)
    tracks = [e for e in c.of("tracks") if e["tracks"]]
    assert len(tracks) >= 10, "a visible face gives tracks events"
    assert {e["width"] for e in tracks} == {640} and {e["height"] for e in tracks} == {360}
    for e in tracks:
        assert len(e["tracks"]) == 1, e
        x1, y1, x2, y2 = e["tracks"][0]["box"]
        px1, py1, px2, py2 = frames[e["seq"]][1]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert px1 <= cx <= px2 and py1 <= cy <= py2, (e, frames[e["seq"]][1])  # the box is on the pasted face
    assert [e["seq"] for e in c.of("tracks")] == sorted(e["seq"] for e in c.of("tracks"))
    results = c.of("result")
    assert results and {r["track_id"] for r in results} == {e["tracks"][0]["track_id"] for e in tracks}
    assert all(r["label"] in TEST_CLASSES for r in results)


def test_a_streams_detection_interval_is_seconds_at_its_rate_or_else_every_nth_frame():
    config = StreamConfig.from_settings(Settings(detect_every=3, stream_detect_interval_s=0.5))
    assert [config.detect_every_frames(fps) for fps in (30, 15, 1, 0.5)] == [15, 8, 1, 1]
    frames = StreamConfig.from_settings(Settings(detect_every=3, stream_detect_interval_s=0))
    assert frames.detect_every_frames(30) == 3  # 0: as uploads, every detect_every-th frame


# ---------------------------------------------------------------------------------------------------------------------
# Back-pressure and drop accounting


def test_drops_are_counted_when_behind_too_fast_or_out_of_order(store):
    # Each frame takes >= 0.1 s in the pipeline (fault injection), so a burst falls behind on a machine of any speed.
    with running_server(store, api_key=API_KEY, stream_max_fps=30, fault_frame_delay_ms=100) as slow_server:
        _count_drops(slow_server)


def _count_drops(server) -> None:
    frames = [jpeg(img) for img, _ in face_frames(8)]
    c = client(server, mode="faces", fps=30, tracks_fps=0)
    c.start()
    n = 0
    for i in range(60):  # a burst at 30 fps timestamps, sent as fast as the socket takes it: the server falls behind
        c.send_frame(frames[i % 8], 1000 + i * 34, n)
        n += 1
    for i in range(10):  # 200 fps timestamps: over the 30 fps cap
        c.send_frame(frames[0], 4000 + i * 5, n)
        n += 1
    c.send_frame(frames[0], 10, n)  # earlier than the previous one
    n += 1
    end = c.finish()
    check_accounting(end, n)
    dropped = end["frames"]["dropped"]
    assert dropped["behind"] > 0
    assert dropped["rate"] >= 5
    assert dropped["out_of_order"] == 1
    assert any(e["code"] == "out_of_order" for e in c.of("error"))
    # The last stats event the client saw never counts more than the end event.
    for s in c.of("stats"):
        assert s["frames"]["dropped_total"] <= end["frames"]["dropped_total"]


def test_outbox_drops_droppable_events_first():
    async def run():
        box = Outbox(3)
        box.put({"type": "result", "i": 0})
        box.put({"type": "tracks", "i": 1}, droppable=True)
        box.put({"type": "result", "i": 2})
        box.put({"type": "result", "i": 3})  # full: the tracks event goes
        box.put({"type": "result", "i": 4})  # full of results: the oldest goes
        assert box.dropped == 2
        got = [(await box.get())["i"] for _ in range(3)]
        box.close(1000, "end")
        assert await box.get() is None
        return got

    assert asyncio.run(run()) == [2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------------
# Malformed messages and limits


def test_stream_frames_are_checked_by_the_shared_image_header_reader():
    ok, png = cv2.imencode(".png", np.zeros((37, 53, 3), np.uint8))
    assert ok and decode_image(png.tobytes(), 53 * 37).shape == (37, 53, 3)
    for data, code in [(png.tobytes(), "too_large"), (b"not an image", "undecodable")]:
        with pytest.raises(ProtocolError) as info:
            decode_image(data, 53 * 37 - 1)
        assert info.value.code == code


def test_malformed_messages_get_errors_and_do_not_affect_other_streams(server):
    good = client(server, mode="aligned", fps=10, tracks_fps=0)
    good.start()
    outcome = {}

    def run_good():
        send_paced(good, aligned_frames(20), fps=10)
        outcome["end"] = good.finish()

    thread = threading.Thread(target=run_good)
    thread.start()

    bad = client(server, mode="aligned", fps=10, tracks_fps=0)
    bad.start()
    frame = aligned_frames(1)[0]
    messages = [
        b"\x00\x01junk",  # no header
        pack_frame(b"not an image at all", 1000, 0),
        pack_frame(b"\xff\xd8" + b"\x00" * 500, 1100, 1),  # a JPEG start, then nothing readable
        pack_frame(b"x" * (MAX_FRAME_BYTES + 1), 1200, 2),  # over the byte limit (still under the socket's cap)
        pack_frame(jpeg(np.zeros((600, 900, 3), np.uint8), 30), 1300, 3),  # 540000 > 640x480 pixels
        "this is not JSON",
        json.dumps({"type": "dance"}),
        pack_frame(frame, 1400, 4),  # a good one still works
    ]
    for message in messages[:-1]:  # each answered by its error before the next is sent: one at a time
        bad.ws.send_raw(message)
        while bad.next_event()["type"] != "error":
            pass
    bad.ws.send_raw(messages[-1])  # nothing of this stream is in flight: it cannot be dropped for being behind
    end = bad.finish()
    codes = [e["code"] for e in bad.of("error")]
    assert codes.count("bad_frame") == 1 and codes.count("bad_message") == 2
    assert codes.count("too_large") == 2 and codes.count("undecodable") == 2, codes
    assert not any(e["fatal"] for e in bad.of("error"))
    check_accounting(end, 6)
    assert end["frames"]["processed"] == 1
    assert end["frames"]["dropped"] == {**end["frames"]["dropped"], "malformed": 1, "too_large": 2,
                                        "undecodable": 2}  # fmt: skip

    thread.join(60)
    assert outcome["end"]["frames"]["processed"] == 20 and good.of("result"), "the other stream is unaffected"


def test_a_faces_stream_decodes_only_what_it_uses_and_reports_a_broken_frame_it_needed(server):
    """Two frames whose header is sound and whose data is cut short: frame 10 is a detection frame (1 s at 10 fps),
    decoded at once, so it is dropped as undecodable and said so; frame 5 is between detections and far from every
    window's sampling time (0.25 s, 0.75 s, ...), so it is never decoded and costs nothing. The stream goes on."""
    images = [jpeg(img) for img, _ in face_frames(14)]
    for broken in (5, 10):
        images[broken] = images[broken][: len(images[broken]) // 2]
    c = client(server, mode="faces", fps=10, tracks_fps=60)
    assert c.start()["detect_every_frames"] == 10
    for i, data in enumerate(images):  # each frame once the one before is through: none is dropped as behind
        c.send_frame(data, 1000 + 100 * i, i)
        while not _answers_frame(c.next_event(), i):
            pass
        time.sleep(0.02)  # over 1/60 s: the next frame's tracks event is not held back by tracks_fps
    end = c.finish()
    check_accounting(end, 14)
    messages = [e["message"] for e in c.of("error") if e["code"] == "undecodable"]
    assert len(messages) == 1 and messages[0].startswith("frame 10:"), messages
    assert end["frames"]["dropped"] == {**end["frames"]["dropped"], "undecodable": 1}
    assert end["frames"]["processed"] == 13 and c.of("result")


def _answers_frame(event: dict, seq: int) -> bool:
    """The server's word on frame `seq`: its tracks, or its error."""
    if event["type"] == "tracks":
        return event["seq"] == seq
    return event["type"] == "error" and event["message"].startswith(f"frame {seq}:")


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        (b"S2D1" + b"\x00" * 12, 1002, "bad hello"),  # a frame before the hello
        ('{"type": "hello", "fps": -3}', 1002, "bad hello"),
        ('{"type": "hello", "colour": "blue"}', 1002, "bad hello"),
        ('{"type": "hello", "model": "nope"}', 1008, "no model 'nope'"),
        ('{"type": "hello", "window_seconds": 50}', 1008, "window_seconds"),
    ],
)
def test_bad_hello_closes_with_a_reason(server, first, code, reason):
    c = client(server)
    c.ws.send_raw(first)
    got_code, got_reason = c.wait_closed()
    assert got_code == code and reason in got_reason
    assert c.of("error") and c.of("error")[0]["fatal"]


def test_api_key_is_required_and_accepted_as_subprotocol(server):
    with pytest.raises(StreamUnauthorized) as info:
        StreamClient(server.url, None)
    assert (info.value.status, info.value.close_code, info.value.code) == (403, 1008, "unauthorized")
    with pytest.raises(StreamUnauthorized):
        StreamClient(server.url, "wrong-key")
    c = StreamClient(server.url, API_KEY, via_subprotocol=True, mode="aligned")
    assert c.ws.subprotocol == "s2d.v1"
    assert c.start()["type"] == "ready"
    c.close()


def test_stream_limit_idle_timeout_and_message_size(server):
    # MAX_STREAMS open: the next one is told to come back later (1013), with a reason.
    open_ = [client(server, mode="aligned") for _ in range(MAX_STREAMS)]
    for c in open_:
        c.start()
    opened = time.monotonic()
    extra = client(server, mode="aligned")
    code, reason = extra.wait_closed()
    assert code == 1013 and "too many streams" in reason
    # A message over the socket's size cap closes with 1009.
    open_[1].ws.send_raw(b"S2D1" + b"\x00" * 12 + b"x" * (MAX_FRAME_BYTES + 1000))
    assert open_[1].wait_closed()[0] == 1009
    # A stream that goes silent is closed after the idle timeout.
    code, reason = open_[0].wait_closed(timeout=IDLE_S + 10)
    assert code == 1001 and reason == "idle timeout"
    assert IDLE_S - 0.5 <= time.monotonic() - opened <= IDLE_S + 5
    for c in open_:
        c.close()
    # Every slot is free again, and the metrics say so.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics", headers=server.headers).text
        if "s2d_active_streams 0.0" in text:
            break
        time.sleep(0.2)
    assert "s2d_active_streams 0.0" in text
    assert 's2d_frames_dropped_total{reason="' in text
    again = client(server, mode="aligned")
    assert again.start()["type"] == "ready"
    again.close()


def test_clients_that_leave_at_once_are_logged_once_at_info_without_a_traceback(server):
    since = len(server.logs())

    def gone() -> list[dict]:
        return [r for r in server.records(since) if r["message"].startswith("stream client disconnected")]

    for i in range(20):  # one at a time, so the stream limit never refuses one of them
        c = client(server, mode="aligned")
        c.ws.send_raw(json.dumps({"type": "hello", "mode": "aligned"}))
        c.close()
        deadline = time.monotonic() + 10
        while len(gone()) <= i and time.monotonic() < deadline:
            time.sleep(0.02)
    log = server.logs()[since:]
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]
    lines = gone()
    assert len(lines) == 20 and {r["level"] for r in lines} == {"info"}, lines


def test_ping_and_stats_heartbeat(server):
    c = client(server, mode="aligned", stats_interval_s=0.2)
    c.start()
    c.ws.ping(42)
    assert c.read_until("pong")["t"] == 42
    stats = [e for e in c.drain(1.0) if e["type"] == "stats"]
    assert len(stats) >= 3, "stats arrive every stats_interval_s even without frames"
    assert stats[-1]["frames"]["received"] == 0
    c.close()


# ---------------------------------------------------------------------------------------------------------------------
# State released on close (in-process app: the test reads the server's own objects, not its RSS)


def test_closed_streams_release_their_state(store, monkeypatch):
    import gc
    import weakref

    from fastapi.testclient import TestClient

    from s2d.service import memory
    from s2d.service.app import create_app
    from s2d.service.settings import load_settings

    monkeypatch.setattr(memory, "IDLE_RELEASE_S", 0.05)
    app = create_app(load_settings(model_store=store, max_batch=2, warmup=False, log_format="text"))
    frames = aligned_frames(12)
    with TestClient(app) as http:
        hub = app.state.s2d.streams  # the application state, built by the lifespan
        streams = []
        for closing in ("end", "disconnect"):
            with http.websocket_connect("/v1/stream") as ws:
                hello = {"type": "hello", "mode": "aligned", "fps": 10, "tracks_fps": 0, "stats_interval_s": 0.1}
                ws.send_text(json.dumps(hello))
                assert json.loads(ws.receive_text())["type"] == "ready"
                (live,) = hub.open - set(streams)  # the last one may still be closing
                for i, data in enumerate(frames):  # stream time 0 .. 1.1 s
                    ws.send_bytes(pack_frame(data, 1000.0 + 100 * i, i))
                if closing == "end":
                    ws.send_text(json.dumps({"type": "end"}))
                    while json.loads(ws.receive_text())["type"] != "end":
                        pass
                else:  # every frame taken (a burst: the pipeline may skip to the newest), then gone mid-stream
                    while (e := json.loads(ws.receive_text()))["type"] != "stats" or (
                        e["frames"]["processed"] + e["frames"]["dropped_total"] < len(frames)
                    ):
                        pass
            streams.append(live)
        deadline = time.monotonic() + 10
        while (hub.open or hub.active) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not hub.open and hub.active == 0
        for live in streams:  # emptied when its socket closed, whether the client ended or just went away
            assert live.tracks == {} and live.aligned is None and live.pipeline is None
            assert len(live.frames) == 0 and len(live.outbox) == 0
            assert live.stats.frames_received == len(frames)
        refs = [weakref.ref(live) for live in streams]
        del live, streams
        gc.collect()
        assert all(ref() is None for ref in refs), "a closed stream is still referenced"
        while hub.idle_memory.releases == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.idle_memory.releases >= 1, "memory is given back once no stream is open"
        assert http.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------------------------------------------------
# The same frames over REST and over a stream give the same windows


def test_rest_and_stream_give_the_same_windows(store, tmp_path):
    """One video, aligned mode: POST /v1/classify on the file, and /v1/stream on the frames the server decodes from
    it (sent as lossless PNG, at the video's timestamps). The crops are 160x160, so both paths must enlarge them the
    same way (one resize rule: service.faces.AlignedWindows); the windows and their probabilities must match.

    In-process app, so the stream cannot skip frames: every pipeline thread is held until all frames and `end` are
    in (frames after `end` are processed in order), which the test sees on the server's own stream object."""
    from fastapi.testclient import TestClient

    from s2d.harness.video import write_video
    from s2d.service.app import create_app
    from s2d.service.media import iter_frames
    from s2d.service.settings import load_settings

    fps, count, hop = 25, 40, TEST_WINDOW_S / 2
    crops = [cv2.resize(np.roll(astronaut_face(), 3 * i, axis=1), (160, 160)) for i in range(count)]
    video = write_video(tmp_path / "aligned.mp4", crops, fps)
    frames = [f.image for f in iter_frames(video)]  # exactly what the server decodes from the upload
    assert len(frames) == count
    settings = load_settings(model_store=store, max_batch=2, warmup=False, log_format="text", pipeline_threads=1,
                             stream_frame_buffer=64)  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as http:
        with video.open("rb") as upload:
            params = {"mode": "aligned", "hop_seconds": hop}
            rest = http.post("/v1/classify", params=params, files={"file": ("aligned.mp4", upload)})
        assert rest.status_code == 200, rest.text
        (person,) = rest.json()["persons"]

        hold = threading.Event()
        held = app.state.s2d.executor.submit(hold.wait, 60)  # the one pipeline thread, busy until released
        with http.websocket_connect("/v1/stream") as ws:
            ws.send_text(
                json.dumps({"type": "hello", "mode": "aligned", "fps": fps, "hop_seconds": hop, "tracks_fps": 0})
            )
            assert json.loads(ws.receive_text())["type"] == "ready"
            (live,) = app.state.s2d.streams.open
            for i, image in enumerate(frames):
                png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
                ws.send_bytes(pack_frame(png, 1000.0 + i * 1000 / fps, i))
            ws.send_text(json.dumps({"type": "end"}))
            deadline = time.monotonic() + 30
            while not live.frames.ended and time.monotonic() < deadline:
                time.sleep(0.01)
            assert live.frames.ended
            hold.set()
            held.result(timeout=10)
            events = []
            while (event := json.loads(ws.receive_text()))["type"] != "end":
                events.append(event)
        assert event["frames"]["processed"] == count and event["frames"]["dropped_total"] == 0, event["frames"]

    # A stream classifies the newest window of a track and drops the one still waiting (`superseded`): the burst of
    # frames released at once cuts every window before the first is classified, so some are superseded.
    streamed = [e for e in events if e["type"] == "result"]
    windows = event["windows"]
    assert windows["classified"] == len(streamed) >= 2
    assert windows["classified"] + windows["dropped"]["superseded"] == len(person["windows"]), windows
    by_start = {round(w["t_start"], 3): w for w in person["windows"]}
    for result in streamed:
        window = by_start[round(result["t_start"], 3)]
        assert window["label"] == result["label"]
        for name in TEST_CLASSES:  # the stream rounds probabilities to 5 digits
            assert abs(window["probs"][name] - result["probs"][name]) <= 2e-5, (window, result)
