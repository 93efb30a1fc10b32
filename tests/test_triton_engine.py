"""The Triton engine (S2D_ENGINE=triton) against a KServe v2 gRPC peer (tests/kserve_server.py): NOT a Triton
server, which cannot run here (it needs its container). The peer serves a repository written by
s2d.triton.write_triton_repository from a real tiny model store, running its `1/model.onnx` with ONNX Runtime; faults
are injected per model and per call, so every failure is forced, never waited for.

The store holds the tiny test model under two names: each has its own batcher here and its own model on the peer, so
a fault on one leaves the other's work in flight untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from s2d.card import load_card
from s2d.harness.server import REPO, free_port, running_server
from s2d.store import ModelStore
from s2d.triton import write_triton_repository
from tests.service_helpers import TEST_CLASSES, TEST_MODEL, build_store, make_video
from tests.stream_helpers import StreamClient, aligned_frames

pytest.importorskip("tritonclient.grpc", reason="the [triton] extra (tritonclient[grpc]) is not installed")
from s2d.service.errors import BusyError, DeadlineError, InferenceFailedError, InferenceUnavailableError
from s2d.service.inference import OnnxClassifier
from s2d.service.registry import ModelRegistry
from s2d.service.settings import Settings
from s2d.service.triton_engine import TritonClassifier, TritonStartupError
from tests.kserve_server import serving

OTHER = "tiny_other"
# The service's deadline for one call to the peer: a tiny model's batch takes a small fraction of it even on two busy
# cores, and a held call always outlasts it (the peer holds until the client gives up).
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    base = build_store(str(tmp_path_factory.getbasetemp() / "service-store"))  # shared with the other service tests
    root = tmp_path_factory.mktemp("triton-engine-store")
    for name in (TEST_MODEL, OTHER):
        folder = Path(shutil.copytree(base / TEST_MODEL, root / name))
        load_card(folder).model_copy(update={"name": name}).save(folder / "card.json")
    return root


@pytest.fixture(scope="module")
def repository(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton-repository")
    write_triton_repository(store, out)
    return out


@pytest.fixture(scope="module")
def peer(repository):
    with serving(repository) as peer:
        yield peer


@pytest.fixture(scope="module")
def triton_service(store, peer):
    settings = {"engine": "triton", "triton_url": peer.url, "triton_timeout_s": TIMEOUT_S}
    with running_server(store, max_batch=4, max_wait_ms=20, **settings) as server:
        yield server


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("triton-videos")
    return {"two_s": make_video(d / "two_s.mp4", seconds=2.0, seed=1), "one_s": make_video(d / "one_s.mp4", seed=2)}


def classify(client: httpx.Client, video: Path, **params) -> httpx.Response:
    files = {"file": (video.name, video.read_bytes(), "video/mp4")}
    return client.post("/v1/classify", params={"mode": "aligned", "model": TEST_MODEL, **params}, files=files)


def windows(body: dict) -> list[tuple[int, float, float, str, list[float]]]:
    return [(p["track_id"], w["t_start"], w["t_end"], w["label"], [w["probs"][c] for c in TEST_CLASSES])
            for p in body["persons"] for w in p["windows"]]  # fmt: skip


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------------------------------
# The service over HTTP, its inference on the peer


def test_classify_through_triton_matches_onnxruntime(store, peer, triton_service, videos):
    calls = peer.calls[TEST_MODEL]
    with triton_service.client() as client:
        remote = classify(client, videos["two_s"])
    assert remote.status_code == 200, remote.text
    assert peer.calls[TEST_MODEL] > calls  # its windows were classified by the peer, not in the service process
    local = {"engine": "onnxruntime"}  # the in-process reference, not whichever engine `auto` finds faster here
    with running_server(store, max_batch=4, max_wait_ms=20, **local) as local_service, local_service.client() as client:
        local = classify(client, videos["two_s"])
        engines = {m["engine"]["name"] for m in client.get("/v1/models").json()["models"]}
    assert engines == {"onnxruntime"}
    assert local.status_code == 200, local.text
    remote, local = remote.json(), local.json()
    assert remote["model"]["provider"] == "triton" and local["model"]["provider"] == "CPUExecutionProvider"
    assert remote["model"]["variant"] == local["model"]["variant"] == "fp32"
    got, want = windows(remote), windows(local)
    assert len(got) == len(want) > 1
    for (*meta, probs), (*meta_want, probs_want) in zip(got, want, strict=True):
        assert meta == meta_want
        np.testing.assert_allclose(probs, probs_want, atol=1e-5)


def test_models_and_the_log_name_the_triton_engine(triton_service, peer):
    with triton_service.client() as client:
        body = client.get("/v1/models").json()
    assert sorted(m["name"] for m in body["models"]) == sorted([TEST_MODEL, OTHER])
    for model in body["models"]:
        assert model["engine"] == {
            "name": "triton", "url": peer.url, "model": model["name"], "version": None, "max_batch_size": 8,
            "instances": [{"kind": "KIND_CPU", "count": 1}], "timeout_s": TIMEOUT_S, "max_in_flight": 2,
        }  # fmt: skip
        assert model["provider"] == "triton" and model["variant"] == "fp32"
        assert model["variant_choice"]["how"] == "triton" and model["variant_choice"]["seconds_per_clip"] == {}
    messages = [r.get("message", "") for r in triton_service.records()]
    assert any(f"the Triton server at {peer.url}" in m for m in messages), messages
    assert any(m.startswith(f"loaded model {TEST_MODEL} on triton from {peer.url}") for m in messages), messages


def test_inference_faults_answer_typed_errors_and_the_model_goes_on(triton_service, peer, videos):
    faults = [("unavailable", 503, "inference_unavailable"), ("queue_full", 429, "busy"),
              ("resource_exhausted", 429, "busy"), ("queue_timeout", 504, "timeout"),
              ("internal", 502, "inference_failed")]  # fmt: skip
    with triton_service.client() as client:
        for fault, status, code in faults:
            peer.inject(TEST_MODEL, fault)
            response = classify(client, videos["one_s"])
            body = assert_error(response, status, code)
            assert "127.0.0.1" not in body["error"]["message"]  # the inference server's address stays in the log
            if status in (429, 503):
                assert int(response.headers["retry-after"]) >= 1
                assert body["error"]["details"]["retry_after_s"] == int(response.headers["retry-after"])
        assert classify(client, videos["one_s"]).status_code == 200  # the batcher's worker goes on
        assert client.get("/readyz").status_code == 200


def test_readyz_follows_the_inference_server_after_start_up(triton_service, peer, videos):
    """A model the server stops serving, or a server that stops being ready, makes /readyz 503 (a load balancer
    moves on) until it is back; the other model's work goes on meanwhile, and the log says what changed, once."""
    with triton_service.client() as client:
        assert client.get("/readyz").status_code == 200
        peer.model_unready.add(OTHER)
        try:
            for _ in range(2):
                response = client.get("/readyz")
                message = assert_error(response, 503, "inference_unavailable")["error"]["message"]
                assert f"model {OTHER!r}: the inference server does not have the model ready" in message
                assert TEST_MODEL not in message and "127.0.0.1" not in message
                assert int(response.headers["retry-after"]) >= 1
            assert classify(client, videos["one_s"], model=TEST_MODEL).status_code == 200
        finally:
            peer.model_unready.discard(OTHER)
        assert client.get("/readyz").status_code == 200
        peer.ready = False
        try:
            message = assert_error(client.get("/readyz"), 503, "inference_unavailable")["error"]["message"]
            assert f"model {TEST_MODEL!r}: the inference server is not ready" in message and OTHER in message
        finally:
            peer.ready = True
        assert client.get("/readyz").status_code == 200
    messages = [r.get("message", "") for r in triton_service.records()]
    gone = [m for m in messages if m.startswith(f"model {OTHER} is not servable now: the inference server does not")]
    assert len(gone) == 1 and peer.url in gone[0], messages  # once, with the address, though probed twice
    assert any(m.startswith(f"model {OTHER} is servable again") for m in messages), messages


