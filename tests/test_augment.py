"""Clip augmentation: one set of random parameters per clip, op numerics (against PIL, which timm uses), the
sampling statistics of the random crop and erasing, Mixup/CutMix targets, and reproducibility."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from s2d.training.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RAND_INCREASING_OPS,
    Mixup,
    RandAugment,
    RandomErasing,
    VideoTransform,
    apply_op,
    cutmix_box,
    level_to_arg,
    mixup_target,
    normalize_clip,
    random_resized_crop_params,
    smooth_one_hot,
)
from s2d.training.data.augment import rng as rng_module
from s2d.training.losses import SoftTargetCrossEntropy

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def smooth_image(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A textured but smooth uint8 RGB image with values away from 0/255, so every op changes something."""
    small = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4, 3)).astype(np.uint8)
    return (cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6 + 30).astype(np.uint8)


def expected_normalised(frames: np.ndarray) -> torch.Tensor:
    """Plain (x/255 - mean)/std to [3, T, H, W], written independently of the module."""
    x = torch.from_numpy(frames.astype(np.float32) / 255.0)
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return x.permute(3, 0, 1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# Same parameters for every frame
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", RAND_INCREASING_OPS)
def test_identical_frames_stay_identical(op):
    clip = np.repeat(smooth_image(48, 48)[None], 4, axis=0)
    transform = VideoTransform(
        train=True, size=40, randaugment=RandAugment(num_ops=2, prob=1.0, ops=[op]), erasing_prob=1.0
    )
    for seed in range(3):
        out = transform(clip, rng=seed)
        assert out.shape == (3, 4, 40, 40)
        assert torch.equal(out, out[:, :1].expand_as(out))


def test_default_pipeline_keeps_identical_frames_identical():
    clip = np.repeat(smooth_image(56, 64)[None], 3, axis=0)
    transform = VideoTransform(train=True, size=32, erasing_prob=0.5)
    for seed in range(20):
        out = transform(clip, rng=seed)
        assert torch.equal(out, out[:, :1].expand_as(out))


def test_geometry_is_shared_by_frames_with_different_content():
    """Frames differ (the dot's brightness) but the dot must land in the same place in each of them: the centroid
    of (value - background) is the same for every frame, whatever the crop, flip and geometric ops. The background
    equals timm's fill (128), so pixels brought in from outside the frame look like background."""
    frames = np.full((5, 48, 48, 3), 128, np.uint8)
    for t in range(5):
        frames[t, 18:24, 20:27] = 175 + 20 * t
    ra = RandAugment(num_ops=3, prob=1.0, ops=GEOMETRIC)
    transform = VideoTransform(train=True, size=48, randaugment=ra, erasing_prob=0.0, scale=(0.6, 1.0))
    ys, xs = np.mgrid[:48, :48]
    for seed in range(10):
        red = transform(frames, rng=seed)[0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # [T, H, W] in [0, 1]
        centroids = []
        for frame in red * 255:
            weight = np.clip(frame - 128, 0, None)
            if weight.sum() == 0:  # the dot was cropped or moved out of view: it must be so in every frame
                centroids.append((-1.0, -1.0))
                continue
            centroids.append(((weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()))
        assert np.ptp(np.array(centroids), axis=0).max() < 0.25, (seed, centroids)


# ---------------------------------------------------------------------------------------------------------------------
# Shapes, eval, normalisation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [16, 1])
def test_shapes_and_dtypes(frames):
    clip = np.random.default_rng(0).integers(0, 256, (frames, 60, 80, 3), dtype=np.uint8)
    train = VideoTransform(train=True)(clip, rng=0)
    assert train.shape == (3, frames, 224, 224) and train.dtype == torch.float32 and train.is_contiguous()
    assert VideoTransform(train=False)(clip).shape == (3, frames, 224, 224)
    two = VideoTransform(train=False, crops=2)(clip)
    assert two.shape == (2, 3, frames, 224, 224) and two.dtype == torch.float32


def test_single_image_is_one_frame_clip():
    image = smooth_image(30, 30)
    out = VideoTransform(train=False, size=30)(image)
    assert torch.equal(out, VideoTransform(train=False, size=30)(image[None]))
    assert out.shape == (3, 1, 30, 30)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        VideoTransform(train=False)(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        VideoTransform(train=False)(np.zeros((2, 8, 8), np.uint8).reshape(2, 8, 8, 1))


def test_eval_is_deterministic_plain_resize_and_normalise():
    clip = np.random.default_rng(1).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    transform = VideoTransform(train=False, size=32)
    out = transform(clip)
    assert torch.equal(out, transform(clip))
    resized = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in clip])
    torch.testing.assert_close(out, expected_normalised(resized), atol=1e-5, rtol=0)


def test_eval_crops_square_coincide_and_nonsquare_slide_along_long_side():
    square = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    crops = VideoTransform(train=False, size=32, crops=2)(square)
    assert torch.equal(crops[0], crops[1]) and torch.equal(crops[0], VideoTransform(train=False, size=32)(square))

    wide = np.random.default_rng(3).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)  # short side 48 -> 32, 64 -> 42
    crops = VideoTransform(train=False, size=32, crops=2)(wide)
    resized = np.stack([cv2.resize(f, (42, 32), interpolation=cv2.INTER_AREA) for f in wide])
    torch.testing.assert_close(crops[0], expected_normalised(resized[:, :, :32]), atol=1e-5, rtol=0)
    torch.testing.assert_close(crops[1], expected_normalised(resized[:, :, 10:42]), atol=1e-5, rtol=0)

    tall = np.ascontiguousarray(wide.transpose(0, 2, 1, 3))
    crops = VideoTransform(train=False, size=32, crops=3)(tall)
    assert crops.shape == (3, 3, 2, 32, 32)
    assert not torch.equal(crops[0], crops[2])


def test_normalisation_of_a_constant_colour():
    colour = np.array([10, 128, 250], np.uint8)
    out = normalize_clip(np.broadcast_to(colour, (2, 4, 5, 3)).copy())
    expected = (colour / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert out.shape == (3, 2, 4, 5)
    for c in range(3):
        torch.testing.assert_close(out[c], torch.full((2, 4, 5), float(expected[c])), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# RandAugment ops
# ---------------------------------------------------------------------------------------------------------------------


def test_simple_op_expectations():
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    v = ramp.astype(int)
    assert (apply_op(np.zeros((1, 4, 4, 3), np.uint8), "Invert", None) == 255).all()
    assert np.array_equal(apply_op(ramp, "SolarizeIncreasing", 128), np.where(v < 128, v, 255 - v))
    assert np.array_equal(apply_op(ramp, "SolarizeAdd", 77), np.where(v < 128, np.minimum(v + 77, 255), v))
    assert np.array_equal(apply_op(ramp, "PosterizeIncreasing", 2), v & 0xC0)
    assert (apply_op(ramp, "Posterize", 0) == 0).all() and np.array_equal(apply_op(ramp, "Posterize", 8), ramp)
    assert (apply_op(ramp, "Brightness", 0.0) == 0).all() and np.array_equal(apply_op(ramp, "Brightness", 1.0), ramp)
    image = smooth_image()[None]
    grey = apply_op(image, "Color", 0.0)
    assert (grey == grey[..., :1]).all()
    assert len(np.unique(apply_op(image, "Contrast", 0.0))) == 1
    assert np.array_equal(apply_op(image, "Sharpness", 1.0), image)
    stretched = apply_op((image // 4 + 50).astype(np.uint8), "AutoContrast", None)
    assert stretched.reshape(-1, 3).min(0).tolist() == [0, 0, 0]
    assert stretched.reshape(-1, 3).max(0).tolist() == [255, 255, 255]


def test_rotate_90_and_translate_move_content():
    image = np.random.default_rng(4).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
    assert np.array_equal(apply_op(image, "Rotate", 90.0)[0], np.rot90(image[0], 1))  # counter-clockwise
    dot = np.zeros((1, 40, 40, 3), np.uint8)
    dot[0, 20, 20] = 255
    moved = apply_op(dot, "TranslateXRel", 0.25)  # positive: content moves left by 0.25 * 40 px
    assert moved[0, 20, 10].tolist() == [255, 255, 255] and moved[0, 20, 20].tolist() == [0, 0, 0]
    moved = apply_op(dot, "TranslateYRel", -0.25)  # negative: content moves down
    assert moved[0, 30, 20].tolist() == [255, 255, 255]
    assert (moved[0, :5] == 128).all()  # timm's grey fill comes in from outside


@pytest.mark.parametrize(
    ("op", "arg", "pil_fn"),
    [
        ("AutoContrast", None, ImageOps.autocontrast),
        ("Equalize", None, ImageOps.equalize),
        ("Invert", None, ImageOps.invert),
        ("Solarize", 77, lambda im: ImageOps.solarize(im, 77)),
        ("Posterize", 3, lambda im: ImageOps.posterize(im, 3)),
        ("Brightness", 1.63, lambda im: ImageEnhance.Brightness(im).enhance(1.63)),
        ("Brightness", 0.37, lambda im: ImageEnhance.Brightness(im).enhance(0.37)),
        ("Contrast", 1.63, lambda im: ImageEnhance.Contrast(im).enhance(1.63)),
        ("Contrast", 0.37, lambda im: ImageEnhance.Contrast(im).enhance(0.37)),
        ("Color", 1.63, lambda im: ImageEnhance.Color(im).enhance(1.63)),
        ("Color", 0.37, lambda im: ImageEnhance.Color(im).enhance(0.37)),
        ("Sharpness", 1.63, lambda im: ImageEnhance.Sharpness(im).enhance(1.63)),
        ("Sharpness", 0.37, lambda im: ImageEnhance.Sharpness(im).enhance(0.37)),
    ],
)
def test_pixel_ops_match_pil_on_one_frame(op, arg, pil_fn):
    image = smooth_image()
    ours = apply_op(image[None], op, arg)[0].astype(int)
    ref = np.asarray(pil_fn(Image.fromarray(image))).astype(int)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # grey conversion / float rounding: rare 1-level misses


@pytest.mark.parametrize(
    ("op", "arg", "coeffs"),
    [
        ("ShearX", 0.21, (1, 0.21, 0, 0, 1, 0)),
        ("ShearY", -0.21, (1, 0, 0, -0.21, 1, 0)),
        ("TranslateXRel", 0.315, (1, 0, 0.315 * 48, 0, 1, 0)),
        ("TranslateYRel", -0.2, (1, 0, 0, 0, 1, -8)),
    ],
)
def test_geometric_ops_match_pil_away_from_the_fill_edge(op, arg, coeffs):
    image = smooth_image()
    ours = apply_op(image[None], op, arg)[0].astype(int)
    pil = Image.fromarray(image).transform((48, 40), Image.AFFINE, coeffs, Image.BILINEAR, fillcolor=(128, 128, 128))
    valid = apply_op(np.full((1, 40, 48, 3), 200, np.uint8), op, arg)[0, ..., 0] == 200
    inside = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert inside.mean() > 0.3
    assert np.abs(ours - np.asarray(pil).astype(int))[inside].max() <= 1


def test_rotate_matches_pil():
    image = smooth_image(40, 40)
    ours = apply_op(image[None], "Rotate", 21.0)[0].astype(int)
    ref = np.asarray(Image.fromarray(image).rotate(21.0, Image.BILINEAR, fillcolor=(128, 128, 128))).astype(int)
    assert np.abs(ours - ref)[12:28, 12:28].max() <= 1


def test_colour_statistics_are_pooled_over_the_clip():
    """AutoContrast/Equalize/Contrast use one table for the clip: equal input values give equal outputs in every
    frame, and a one-frame clip behaves exactly like PIL on that frame."""
    frames = np.stack([smooth_image(seed=1) // 3 + 40, smooth_image(seed=2)]).astype(np.uint8)
    for op, arg in (("AutoContrast", None), ("Equalize", None), ("Contrast", 1.5)):
        out = apply_op(frames, op, arg)
        for value in np.intersect1d(frames[0, ..., 0], frames[1, ..., 0])[:10]:
            assert len(np.unique(out[..., 0][frames[..., 0] == value])) == 1


def test_magnitude_to_argument_at_m7():
    expected = {
        "Rotate": 21.0,
        "ShearX": 0.21,
        "ShearY": 0.21,
        "TranslateXRel": 0.315,
        "TranslateYRel": 0.315,
        "PosterizeIncreasing": 2,
        "Posterize": 2,
        "SolarizeIncreasing": 77,
        "Solarize": 179,
        "SolarizeAdd": 77,
        "ColorIncreasing": 1.63,
        "ContrastIncreasing": 1.63,
        "BrightnessIncreasing": 1.63,
        "SharpnessIncreasing": 1.63,
        "Color": 1.36,
    }
    for name, value in expected.items():
        assert level_to_arg(name, 7) == pytest.approx(value), name
    assert level_to_arg("Rotate", 7, negate=True) == pytest.approx(-21.0)
    assert level_to_arg("ColorIncreasing", 7, negate=True) == pytest.approx(0.37)
    assert level_to_arg("SolarizeAdd", 7, negate=True) == 77  # unsigned ops ignore the sign
    assert level_to_arg("Invert", 7) is None
    assert isinstance(level_to_arg("PosterizeIncreasing", 7), int)


def test_magnitude_sampling_stays_in_range():
    rng = np.random.default_rng(0)
    high = [RandAugment(magnitude=9.8, magnitude_std=0.5).sample_magnitude(rng) for _ in range(2000)]
    low = [RandAugment(magnitude=0.2, magnitude_std=0.5).sample_magnitude(rng) for _ in range(2000)]
    mid = np.array([RandAugment().sample_magnitude(rng) for _ in range(2000)])
    assert max(high) == 10.0 and min(low) == 0.0 and min(high) >= 0 and max(low) <= 10
    assert abs(mid.mean() - 7) < 0.05 and abs(mid.std() - 0.5) < 0.05
    assert RandAugment(magnitude_std=0).sample_magnitude(rng) == 7


def test_randaugment_plan_statistics():
    ra = RandAugment()
    rng = np.random.default_rng(0)
    plans = [ra.sample(rng) for _ in range(2000)]
    counts = np.array([len(p) for p in plans])
    assert counts.max() <= 4 and abs(counts.mean() - 2.0) < 0.1  # 4 ops, each applied with p 0.5
    names = {op.name for p in plans for op in p}
    assert names == set(RAND_INCREASING_OPS)
    signs = [op.arg < 1 for p in plans for op in p if op.name == "ColorIncreasing"]
    assert 0.4 < np.mean(signs) < 0.6


# ---------------------------------------------------------------------------------------------------------------------
# Random resized crop and random erasing
# ---------------------------------------------------------------------------------------------------------------------


def test_random_resized_crop_statistics():
    rng = np.random.default_rng(0)
    boxes = np.array([random_resized_crop_params(224, 224, rng) for _ in range(3000)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 224).all() and (left + w <= 224).all()
    area = h * w / 224**2
    assert area.min() > 0.075 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() > 0.74 and ratio.max() < 1.35
    assert 0.4 < area.mean() < 0.6  # U(0.08, 1) would give 0.54; large crops that miss are redrawn
    assert abs(np.log(ratio).mean()) < 0.02


def test_random_resized_crop_fallback_is_central():
    assert random_resized_crop_params(100, 100, 0, scale=(2.0, 3.0)) == (0, 0, 100, 100)
    _, left, h, w = random_resized_crop_params(100, 300, 0, scale=(2.0, 3.0))
    assert (h, w) == (100, 133) and left == (300 - 133) // 2


def test_erasing_probability_and_box_statistics():
    erasing = RandomErasing(probability=0.25)
    rng = np.random.default_rng(0)
    draws = [erasing.sample_boxes(224, 224, rng) for _ in range(4000)]
    assert abs(np.mean([len(b) > 0 for b in draws]) - 0.25) < 0.03
    boxes = np.array([b[0] for b in draws if b])
    top, left, h, w = boxes.T
    area = h * w / 224**2
    assert area.min() > 0.018 and area.max() < 0.34
    assert (h / w).min() > 0.28 and (h / w).max() < 3.5
    assert (top + h <= 224).all() and (left + w <= 224).all()


def test_erasing_uses_one_box_for_all_frames():
    x = torch.zeros(3, 5, 32, 32)
    for seed in range(10):
        out = RandomErasing(probability=1.0)(x.clone(), seed)
        changed = out != 0
        assert changed.any()
        assert torch.equal(changed, changed[:, :1].expand_as(changed))
        assert torch.equal(out, out[:, :1].expand_as(out))  # shared noise by default
    out = RandomErasing(probability=1.0, per_frame_noise=True)(x.clone(), 0)
    box = (out != 0).any(0)
    assert torch.equal(box, box[:1].expand_as(box)) and not torch.equal(out[:, 0], out[:, 1])


def test_erasing_on_an_image_and_never():
    image = torch.zeros(3, 16, 16)
    assert (RandomErasing(probability=1.0, mode="rand")(image, 0) != 0).any()
    assert (RandomErasing(probability=0.0)(torch.zeros(3, 2, 16, 16), 0) == 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# Mixup / CutMix and soft targets
# ---------------------------------------------------------------------------------------------------------------------


def test_smooth_one_hot_values():
    y = smooth_one_hot(torch.tensor([2, 0]), 7, 0.1)
    off, on = 0.1 / 7, 0.9 + 0.1 / 7
    assert y[0, 2].item() == pytest.approx(on) and y[0, 0].item() == pytest.approx(off)
    torch.testing.assert_close(y.sum(1), torch.ones(2))
    assert torch.equal(smooth_one_hot(torch.tensor([1]), 3), torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixup_target_hand_computed():
    target = mixup_target(torch.tensor([0, 1, 2]), 3, lam=0.3, smoothing=0.3)  # mirror of [0, 1, 2] is [2, 1, 0]
    off, on = 0.1, 0.8
    torch.testing.assert_close(target[0], torch.tensor([0.3 * on + 0.7 * off, off, 0.3 * off + 0.7 * on]))
    torch.testing.assert_close(target[1], torch.tensor([off, on, off]))
    torch.testing.assert_close(target.sum(1), torch.ones(3))


def test_cutmix_lambda_is_one_minus_box_area():
    rng = np.random.default_rng(0)
    for lam in (0.1, 0.5, 0.9):
        (y0, y1, x0, x1), corrected = cutmix_box(24, 32, lam, rng)
        assert 0 <= y0 <= y1 <= 24 and 0 <= x0 <= x1 <= 32
        assert corrected == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (24 * 32))


def test_mixup_batch_equals_hand_mix():
    x = torch.randn(4, 3, 2, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=4)
    lam, use_cutmix = mixup.sample_params(np.random.default_rng(7))
    assert not use_cutmix and 0 < lam < 1
    mixed, target = mixup(x.clone(), y, rng=7)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(target, mixup_target(y, 4, lam, 0.1))
    torch.testing.assert_close(target.sum(1), torch.ones(4))


def test_cutmix_shares_the_box_across_frames_and_corrects_lambda():
    x = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 3, 5, 16, 20).clone()  # each sample constant = its index
    y = torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=4)
    for seed in range(10):
        mixed, target = mixup(x, y, rng=seed)
        pasted = mixed[0] == 3.0  # sample 0 receives sample 3's pixels
        assert torch.equal(pasted, pasted[:, :1].expand_as(pasted))  # same box in every frame (and channel)
        fraction = pasted[0, 0].float().mean().item()
        assert target[0, 0].item() == pytest.approx(1 - fraction, abs=1e-6)
        assert target[0, 3].item() == pytest.approx(fraction, abs=1e-6)
    assert torch.equal(x[:, 0, 0, 0, 0], torch.arange(4.0))  # input untouched


def test_mixup_switches_between_modes_and_can_be_disabled():
    mixup = Mixup()
    rng = np.random.default_rng(0)
    modes = [mixup.sample_params(rng)[1] for _ in range(1000)]
    assert 0.45 < np.mean(modes) < 0.55
    mixup.enabled = False
    x = torch.randn(2, 3, 4, 4)
    mixed, target = mixup(x, torch.tensor([1, 6]), rng=0)
    assert torch.equal(mixed, x)
    torch.testing.assert_close(target, smooth_one_hot(torch.tensor([1, 6]), 7, 0.1))


def test_soft_target_cross_entropy_matches_torch():
    logits = torch.randn(5, 7)
    y = torch.tensor([0, 3, 6, 2, 2])
    loss = SoftTargetCrossEntropy()
    torch.testing.assert_close(loss(logits, smooth_one_hot(y, 7)), F.cross_entropy(logits, y))
    torch.testing.assert_close(loss(logits, smooth_one_hot(y, 7, 0.1)), F.cross_entropy(logits, y, label_smoothing=0.1))


# ---------------------------------------------------------------------------------------------------------------------
# Reproducibility
# ---------------------------------------------------------------------------------------------------------------------


def test_seeded_rng_is_reproducible():
    clip = np.random.default_rng(5).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    transform = VideoTransform(train=True, size=32, erasing_prob=0.5)
    a = [transform(clip, rng=s) for s in range(5)]
    b = [transform(clip, rng=np.random.default_rng(s)) for s in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])
    fixed1, fixed2 = VideoTransform(train=True, size=32, rng=3), VideoTransform(train=True, size=32, rng=3)
    assert torch.equal(fixed1(clip), fixed2(clip)) and torch.equal(fixed1(clip), fixed2(clip))
    unseeded = VideoTransform(train=True, size=32)
    assert not torch.equal(unseeded(clip), unseeded(clip))


def test_process_local_rng_is_recreated_after_fork(monkeypatch):
    local = rng_module._ProcessLocalRng()
    first = local.get()
    assert local.get() is first
    monkeypatch.setattr(rng_module.os, "getpid", lambda: -12345)
    assert local.get() is not first


def test_rotation_argument_is_degrees_counter_clockwise():
    assert math.isclose(level_to_arg("Rotate", 10), 30.0)
