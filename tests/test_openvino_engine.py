"""The OpenVINO engine (issue 28): the store's fp32 ONNX file compiled by OpenVINO for this CPU gives ONNX Runtime's
probabilities (fp32: to float rounding; bf16: within its rounding), at the precision the CPU does best, from a
compiled-model cache a second start loads instead of compiling; and the service serves it. Real OpenVINO, real ONNX
Runtime, the tiny test model; OpenVINO's CPU plugin runs on any x86-64 CPU, bf16 only where the CPU has a bf16 unit
(those tests say so where it has none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2d.harness.server import REPO, running_server
from s2d.machine import isa_summary
from s2d.service.inference import OnnxClassifier
from s2d.service.openvino_engine import (
    AMX_BF16,
    BF16_FLAGS,
    OpenVinoClassifier,
    OpenVinoUnavailableError,
    best_precision,
    native_bf16,
    warmup_precisions,
)
from s2d.store import ModelStore
from tests.service_helpers import TEST_CLASSES, TEST_MODEL, make_video

# Largest |dprob| allowed against ONNX Runtime fp32 on the tiny model: fp32 differs by float rounding and operator
# order only; bf16 rounds every matmul input to 8 significant bits.
FP32_PROB_TOLERANCE = 1e-5
BF16_PROB_TOLERANCE = 2e-2
TOLERANCE = {"fp32": FP32_PROB_TOLERANCE, "bf16": BF16_PROB_TOLERANCE}
NO_BF16 = f"this CPU has no bf16 unit ({' or '.join(BF16_FLAGS)} not in: {isa_summary()})"
HAS_BF16 = "this CPU has a bf16 unit: bf16 is not refused here"


@pytest.fixture(scope="module")
def stored(store):
    return ModelStore(store).get(TEST_MODEL)


@pytest.fixture(scope="module")
def clips(stored) -> np.ndarray:
    card = stored.card
    shape = (5, card.num_frames, card.input.height, card.input.width, card.input.channels)
    return np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(stored, clips):
    return OnnxClassifier(stored, "fp32", ["CPUExecutionProvider"], intra_op_threads=2).run(clips)


def _precisions() -> list:
    return [
        pytest.param("fp32"),
        pytest.param("bf16", marks=pytest.mark.skipif(not native_bf16(), reason=f"bf16 not run: {NO_BF16}")),
    ]


@pytest.mark.parametrize("precision", _precisions())
def test_openvino_gives_onnxruntime_fp32_probabilities(stored, clips, reference, precision, tmp_path):
    engine = OpenVinoClassifier(stored, precision, intra_op_threads=2, cache_dir=tmp_path)
    out = engine.run(clips)
    assert out.probs.dtype == np.float32 and out.probs.shape == (len(clips), len(TEST_CLASSES))
    assert np.abs(out.probs - reference.probs).max() <= TOLERANCE[precision]
    np.testing.assert_allclose(out.probs.sum(-1), 1.0, atol=1e-5)
    single = np.concatenate([engine.run(clip[None]).probs for clip in clips])  # batch 1 as the batcher may call
    assert np.abs(single - reference.probs).max() <= TOLERANCE[precision]
    assert engine.precision == precision and engine.label == f"openvino/{precision}"
    assert engine.engine()["precision"] == precision and engine.engine()["threads"] == 2
    # compiled for one clip per call (static shapes: faster kernels), so a batch of several ran clip by clip
    assert engine.compiled.inputs[0].get_partial_shape().is_static and engine.compiled.inputs[0].get_shape()[0] == 1
    assert len(clips) > 1 and engine.engine()["clips_per_call"] == 1
    # threads not pinned to cores: processes side by side would otherwise pin theirs to the same ones
    assert engine.compiled.get_property("ENABLE_CPU_PINNING") is False
    with pytest.raises(ValueError, match="expected uint8"):  # the shared shape check
        engine.run(clips[:, :1])


def test_the_precision_is_the_one_this_cpu_does_best():
    precision, why = best_precision()
    flags = set(isa_summary().split())
    if flags & set(BF16_FLAGS):  # AMX or AVX-512 BF16 in /proc/cpuinfo: OpenVINO reports native bf16 too
        assert native_bf16() and any(f in why for f in flags & set(BF16_FLAGS))
    assert precision == ("bf16" if native_bf16() and AMX_BF16 in flags else "fp32")
    assert why.startswith(precision) and (native_bf16() or "no bf16" in why)
    assert (precision, why) == next(iter(warmup_precisions().items()))


def test_the_warm_up_times_both_precisions_where_bf16_has_no_amx_behind_it():
    amx = "avx2 fma avx512f avx512_vnni avx512_bf16 amx_int8 amx_bf16"
    zen4 = "avx2 fma avx512f avx512_vnni avx512_bf16"
    assert list(warmup_precisions(amx, native=True)) == ["bf16"]
    assert list(warmup_precisions(zen4, native=True)) == ["fp32", "bf16"]  # fp32 first: served when untimed
    assert "without AMX" in warmup_precisions(zen4, native=True)["bf16"]
    for isa in ("avx2 fma", "avx2 fma avx512f avx512_vnni"):
        assert list(warmup_precisions(isa, native=False)) == ["fp32"]
        assert "no bf16 unit" in warmup_precisions(isa, native=False)["fp32"]


@pytest.mark.skipif(native_bf16(), reason=HAS_BF16)
def test_bf16_pinned_without_a_bf16_unit_is_refused_clearly(stored, tmp_path):
    with pytest.raises(OpenVinoUnavailableError, match="no bf16 unit"):
        OpenVinoClassifier(stored, "bf16", cache_dir=tmp_path)


_SECOND_START = """
import json, sys
from s2d.service.openvino_engine import OpenVinoClassifier
from s2d.store import ModelStore
engine = OpenVinoClassifier(ModelStore(sys.argv[1]).get(sys.argv[2]), "auto", 2, sys.argv[3])
print(json.dumps(engine.engine()))
"""


def _blobs(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.suffix == ".blob"}


def test_a_second_start_loads_the_compiled_model_from_the_cache(stored, store, clips, tmp_path):
    cache = tmp_path / "openvino-cache"
    first = OpenVinoClassifier(stored, "auto", intra_op_threads=2, cache_dir=cache)
    assert not first.loaded_from_cache and first.engine()["cache_dir"] == str(cache)
    blobs = _blobs(cache)
    assert blobs, f"no compiled blob in {cache}: {list(cache.iterdir())}"
    # A new process, as a restart is: OpenVINO reports it loaded the model from the cache, which it left unchanged.
    second = subprocess.run(
        [sys.executable, "-c", _SECOND_START, str(store), TEST_MODEL, str(cache)],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    engine = json.loads(second.stdout.strip().splitlines()[-1])
    assert engine["loaded_from_cache"] is True and engine["precision"] == first.precision
    assert _blobs(cache) == blobs
    again = OpenVinoClassifier(stored, "auto", intra_op_threads=2, cache_dir=cache)  # and it answers the same
    assert again.loaded_from_cache
    np.testing.assert_array_equal(again.run(clips).probs, first.run(clips).probs)


def test_an_unwritable_cache_folder_costs_a_compile_not_the_engine(stored, clips, reference, tmp_path, caplog):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    engine = OpenVinoClassifier(stored, "fp32", intra_op_threads=2, cache_dir=not_a_folder / "cache")
    assert engine.cache_dir is None and engine.engine()["cache_dir"] is None and not engine.loaded_from_cache
    assert "not writable" in caplog.text
    assert np.abs(engine.run(clips).probs - reference.probs).max() <= FP32_PROB_TOLERANCE


def test_the_service_serves_on_openvino_and_says_so(store, tmp_path):
    """A real server with S2D_ENGINE=openvino answers as one on ONNX Runtime does (within the precision's tolerance),
    and /v1/models, the responses and the log name the engine, its precision and why."""
    video = make_video(tmp_path / "clip.mp4", seconds=2.0, fps=8, seed=1)
    answers = {}
    for engine in ("onnxruntime", "openvino"):
        settings = {"engine": engine, "max_batch": 4, "openvino_cache_dir": tmp_path / "cache"}
        with running_server(store, **settings) as server, server.client() as client:
            models = client.get("/v1/models").json()["models"]
            response = client.post(
                "/v1/classify", params={"mode": "aligned"}, files={"file": ("clip.mp4", video.read_bytes())}
            )
            assert response.status_code == 200, response.text
            answers[engine] = (models[0], response.json(), server.logs())
    (model, body, logs), (ort_model, ort_body, _) = answers["openvino"], answers["onnxruntime"]
    precision = best_precision()[0]
    assert model["engine"]["name"] == "openvino" and model["precision"] == precision
    assert ort_model["engine"]["name"] == "onnxruntime" and ort_model["variant_choice"]["engine"] == "onnxruntime"
    assert model["variant_choice"]["how"] == "pinned" and "S2D_ENGINE=openvino" in model["variant_choice"]["why"]
    assert body["model"]["provider"] == "openvino-cpu" and ort_body["model"]["provider"] == "CPUExecutionProvider"
    assert f"openvino/{precision} ({precision}), pinned" in logs

    def probs(answer: dict) -> np.ndarray:
        return np.array([[w["probs"][c] for c in TEST_CLASSES] for p in answer["persons"] for w in p["windows"]])

    assert probs(body).shape == probs(ort_body).shape
    assert np.abs(probs(body) - probs(ort_body)).max() <= TOLERANCE[precision]
