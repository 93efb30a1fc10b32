"""ONNX export: uint8 face clips in, the same logits as PyTorch out, any batch size; the card describes it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models import create_model
from models.checkpoint import save_checkpoint
from tests.helpers import randomize_
from training.export import INPUT_NAME, UInt8ClipClassifier, export_onnx, onnx_parity


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=2)).eval()
    out = tmp_path_factory.mktemp("export")
    return model, export_onnx(model, out / "model.onnx")


def test_onnx_runtime_matches_pytorch_fp32(tiny):
    model, path = tiny
    parity = onnx_parity(model, path, batch=2)
    assert parity["max_abs_logit_diff"] <= 1e-4
    assert parity["top1_agreement"] == 1.0


def test_batch_axis_is_dynamic_and_outputs_are_named(tiny):
    model, path = tiny
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probs", "features"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for batch in (1, 3):
        frames = np.random.default_rng(batch).integers(0, 256, (batch, 2, 224, 224, 3), dtype=np.uint8)
        logits, probs, features = session.run(None, {INPUT_NAME: frames})
        assert logits.shape == (batch, 7) and features.shape == (batch, 192)
        np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
        with torch.no_grad():
            expected = UInt8ClipClassifier(model)(torch.from_numpy(frames))[0].numpy()
        assert np.abs(logits - expected).max() <= 1e-4


def test_the_uint8_wrapper_normalises_like_training():
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=1)).eval()
    frames = torch.randint(0, 256, (1, 2, 224, 224, 3), dtype=torch.uint8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    clip = ((frames.float() / 255 - mean) / std).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(UInt8ClipClassifier(model)(frames)[0], model(clip)[0], atol=1e-5, rtol=1e-5)


def test_s2d_export_writes_model_and_card(tmp_path):
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=1))
    checkpoint = save_checkpoint(model, tmp_path / "best.safetensors", {"classes": list("abcdefg")})
    result = subprocess.run(
        [sys.executable, "-m", "s2d", "export", str(checkpoint), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["classes"] == list("abcdefg") and card["num_frames"] == 2
    assert card["input"]["layout"] == "BTHWC" and card["input"]["dtype"] == "uint8"
    assert card["source_checkpoint"]["sha256"] and card["parity"]["onnxruntime_cpu_fp32"]["max_abs_logit_diff"] <= 1e-4
    assert (tmp_path / "out" / "model.onnx").stat().st_size > 1000


@pytest.mark.slow
def test_full_size_base_model_exports_with_parity(tmp_path):
    model = randomize_(create_model("s2d_base")).eval()
    parity = onnx_parity(model, export_onnx(model, tmp_path / "model.onnx"), batch=1)
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
