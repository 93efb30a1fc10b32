"""Golden test: our implementation against numbers produced by running the official S2D code.

The fixture (tests/fixtures/golden, produced by make_golden.py as its README describes) holds random weights for a
tiny official S2D and MobileFaceNet, an input clip, and the official landmark features, logits and features.
The full-size (ViT-B, T=16) comparison needs the official code checked out: tools/official_parity.py.
"""

from __future__ import annotations

import dataclasses
import json

import torch
from safetensors.torch import load_file

from s2d.models import S2DConfig, S2DModel
from tests.helpers import FIXTURES

GOLDEN = FIXTURES / "golden"


def golden_model_and_tensors() -> tuple[S2DModel, dict[str, torch.Tensor]]:
    recorded = json.loads((GOLDEN / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(S2DConfig)}
    config = S2DConfig(name="golden_tiny", **{k: v for k, v in recorded.items() if k in fields})
    tensors = load_file(str(GOLDEN / "s2d_golden_tiny.safetensors"))
    model = S2DModel(config)
    model.s2d.load_state_dict({k.removeprefix("s2d."): v for k, v in tensors.items() if k.startswith("s2d.")})
    model.landmark.load_mobilefacenet_state_dict(
        {k.removeprefix("landmark."): v for k, v in tensors.items() if k.startswith("landmark.")}
    )
    return model.eval(), tensors


def test_logits_and_features_equal_the_official_implementation():
    model, golden = golden_model_and_tensors()
    clip = golden["input"].float()
    with torch.no_grad():
        frames = clip.transpose(1, 2).flatten(0, 1)
        torch.testing.assert_close(model.landmark(frames), golden["landmark_feat"], atol=1e-5, rtol=1e-5)
        logits, features = model(clip)
    assert (logits - golden["logits"]).abs().max() <= 1e-4
    assert (features - golden["features"]).abs().max() <= 1e-4
    assert golden["logits"].std() > 0.1  # the fixture is not degenerate: classes are far apart


def test_the_golden_test_would_catch_a_wrong_order_of_operations():
    # Swapping which normalised stream feeds conv0_0 / conv0_1 is a plausible bug; the fixture must notice it.
    model, golden = golden_model_and_tensors()
    for block in model.s2d.prompt_blocks:
        block.conv0_0, block.conv0_1 = block.conv0_1, block.conv0_0
    with torch.no_grad():
        logits, _ = model(golden["input"].float())
    assert (logits - golden["logits"]).abs().max() > 1e-3