def test_a_call_past_its_deadline_fails_its_own_requests_only(triton_service, peer, videos):
    """A call held by the peer past the service's deadline: that request gets 504; one for the other model, sent
    while it is held, and one for the same model, queued behind it, are answered."""
    peer.held.clear()
    peer.inject(TEST_MODEL, "hold")
    with triton_service.client() as client, ThreadPoolExecutor(2) as pool:
        held = pool.submit(classify, client, videos["one_s"], model=TEST_MODEL)
        assert peer.held.wait(60), "the held call never reached the peer"
        queued = pool.submit(classify, client, videos["one_s"], model=TEST_MODEL)
        other = classify(client, videos["one_s"], model=OTHER)
        assert other.status_code == 200, other.text
        body = assert_error(held.result(60), 504, "timeout")
        assert body["error"]["details"] == {"triton_timeout_s": TIMEOUT_S}
        assert queued.result(60).status_code == 200
        assert classify(client, videos["one_s"], model=TEST_MODEL).status_code == 200


def test_calls_of_one_model_overlap_on_the_server(store, peer, videos):
    """Two calls of one model in flight at once (max_in_flight: twice the config's one instance): while the peer
    holds one, the next request's batch reaches the server and is answered. With one call at a time it would wait
    behind the held one, which only the test releases (the deadline is far off), and this would time out."""
    settings = {"engine": "triton", "triton_url": peer.url, "triton_timeout_s": 120}
    with running_server(store, max_batch=4, max_wait_ms=20, **settings) as server:
        peer.held.clear()
        peer.release.clear()
        peer.inject(TEST_MODEL, "hold")
        with server.client() as client, ThreadPoolExecutor(2) as pool:
            try:
                held = pool.submit(classify, client, videos["one_s"], model=TEST_MODEL)
                assert peer.held.wait(60), "the held call never reached the peer"
                second = pool.submit(classify, client, videos["one_s"], model=TEST_MODEL).result(60)
                assert second.status_code == 200, second.text
                assert not held.done()  # the first call is still held on the server
            finally:
                peer.release.set()
            assert held.result(60).status_code == 200
            assert client.get("/v1/models").json()["models"][0]["engine"]["max_in_flight"] == 2


