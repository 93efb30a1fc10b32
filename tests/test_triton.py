"""s2d.triton: a Triton model repository written from a real (tiny) model store, read back with Triton's own
ModelConfig protobuf (`tritonclient.grpc.model_config_pb2`, parsed by `google.protobuf.text_format`), and the copied
graph run with ONNX Runtime against what the config declares. No Triton server here: that needs its container.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from s2d.service.settings import Settings
from s2d.store import ModelStore
from s2d.triton import (
    DEFAULT_MAX_BATCH,
    MAX_QUEUE_DELAY_US,
    MAX_QUEUE_SIZE,
    QUEUE_TIMEOUT_US,
    write_triton_repository,
)
from tests.service_helpers import TEST_CLASSES, TEST_FRAMES, TEST_MODEL, build_store

pb = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="tritonclient is not installed: the dev extra needs 'tritonclient[grpc]>=2.40' (Triton's ModelConfig)",
)
from google.protobuf import text_format  # noqa: E402 - protobuf comes with tritonclient[grpc]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(str(tmp_path_factory.getbasetemp() / "service-store"))  # shared with the other service tests


@pytest.fixture(scope="module")
def gpu_store(store, tmp_path_factory) -> Path:
    """The tiny test model with a real fp16 variant beside fp32: converted from the fp32 graph by the export's own
    converter, its agreement with fp32 measured by the export's helpers (no second, slow torch export)."""
    from s2d.card import VariantSpec, load_card
    from s2d.files import sha256_of
    from s2d.training import export

    folder = Path(shutil.copytree(store / TEST_MODEL, tmp_path_factory.mktemp("triton-fp16-store") / TEST_MODEL))
    fp16 = export.convert_fp16(folder / "model.onnx", folder / export.VARIANT_FILES["fp16"])
    clips = export.synthetic_clips(8, TEST_FRAMES, seed=1)
    figures = export.agreement(*(export.run_onnx(export.onnx_session(p), clips) for p in (folder / "model.onnx", fp16)))
    spec = VariantSpec(file=fp16.name, precision="fp16", providers=export.VARIANT_PROVIDERS["fp16"],
                       size_bytes=fp16.stat().st_size, sha256=sha256_of(fp16), **figures)  # fmt: skip
    card = load_card(folder)
    card.model_copy(update={"variants": {**card.variants, "fp16": spec}}).save(folder / "card.json")
    return folder.parent


def parse(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())


def test_cpu_repository_is_a_valid_triton_model_config(store, tmp_path):
    (folder,) = write_triton_repository(store, tmp_path)
    assert folder == tmp_path / TEST_MODEL
    config = parse(folder)
    assert (config.name, config.platform, config.backend) == (TEST_MODEL, "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == DEFAULT_MAX_BATCH
    (frames,) = config.input
    assert (frames.name, frames.data_type, list(frames.dims)) == ("frames", pb.TYPE_UINT8, [TEST_FRAMES, 224, 224, 3])
    outputs = {o.name: o for o in config.output}
    assert set(outputs) == {"logits", "probs"}
    for output in outputs.values():
        assert output.data_type == pb.TYPE_FP32 and list(output.dims) == [len(TEST_CLASSES)]
    assert outputs["probs"].label_filename == "labels.txt" and not outputs["logits"].label_filename
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [2, 4, 8]
    assert batching.max_queue_delay_microseconds == MAX_QUEUE_DELAY_US
    policy = batching.default_queue_policy
    assert policy.timeout_action == pb.ModelQueuePolicy.REJECT and policy.allow_timeout_override
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (MAX_QUEUE_SIZE, QUEUE_TIMEOUT_US)
    (group,) = config.instance_group
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_CPU, 1)
    assert config.parameters["s2d_variant"].string_value == "fp32"
    assert config.parameters["s2d_version"].string_value == "0.0.1-test"
    assert (folder / "labels.txt").read_text().splitlines() == TEST_CLASSES
    fp32 = ModelStore(store).get(TEST_MODEL).variant_path("fp32")
    assert (folder / "1" / "model.onnx").read_bytes() == fp32.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [TEST_MODEL]  # no staging folder left behind


def test_the_copied_graph_is_what_the_config_declares(store, tmp_path):
    import onnxruntime as ort

    (folder,) = write_triton_repository(store, tmp_path)
    config = parse(folder)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    (frames,) = config.input
    assert graph_input.name == frames.name and graph_input.type == "tensor(uint8)"
    assert graph_input.shape[1:] == list(frames.dims)  # the batch axis stays dynamic
    batch = np.random.default_rng(0).integers(0, 256, (3, *frames.dims), dtype=np.uint8)
    results = dict(zip([o.name for o in session.get_outputs()], session.run(None, {frames.name: batch}), strict=True))
    for output in config.output:
        assert results[output.name].shape == (3, *output.dims) and results[output.name].dtype == np.float32
    np.testing.assert_allclose(results["probs"].sum(axis=1), 1.0, rtol=1e-5)


def test_gpu_kind_takes_the_fp16_variant(gpu_store, tmp_path):
    (folder,) = write_triton_repository(gpu_store, tmp_path, kind="gpu", max_batch_size=16, instances=2)
    config = parse(folder)
    (group,) = config.instance_group
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_GPU, 2)
    assert config.parameters["s2d_precision"].string_value == "fp16"
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    fp16 = ModelStore(gpu_store).get(TEST_MODEL).variant_path("fp16")
    assert (folder / "1" / "model.onnx").read_bytes() == fp16.read_bytes()
    # The same store on CPU serves fp32 (fp16 is a CUDA variant).
    (cpu,) = write_triton_repository(gpu_store, tmp_path / "cpu")
    assert parse(cpu).parameters["s2d_precision"].string_value == "fp32"


def test_a_rewrite_replaces_the_model_and_bad_requests_are_refused(store, tmp_path):
    write_triton_repository(store, tmp_path, max_batch_size=4)
    (folder,) = write_triton_repository(store, tmp_path, models=[TEST_MODEL], max_batch_size=2)
    assert parse(folder).max_batch_size == 2 and sorted(p.name for p in tmp_path.iterdir()) == [TEST_MODEL]
    with pytest.raises(ValueError, match="backend"):
        write_triton_repository(store, tmp_path, backend="tensorrt")
    with pytest.raises(ValueError, match="kind"):
        write_triton_repository(store, tmp_path, kind="tpu")
    with pytest.raises(KeyError, match="no model 'nope'"):
        write_triton_repository(store, tmp_path, models=["nope"])


def test_batching_and_queue_follow_the_service_defaults():
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert defaults["max_batch"] == DEFAULT_MAX_BATCH
    assert defaults["max_wait_ms"] * 1000 == MAX_QUEUE_DELAY_US
    assert defaults["queue_size"] == MAX_QUEUE_SIZE
    assert defaults["request_timeout_s"] * 1_000_000 == QUEUE_TIMEOUT_US


def test_s2d_models_triton_writes_the_repository(store, tmp_path):
    import subprocess
    import sys

    from s2d.harness.server import REPO

    result = subprocess.run(
        [sys.executable, "-m", "s2d", "models", "triton", str(tmp_path / "repo"), "--store", str(store)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = parse(tmp_path / "repo" / TEST_MODEL)
    assert config.name == TEST_MODEL and config.max_batch_size == DEFAULT_MAX_BATCH
    assert f"repo/{TEST_MODEL}" in result.stdout
