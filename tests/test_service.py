"""The REST service over real HTTP: a uvicorn server in a subprocess (torch blocked), real video files (PyAV)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from s2d.harness.server import REPO, free_port, running_server
from tests.service_helpers import (
    TEST_CLASSES,
    TEST_MODEL,
    make_audio_only,
    make_video,
)

API_KEY = "test-key-123"
UPLOAD_LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def server(store, upload_dir):
    with running_server(
        store,
        engine="onnxruntime",  # pinned: `auto` would pick the engine this machine runs fastest (test_variant_choice.py)
        api_key=API_KEY,
        max_batch=4,
        max_wait_ms=100,
        max_upload_bytes=UPLOAD_LIMIT,
        max_pixels=640 * 480,
        max_video_seconds=20,
        upload_dir=upload_dir,
        cors_origins=["http://example.test"],
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "two_s": make_video(d / "two_s.mp4", seconds=2.0, fps=8, seed=1),
        "small": make_video(d / "small.mp4", seconds=1.0, fps=8, size=(112, 96), seed=2),  # resized to 224
        **{f"clip{i}": make_video(d / f"clip{i}.mp4", seconds=1.0, fps=8, seed=10 + i) for i in range(16)},
    }


def classify(client: httpx.Client, video: Path, raw: bool = False, **params) -> httpx.Response:
    params.setdefault("mode", "aligned")
    if raw:
        return client.post(
            "/v1/classify", params=params, content=video.read_bytes(), headers={"content-type": "video/mp4"}
        )
    return client.post("/v1/classify", params=params, files={"file": (video.name, video.read_bytes(), "video/mp4")})


def window_probs(body: dict) -> list[list[float]]:
    return [[w["probs"][c] for c in TEST_CLASSES] for p in body["persons"] for w in p["windows"]]


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(2) or "") for k, v in labels.items()):
            total += float(match.group(3))
    return total


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"] and "Traceback" not in response.text
    return body


def test_service_modules_never_import_torch():
    code = (
        "import sys, s2d.service.app, s2d.service.server, s2d.service.analysis, s2d.service.batcher; "
        "import s2d.service.inference, s2d.service.routes.classify; "
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'torch']; assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_health_is_public_everything_else_needs_the_key(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "models": []}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "models": [TEST_MODEL]}
    assert_error(httpx.get(f"{server.url}/v1/models"), 401, "unauthorized")
    assert_error(httpx.get(f"{server.url}/metrics", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    with server.client() as client:
        body = client.get("/v1/models").json()
        assert body["default"] == TEST_MODEL
        (model,) = body["models"]
        assert model["provider"] == "CPUExecutionProvider" and model["variant"] == "fp32"
        assert model["card"]["classes"] == TEST_CLASSES and model["card"]["num_frames"] == 2
        assert client.get("/v1/models", headers={"X-API-Key": API_KEY}).status_code == 200
        assert_error(client.get("/v1/models/nope"), 404, "unknown_model")
        assert_error(client.get("/no/such/route"), 404, "not_found")


def test_classify_aligned_clip_multipart_and_raw_body(server, videos):
    with server.client() as client:
        response = classify(client, videos["two_s"])
        assert response.status_code == 200, response.text
        body = response.json()
        raw = classify(client, videos["two_s"], raw=True).json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["model"] == {
        "name": TEST_MODEL, "version": "0.0.1-test", "variant": "fp32", "provider": "CPUExecutionProvider",
        "family": "s2d-video", "family_description": "S2D video model (temporal, landmark-aware)", "demo": False,
    }  # fmt: skip
    assert body["window"] == {"num_frames": 2, "window_seconds": 1.0, "hop_seconds": 0.5}
    assert body["video"]["width"] == 224 and body["video"]["fps"] == 8 and body["video"]["frames_decoded"] == 16
    (person,) = body["persons"]
    windows = person["windows"]
    assert [(w["t_start"], w["t_end"]) for w in windows] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    for w in windows:
        assert abs(sum(w["probs"].values()) - 1) < 1e-4
        assert w["label"] == max(w["probs"], key=w["probs"].get) and w["confidence"] == w["probs"][w["label"]]
        assert w["smoothed"] is None
    summary = person["summary"]
    assert summary["num_windows"] == 3 and abs(sum(summary["time_share"].values()) - 1) < 1e-6
    mean = np.mean(window_probs(body), axis=0)
    assert np.allclose([summary["mean_probs"][c] for c in TEST_CLASSES], mean, atol=1e-6)
    assert summary["dominant"] == TEST_CLASSES[int(np.argmax(mean))]
    timings = body["timings"]
    assert timings["inference"] > 0 and timings["decode"] > 0 and timings["total"] >= timings["upload"]
    np.testing.assert_allclose(window_probs(raw), window_probs(body), atol=1e-6)  # same bytes, same answer


def test_options_smoothing_window_override_and_bad_parameters(server, videos):
    with server.client() as client:
        body = classify(client, videos["two_s"], smoothing="ema", ema_alpha=0.5, hop_seconds=1.0).json()
        windows = body["persons"][0]["windows"]
        assert [w["t_start"] for w in windows] == [0.0, 1.0] and body["window"]["hop_seconds"] == 1.0
        first, second = (np.array([w["probs"][c] for c in TEST_CLASSES]) for w in windows)
        smoothed = np.array([windows[1]["smoothed"]["probs"][c] for c in TEST_CLASSES])
        np.testing.assert_allclose(smoothed, 0.5 * first + 0.5 * second, atol=1e-6)
        longer = classify(client, videos["two_s"], window_seconds=2.0).json()
        assert longer["window"] == {"num_frames": 2, "window_seconds": 2.0, "hop_seconds": 1.0}
        # A clip shorter than one window still gives one window (nothing dropped), resized to the model's input.
        short = classify(client, videos["small"]).json()
        assert len(short["persons"][0]["windows"]) == 1 and short["video"]["width"] == 96

        assert (
            "0.5"
            in assert_error(classify(client, videos["two_s"], window_seconds=5), 422, "invalid_parameters")["error"][
                "message"
            ]
        )  # the allowed range is named
        assert_error(classify(client, videos["two_s"], hop_seconds=0.01), 422, "invalid_parameters")
        assert_error(classify(client, videos["two_s"], smoothing="median"), 422, "invalid_parameters")
        assert_error(classify(client, videos["two_s"], bogus=1), 422, "invalid_parameters")
        assert_error(classify(client, videos["two_s"], model="missing"), 404, "unknown_model")


def test_bad_media_gives_typed_errors_and_the_server_keeps_serving(server, videos, tmp_path, upload_dir):
    with server.client() as client:
        garbage = tmp_path / "garbage.mp4"
        garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        message = assert_error(classify(client, garbage), 400, "undecodable")["error"]["message"]
        assert "s2d-upload" not in message and str(upload_dir) not in message  # no server paths
        truncated = tmp_path / "truncated.mp4"
        truncated.write_bytes(videos["two_s"].read_bytes()[:600])
        assert classify(client, truncated).status_code in (400, 422)
        assert_error(classify(client, make_audio_only(tmp_path / "audio.wav")), 415, "unsupported_media")
        text = client.post(
            "/v1/classify", params={"mode": "aligned"}, content=b"hello", headers={"content-type": "text/plain"}
        )
        assert_error(text, 415, "unsupported_media")
        empty = client.post("/v1/classify", files={"file": ("e.mp4", b"", "video/mp4")})
        assert_error(empty, 400, "bad_request")
        no_file = client.post("/v1/classify", files={"other": ("e.mp4", b"123", "video/mp4")})
        assert_error(no_file, 400, "bad_request")
        big = tmp_path / "big.mp4"
        big.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
        assert_error(classify(client, big), 413, "too_large")  # declared length over the limit

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(UPLOAD_LIMIT // 65536 + 2):
                yield b"\0" * 65536

        chunked = client.post("/v1/classify", content=chunks(), headers={"content-type": "video/mp4"})
        assert_error(chunked, 413, "too_large")
        wide = make_video(tmp_path / "wide.mp4", seconds=0.25, fps=8, size=(512, 704))
        assert "704x512" in assert_error(classify(client, wide), 413, "too_large")["error"]["message"]
        long = make_video(tmp_path / "long.mp4", seconds=21, fps=1, size=(64, 64))
        assert_error(classify(client, long), 413, "too_large")
        # Still serving, and every temp file is gone.
        assert classify(client, videos["small"]).status_code == 200
    assert list(upload_dir.iterdir()) == []


def _status_mib(pid: int, field: str) -> float:
    """A memory figure of a process from /proc/PID/status (VmRSS: now, VmHWM: the peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def test_image_bombs_are_refused_from_their_header_without_decoding(server, tmp_path):
    from PIL import Image

    bombs = []  # 12000x12000 (144 MP) in 0.1-1.7 MB: decoded, each would take 144-576 MB
    for ext in ("png", "gif", "jpg"):
        Image.new("L", (12000, 12000)).save(tmp_path / f"bomb.{ext}")
        bombs.append(tmp_path / f"bomb.{ext}")
    pid = server.process.pid
    idle = _status_mib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS

    def send(i: int) -> httpx.Response:
        with server.client() as c:
            return classify(c, bombs[i % len(bombs)])

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    peak, after = _status_mib(pid, "VmHWM"), _status_mib(pid, "VmRSS")
    print(f"8 image bombs at once: RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
    for response in responses:
        assert "12000x12000" in assert_error(response, 413, "too_large")["error"]["message"]
    assert peak - idle < 40, (idle, peak, after)


def test_sixteen_concurrent_uploads_are_batched_and_match_one_at_a_time(server, videos):
    clips = [videos[f"clip{i}"] for i in range(16)]
    with server.client() as client:
        alone = [classify(client, clip).json() for clip in clips]
        before = client.get("/metrics").text

    def send(clip: Path) -> httpx.Response:
        with server.client() as c:
            return classify(c, clip)

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(send, clips))
    with server.client() as client:
        after = client.get("/metrics").text
    assert all(r.status_code == 200 for r in together), [r.text for r in together if r.status_code != 200]
    for single, response in zip(alone, together, strict=True):
        body = response.json()
        assert [w["label"] for p in body["persons"] for w in p["windows"]] == [
            w["label"] for p in single["persons"] for w in p["windows"]
        ]
        np.testing.assert_allclose(window_probs(body), window_probs(single), atol=1e-5)
    labels = {"model": TEST_MODEL}
    calls = metric_value(after, "s2d_inference_batch_size_count", **labels) - metric_value(
        before, "s2d_inference_batch_size_count", **labels
    )
    clips_done = metric_value(after, "s2d_inference_batch_size_sum", **labels) - metric_value(
        before, "s2d_inference_batch_size_sum", **labels
    )
    singles = metric_value(after, "s2d_inference_batch_size_bucket", le="1.0", **labels) - metric_value(
        before, "s2d_inference_batch_size_bucket", le="1.0", **labels
    )
    print(f"16 concurrent clips: {calls:.0f} inference calls, {singles:.0f} of one clip")
    assert clips_done == 16 and calls < 16 and singles < calls, (calls, clips_done, singles)  # batches of > 1 clip


def test_metrics_openapi_cors_and_request_ids(server, videos):
    with server.client() as client:
        classify(client, videos["small"])
        text = client.get("/metrics").text
        assert metric_value(text, "s2d_http_requests_total", route="/v1/classify", status="200") >= 1
        assert metric_value(text, "s2d_errors_total", code="unauthorized") >= 0
        assert metric_value(text, "s2d_model_info", model=TEST_MODEL, provider="CPUExecutionProvider") == 1
        assert metric_value(text, "s2d_ready") == 1
        response = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        assert response.headers["x-request-id"] == "trace-42"
        spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/classify"]["post"]
    assert {"multipart/form-data", "video/mp4"} <= set(operation["requestBody"]["content"])
    assert {"200", "400", "413", "415", "422", "429", "503", "504"} <= set(operation["responses"])
    assert "example" in operation["responses"]["200"]["content"]["application/json"]
    preflight = httpx.options(
        f"{server.url}/v1/classify",
        headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://example.test"
    assert "Traceback" not in server.logs() or "unhandled error" in server.logs()


def test_asking_for_cuda_without_it_fails_at_start_up(store):
    env = {"S2D_MODEL_STORE": str(store), "S2D_PROVIDERS": "cuda,cpu", "PYTHONPATH": str(REPO), "PATH": "/usr/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "s2d.service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "CUDAExecutionProvider" in result.stderr and "not available" in result.stderr


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("S2D_MODEL_STORE", "{tmp}/empty", "the model store {tmp}/empty holds no model"),
        ("S2D_MODELS", '["no-such-model"]', "no model 'no-such-model' in the store"),
        ("S2D_VARIANT", "int4", "has no variant 'int4'"),
    ],
)
def test_a_configuration_start_up_failure_is_one_line_and_exit_3(store, tmp_path, setting, value, reason):
    (tmp_path / "empty").mkdir()
    env = {"S2D_MODEL_STORE": str(store), "PYTHONPATH": str(REPO), "PATH": "/usr/bin", "S2D_PORT": str(free_port())}
    env[setting] = value.format(tmp=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "s2d.service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output  # uvicorn's start-up failure
    errors = [json.loads(line)["message"] for line in output.splitlines() if '"level": "error"' in line]
    assert errors[0].startswith("cannot start: ") and reason.format(tmp=tmp_path) in errors[0], errors
    assert "Traceback" not in output, output


def test_settings_from_a_toml_file_and_the_environment(tmp_path, monkeypatch):
    from s2d.service.settings import load_settings

    path = tmp_path / "s2d.toml"
    path.write_text('max_batch = 3\nproviders = ["cpu"]\ncors_origins = ["http://a"]\n')
    monkeypatch.setenv("S2D_QUEUE_SIZE", "7")
    monkeypatch.setenv("S2D_MAX_BATCH", "5")  # the environment wins over the file
    settings = load_settings(path)
    assert (settings.max_batch, settings.queue_size, settings.providers) == (5, 7, ["CPUExecutionProvider"])
    assert settings.cors_origins == ["http://a"]
    monkeypatch.setenv("S2D_MAX_BATCH", "0")
    with pytest.raises(ValueError, match="max_batch"):
        load_settings()
    assert json.loads(json.dumps(load_settings(path, max_batch=2).model_dump(mode="json")))["max_batch"] == 2


def _two_faces_video(path: Path, n: int = 30, fps: float = 20.0) -> Path:
    """Two real faces (the astronaut and a mirrored, re-tinted copy) crossing a 640x360 frame."""
    from tests.faces_helpers import moving_faces, write_video

    return write_video(path, moving_faces(n, crossing=True), fps=fps)


def test_faces_mode_finds_tracks_and_classifies_each_person(server, tmp_path):
    video = _two_faces_video(tmp_path / "two.mp4")
    with server.client() as client:
        response = classify(client, video, mode="faces")
        assert response.status_code == 200, response.text
        body = response.json()
        # A decodable video with nobody in it is an answer, not an error.
        blank = make_video(tmp_path / "blank.mp4", seconds=0.5, fps=8, size=(240, 320))
        nobody = classify(client, blank, mode="faces")
        assert nobody.status_code == 200, nobody.text
    empty = nobody.json()
    assert empty["persons"] == [] and empty["notes"] == ["no face was found in 4 frames"]
    assert empty["video"]["faces_detected"] == 0 and empty["video"]["frames_decoded"] == 4
    assert body["mode"] == "faces" and body["video"]["width"] == 640 and body["video"]["faces_detected"] >= 50
    assert body["notes"] == []
    long_tracks = [p for p in body["persons"] if p["summary"]["num_windows"] >= 2]
    assert len(long_tracks) == 2, [(p["track_id"], p["summary"]["num_windows"]) for p in body["persons"]]
    for person in long_tracks:
        assert all(len(w["box"]) == 4 for w in person["windows"])
        assert [w["t_start"] for w in person["windows"]] == sorted(w["t_start"] for w in person["windows"])
    centres = [np.mean([(w["box"][0] + w["box"][2]) / 2 for w in p["windows"][:1]]) for p in long_tracks]
    assert abs(centres[0] - centres[1]) > 100  # two different people, not one track twice
    assert body["timings"]["faces"] > 0


def test_rest_smoothing_has_the_streams_hysteresis():
    """The same per-track smoother as live streams: EMA, then a label that changes only past the margin."""
    from s2d.service.analysis import build_persons
    from s2d.service.faces.windows import Window
    from s2d.service.schemas import ClassifyOptions

    classes = ["happy", "sad"]
    flicker = [np.array([0.6, 0.4]), np.array([0.45, 0.55]), np.array([0.6, 0.4]), np.array([0.45, 0.55])]
    windows = [
        (Window(0, float(i), i + 1.0, np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 4), np.float32), np.zeros(1)), p)
        for i, p in enumerate(flicker)
    ]

    def smoothed_labels(hysteresis: float) -> list[str]:
        options = ClassifyOptions(smoothing="ema", ema_alpha=1.0, hysteresis=hysteresis)  # EMA off: hysteresis alone
        (person,) = build_persons(classes, windows, options)
        return [w.smoothed.label for w in person.windows]

    assert smoothed_labels(0.0) == ["happy", "sad", "happy", "sad"]  # margin 0: the plain argmax
    assert smoothed_labels(0.2) == ["happy"] * 4  # sad never leads by more than 0.1