def test_a_live_stream_drops_the_refused_window_and_goes_on(triton_service, peer):
    stream = StreamClient(triton_service.url, None, model=TEST_MODEL, mode="aligned", fps=10, tracks_fps=0)
    try:
        stream.start()
        peer.inject(TEST_MODEL, "unavailable")  # the stream's first window is the model's next call
        for seq, frame in enumerate(aligned_frames(12)):
            stream.send_frame(frame, 5000 + seq * 100, seq)
            time.sleep(0.1)  # real time, as a camera sends (the stream's rate limits stay out of the way)
        end = stream.finish()
        assert stream.wait_closed()[0] == 1000
    finally:
        stream.close()
    assert end["windows"]["dropped"]["failed"] == 1, end
    assert stream.of("result"), end  # the windows after it were classified


def test_a_live_window_is_given_up_on_the_server_at_its_deadline(store, peer):
    """A live window's deadline (S2D_STREAM_WINDOW_DEADLINE_S) bounds its Triton call, far inside the engine's own
    timeout: the held call is abandoned by the service (the peer sees its client give up), the window is dropped
    as `deadline`, and the stream goes on. Without it the call would be held until the test releases it."""
    settings = {"engine": "triton", "triton_url": peer.url, "triton_timeout_s": 120, "stream_window_deadline_s": 2.0}
    with running_server(store, max_batch=4, max_wait_ms=20, **settings) as server:
        peer.held.clear()
        peer.release.clear()
        abandoned = peer.abandoned[TEST_MODEL]
        peer.inject(TEST_MODEL, "hold")
        stream = StreamClient(server.url, None, model=TEST_MODEL, mode="aligned", fps=10, tracks_fps=0)
        try:
            stream.start()
            for seq, frame in enumerate(aligned_frames(12)):
                stream.send_frame(frame, 5000 + seq * 100, seq)
                time.sleep(0.1)
            assert peer.held.wait(60), "no window reached the peer"
            given_up = time.monotonic() + 60  # far past the window's deadline, far before the engine's timeout
            while peer.abandoned[TEST_MODEL] == abandoned:  # the service gives up on the held call at the deadline
                assert time.monotonic() < given_up, "the held call was not given up at the window's deadline"
                time.sleep(0.05)
            end = stream.finish()
        finally:
            peer.release.set()
            stream.close()
    assert peer.abandoned[TEST_MODEL] == abandoned + 1
    assert end["windows"]["dropped"]["deadline"] >= 1, end


