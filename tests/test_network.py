"""The S2D network: names and shapes of the official checkpoints, parameter counts, shapes, errors, precision."""

from __future__ import annotations

import pytest
import torch

from s2d.models import S2DModel, count_parameters, create_model, get_config, is_trainable_name, list_variants
from s2d.models.mobilefacenet import LandmarkFeatureExtractor
from tests.helpers import FIXTURES, random_clip, randomize_


def read_listing(name: str) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in (FIXTURES / name).read_text().splitlines():
        key, rest = line.split(" ", 1)
        shape, _, flag = rest.partition("] ")
        rows.append((key, [int(d) for d in shape.strip("[]").split(",") if d.strip()], flag.strip()))
    return rows


def meta_model(name: str, **overrides) -> S2DModel:
    with torch.device("meta"):
        return create_model(name, **overrides)


def test_state_dict_is_exactly_the_official_one():
    listing = read_listing("s2d_video_state_dict_7cls.txt")
    state = meta_model("s2d_base", num_classes=7).s2d.state_dict()
    assert len(listing) == 419
    assert [key for key, _, _ in listing] == list(state)  # same names, same order
    for key, shape, flag in listing:
        assert list(state[key].shape) == shape, key
        assert is_trainable_name(key) == (flag == "T"), key


def test_official_freeze_rule_is_applied():
    model = meta_model("s2d_base")
    for name, param in model.s2d.named_parameters():
        assert param.requires_grad == is_trainable_name(name), name
    assert not any(p.requires_grad for p in model.landmark.parameters())


@pytest.mark.parametrize(("classes", "total", "trainable"), [(7, 95_055_571, 9_258_451), (11, 95_058_647, 9_261_527)])
def test_parameter_counts_match_the_paper_model(classes, total, trainable):
    assert count_parameters(meta_model("s2d_base", num_classes=classes).s2d) == (total, trainable)


def test_mobilefacenet_names_shapes_and_size():
    listing = read_listing("mobilefacenet_state_dict.txt")
    net = LandmarkFeatureExtractor().net
    state = net.state_dict()
    assert [key for key, _, _ in listing] == list(state)
    for key, shape, _ in listing:
        assert list(state[key].shape) == shape, key
    assert sum(p.numel() for p in net.parameters()) == 1_007_248


def test_landmark_features_are_conv4_maps_and_stay_frozen_in_eval():
    extractor = randomize_(LandmarkFeatureExtractor())
    extractor.train()  # must be ignored: BatchNorm keeps its running statistics
    assert not extractor.training and not any(m.training for m in extractor.modules())
    frames = torch.randn(3, 3, 224, 224)
    feats = extractor(frames)
    assert feats.shape == (3, 128, 14, 14)
    small = torch.nn.functional.interpolate(frames, size=(112, 112), mode="bilinear", align_corners=True)
    torch.testing.assert_close(feats, extractor.net(small)[1])  # the resize is bilinear, corners aligned
    assert not feats.requires_grad


def test_registry_has_base_small_tiny_with_vit_widths():
    assert {"s2d_base", "s2d_small", "s2d_tiny"} <= set(list_variants())
    widths = {name: (get_config(name).embed_dim, get_config(name).num_heads) for name in list_variants()}
    assert widths["s2d_base"] == (768, 12) and widths["s2d_small"] == (384, 6) and widths["s2d_tiny"] == (192, 3)
    with pytest.raises(KeyError, match="unknown model variant 'vit_huge'"):
        get_config("vit_huge")


def test_forward_shapes_and_wrong_clip_length_is_a_clear_error():
    model = create_model("s2d_tiny", num_frames=4).eval()
    with torch.no_grad():
        logits, features = model(random_clip(model.config, batch=2))
    assert logits.shape == (2, 7) and features.shape == (2, 192)
    with pytest.raises(ValueError, match="exactly 4 frames"):
        model(torch.randn(1, 3, 5, 224, 224))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        model(torch.randn(1, 4, 4, 224, 224))


def test_frames_are_independent_except_through_the_tma():
    # Changing one frame changes the others' features only through the temporal adapters.
    model = randomize_(create_model("s2d_tiny", num_frames=4, depth=2)).eval()
    clip = random_clip(model.config)
    edited = clip.clone()
    edited[:, :, 3] += 1.0

    def frame_features(m, c):
        frames = c.transpose(1, 2).flatten(0, 1)
        return m.s2d.forward_features(frames, m.landmark(frames))

    with torch.no_grad():
        before, after = frame_features(model, clip), frame_features(model, edited)
        assert (before[0] - after[0]).abs().max() > 1e-4  # the TMA mixes frames
        for block in model.s2d.prompt_blocks:
            block.TMA = None
        before, after = frame_features(model, clip), frame_features(model, edited)
        torch.testing.assert_close(before[:3], after[:3])  # without it, frames 0-2 do not see frame 3


def test_image_model_has_no_temporal_parts_and_trains_on_images():
    model = create_model("s2d_tiny", image=True)
    names = list(model.s2d.state_dict())
    assert not any("TMA" in n or "temporal_embedding" in n for n in names)
    logits, _ = model.train()(torch.randn(2, 3, 224, 224))
    logits.sum().backward()
    trained = [n for n, p in model.s2d.named_parameters() if p.grad is not None]
    assert trained and all(is_trainable_name(n) for n in trained)


def test_bf16_autocast_is_close_to_fp32():
    model = randomize_(create_model("s2d_tiny", num_frames=4, depth=4)).eval()
    clip = random_clip(model.config, batch=2)
    with torch.no_grad():
        fp32, _ = model(clip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = model(clip)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float().softmax(-1) - fp32.softmax(-1)).abs().max() < 0.05


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=2)).train()
    model.s2d.head.dropout.p = 0.0
    clip = random_clip(model.config)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(clip)[0].square().sum().backward()
        return {n: p.grad.clone() for n, p in model.s2d.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], msg=name)


def test_last_block_computes_only_the_cls_row_with_the_same_values_and_gradients():
    from s2d.models.vit import Block

    torch.manual_seed(0)
    block = Block(dim=64, num_heads=4, mlp_ratio=4.0, eps=1e-6)
    x = torch.randn(3, 9, 64, requires_grad=True)
    full = block(x)[:, :1]
    first = block.forward_first_token(x)
    assert first.shape == (3, 1, 64)
    torch.testing.assert_close(first, full, atol=1e-6, rtol=1e-5)
    # Keys and values of every token still reach the CLS row: the other rows' gradients are not zero, and equal.
    (grad_full,) = torch.autograd.grad(full.square().sum(), x)
    (grad_first,) = torch.autograd.grad(first.square().sum(), x)
    assert grad_first[:, 1:].abs().sum() > 0
    torch.testing.assert_close(grad_first, grad_full, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_full_size_base_clip_runs_in_fp32_and_bf16():
    model = randomize_(create_model("s2d_base")).eval()
    clip = random_clip(model.config)
    with torch.no_grad():
        fp32, feats = model(clip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = model(clip)
    assert fp32.shape == (1, 7) and feats.shape == (1, 768) and torch.isfinite(fp32).all()
    assert (bf16.float().softmax(-1) - fp32.softmax(-1)).abs().max() < 0.1
