"""Checkpoints: official pickles (safely), initialisation checkpoints, and our safetensors format."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from safetensors.torch import save_file

from s2d.models import create_model, get_config
from s2d.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_init_checkpoint,
    load_mobilefacenet_checkpoint,
    model_from_official,
    save_checkpoint,
)
from tests.helpers import random_clip, randomize_

TINY = {"num_frames": 2, "depth": 2}


def tiny_model(**overrides):
    return randomize_(create_model("s2d_tiny", **{**TINY, **overrides})).eval()


def official_payload(state_dict):
    """The structure the official training script saves (args is a pickled argparse.Namespace)."""
    args = argparse.Namespace(model="s2d_base_patch16_224", nb_classes=7, num_frames=16, lr=2e-5, sdl=False)
    return {
        "model": state_dict,
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 99,
        "scaler": {},
        "args": args,
    }


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model()
    path = save_checkpoint(model, tmp_path / "ckpt" / "model.safetensors", {"classes": ["a", "b"]})
    loaded, meta = load_checkpoint(path)
    assert meta == {"classes": ["a", "b"]} and loaded.config == model.config
    clip = random_clip(model.config, batch=2)
    with torch.no_grad():
        for ours, theirs in zip(model(clip), loaded(clip), strict=True):
            assert torch.equal(ours, theirs)
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically


def test_official_checkpoint_loads_strictly_without_renaming(tmp_path):
    model = tiny_model()
    torch.save(official_payload(model.s2d.state_dict()), tmp_path / "dfew_fold1.pth")
    landmark = {k: v for k, v in model.landmark.net.state_dict().items()}
    loaded, args = model_from_official(tmp_path / "dfew_fold1.pth", get_config("s2d_tiny", num_heads=3), landmark)
    assert args["nb_classes"] == 7 and loaded.config.num_frames == 2 and loaded.config.depth == 2
    clip = random_clip(model.config)
    with torch.no_grad():
        assert torch.equal(model(clip)[0], loaded(clip)[0])


def test_official_checkpoint_with_wrong_shapes_is_refused(tmp_path):
    state = tiny_model().s2d.state_dict()
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    torch.save(official_payload(state), tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="does not match"):
        model_from_official(tmp_path / "bad.pth", get_config("s2d_tiny"))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "args": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refusing to load .*system"):
        model_from_official(tmp_path / "evil.pth", get_config("s2d_tiny"))
    assert not marker.exists()


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        model_from_official(tmp_path / "junk.pth", get_config("s2d_tiny"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not an S2D checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_mobilefacenet_checkpoint_loads_strictly(tmp_path):
    model = tiny_model()
    state = model.landmark.net.state_dict()
    torch.save({"state_dict": state, "epoch": 10}, tmp_path / "mobilefacenet_model_best.pth.tar")
    fresh = create_model("s2d_tiny", **TINY)
    fresh.landmark.load_mobilefacenet_state_dict(
        load_mobilefacenet_checkpoint(tmp_path / "mobilefacenet_model_best.pth.tar")
    )
    frames = torch.randn(2, 3, 224, 224)
    assert torch.equal(fresh.landmark(frames), model.landmark(frames))
    del state["conv1.conv.weight"]
    with pytest.raises(RuntimeError, match=r"conv1\.conv\.weight"):
        fresh.landmark.load_mobilefacenet_state_dict(state)


def test_static_stage_weights_initialise_the_video_model_with_fresh_tma_temporal_and_head(tmp_path):
    image = randomize_(create_model("s2d_tiny", image=True, depth=2))
    state = image.s2d.state_dict()
    # What an MAE / static-stage checkpoint looks like: final norm called `norm`, landmark keys, timm-style head.
    state["norm.weight"], state["norm.bias"] = state.pop("ln_post.weight"), state.pop("ln_post.bias")
    state["landmark.backbone.conv1.conv.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save({"model_state_dict": state}, tmp_path / "static.pth")

    video = create_model("s2d_tiny", **TINY)
    report = load_init_checkpoint(video.s2d, tmp_path / "static.pth")
    fresh = {k for k in video.s2d.state_dict() if "TMA" in k or k == "temporal_embedding" or k.startswith("head.")}
    assert set(report.missing) == fresh
    assert report.unexpected == []
    assert "landmark.backbone.conv1.conv.weight" in report.dropped and "head.fc_cls.weight" in report.dropped
    torch.testing.assert_close(video.s2d.ln_post.weight, image.s2d.ln_post.weight)
    torch.testing.assert_close(video.s2d.prompt_blocks[1].conv0_1.weight, image.s2d.prompt_blocks[1].conv0_1.weight)