def test_an_unreachable_triton_stops_the_service_at_start_up(store):
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    command = [sys.executable, "-m", "s2d", "serve", "--store", str(store), "--port", str(free_port()),
               "--engine", "triton", "--triton-url", url]  # fmt: skip
    env = {**os.environ, "S2D_TRITON_READY_TIMEOUT_S": "0", "S2D_MODELS": f'["{TEST_MODEL}"]'}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    logs = result.stdout + result.stderr
    assert result.returncode == 3, logs  # uvicorn's start-up failure
    assert f"cannot start: Triton at {url}, model '{TEST_MODEL}'" in logs, logs
    assert "the server cannot be reached" in logs and "Application startup failed" in logs
    assert "Traceback" not in logs, logs  # the operator's problem in one line


# ---------------------------------------------------------------------------------------------------------------------
# Start-up checks, in this process


def load(store: Path, url: str, **settings) -> ModelRegistry:
    defaults = {"triton_ready_timeout_s": 0, "warmup": False, "models": [TEST_MODEL]}
    registry = ModelRegistry(Settings(model_store=store, engine="triton", triton_url=url, **(defaults | settings)))
    registry.load()
    return registry


def edited_repository(repository: Path, out: Path, *edits: tuple[str, str]) -> Path:
    """A copy of the repository whose config.pbtxt of the test model has each (old, new) replaced once."""
    shutil.copytree(repository, out)
    config = out / TEST_MODEL / "config.pbtxt"
    text = config.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    config.write_text(text)
    return out


def test_start_up_fails_clearly_on_a_missing_or_mismatched_model(store, repository, tmp_path):
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(TritonStartupError, match=rf"Triton at {url}, model '{TEST_MODEL}'.*cannot be reached"):
        load(store, url)
    only_one = tmp_path / "one-model"
    write_triton_repository(store, only_one, models=[TEST_MODEL])
    with serving(only_one) as peer:
        with pytest.raises(
            TritonStartupError, match=rf"model '{OTHER}'.*not ready; the server's models: tiny_test 1 READY"
        ):
            load(store, peer.url, models=[OTHER])
        with pytest.raises(
            TritonStartupError, match=r"batches at most 8 clips \(max_batch_size\), S2D_MAX_BATCH is 16"
        ):
            load(store, peer.url, max_batch=16)
        with pytest.raises(TritonStartupError, match="serves variant 'fp32', but S2D_VARIANT pins 'int8'"):
            load(store, peer.url, variant="int8")
        peer.model_unready.add(TEST_MODEL)
        with pytest.raises(TritonStartupError, match="tiny_test 1 UNAVAILABLE"):
            load(store, peer.url)
    wrong = edited_repository(
        repository, tmp_path / "wrong",
        ("data_type: TYPE_UINT8", "data_type: TYPE_FP32"), ("dims: [ 4 ]", "dims: [ 5 ]"),
        ('string_value: "0.0.1-test"', 'string_value: "0.0.2"'),
    )  # fmt: skip
    with serving(wrong) as peer, pytest.raises(TritonStartupError) as failed:
        load(store, peer.url)
    message = str(failed.value)
    assert message.startswith(f"Triton at {peer.url}, model '{TEST_MODEL}'") and "does not match" in message
    assert "input 'frames' is FP32 [-1, 2, 224, 224, 3], the card needs UINT8 [-1, 2, 224, 224, 3]" in message
    assert "output 'logits' is FP32 [-1, 5], the card needs FP32 [-1, 4]" in message
    assert "it serves version '0.0.2', the store's card is '0.0.1-test'" in message


def test_start_up_waits_for_the_server_to_be_ready(store, repository, tmp_path):
    cards_only = tmp_path / "cards"  # the service reads the cards; the graphs are Triton's
    (cards_only / TEST_MODEL).mkdir(parents=True)
    shutil.copy(store / TEST_MODEL / "card.json", cards_only / TEST_MODEL)
    with serving(repository) as peer:
        peer.ready = False
        with pytest.raises(TritonStartupError, match="the server is not ready"):
            load(cards_only, peer.url)
        threading.Timer(0.5, lambda: setattr(peer, "ready", True)).start()
        started = time.monotonic()
        registry = load(cards_only, peer.url, triton_ready_timeout_s=60)
        assert time.monotonic() - started >= 0.5
        assert registry.models[TEST_MODEL].classifier.variant == "fp32"
        registry.models[TEST_MODEL].classifier.close()


def test_settings_need_a_url_without_a_scheme_and_the_engine_its_extra(store, monkeypatch):
    with pytest.raises(ValueError, match="needs triton_url"):
        Settings(engine="triton")
    with pytest.raises(ValueError, match="host:port without a scheme"):
        Settings(engine="triton", triton_url="grpc://localhost:8001")
    assert Settings().engine == "auto"
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if the [triton] extra were not installed
    with pytest.raises(TritonStartupError, match=r"pip install 's2d\[triton\]'"):
        load(store, "127.0.0.1:1")


# ---------------------------------------------------------------------------------------------------------------------
# The classifier on its own: the same numbers as ONNX Runtime, and every gRPC failure typed


def test_the_classifier_matches_onnxruntime_and_types_every_failure(store, repository, caplog):
    model = ModelStore(store).get(TEST_MODEL)
    local = OnnxClassifier(model, "fp32", ["CPUExecutionProvider"])
    clips = np.random.default_rng(0).integers(0, 256, (3, *local.frame_shape), dtype=np.uint8)
    with serving(repository) as peer:
        remote = TritonClassifier.connect(model, peer.url, max_batch=8)
        impatient = TritonClassifier.connect(model, peer.url, timeout_s=0.2, max_batch=8)
        for batch in (clips[:1], clips):
            got, want = remote.run(batch), local.run(batch)
            np.testing.assert_allclose(got.logits, want.logits, atol=1e-5)
            np.testing.assert_allclose(got.probs, want.probs, atol=1e-6)
        calls = peer.calls[TEST_MODEL]
        with pytest.raises(ValueError, match=r"expected uint8 \[B, 2, 224, 224, 3\]"):  # the check both engines share
            remote.run(clips[:, :1])
        assert peer.calls[TEST_MODEL] == calls
        with caplog.at_level(logging.WARNING, "s2d.service.triton_engine"), pytest.raises(InferenceFailedError):
            remote.run(np.concatenate([clips] * 3))  # the peer checks the batch size as Triton does
        assert "INVALID_ARGUMENT" in caplog.text and "exceeds max_batch_size 8" in caplog.text
        for fault, error in [("unavailable", InferenceUnavailableError), ("queue_full", BusyError),
                             ("resource_exhausted", BusyError), ("queue_timeout", DeadlineError),
                             ("internal", InferenceFailedError)]:  # fmt: skip
            peer.inject(TEST_MODEL, fault)
            with pytest.raises(error):
                remote.run(clips)
        peer.inject(TEST_MODEL, "hold")
        with pytest.raises(DeadlineError, match=r"did not answer within 0\.2 s"):
            impatient.run(clips)
        assert remote.run(clips).probs.shape == (3, len(TEST_CLASSES))
    with pytest.raises(InferenceUnavailableError):  # the peer is gone: a real UNAVAILABLE, not an injected one
        remote.run(clips)
    remote.close()
    impatient.close()
