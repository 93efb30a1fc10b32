"""Clip checks, resizing, the random-resized-crop parameters and normalisation of uint8 clips [T, H, W, 3]."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from s2d.models.input import normalize_frames

from .rng import RngLike, as_rng


def _as_clip(frames: np.ndarray) -> np.ndarray:
    """Validate uint8 RGB frames; a single [H, W, 3] image becomes a one-frame clip."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected uint8 frames [T, H, W, 3] (or one [H, W, 3] image), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    return frames


def resize_clip(clip: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize every frame to height x width: area filter when shrinking (anti-aliased, like the official PIL bilinear
    resize of its frame list), bilinear when enlarging."""
    t, h, w, _ = clip.shape
    if (h, w) == (height, width):
        return clip
    interp = cv2.INTER_AREA if height * width < h * w else cv2.INTER_LINEAR
    out = np.empty((t, height, width, 3), np.uint8)
    for i in range(t):
        out[i] = cv2.resize(clip[i], (width, height), interpolation=interp)
    return out


def crop_resize_clip(
    clip: np.ndarray, top: int, left: int, height: int, width: int, size: int, flip: bool = False
) -> np.ndarray:
    """Crop the same box from every frame, resize it to size x size bilinear without anti-aliasing (what the
    official `F.interpolate(mode="bilinear", align_corners=False)` does), and optionally mirror it left-right.

    The flip is done here, per frame by OpenCV, because normalising a negatively-strided numpy view is 4x slower."""
    t = clip.shape[0]
    out = np.empty((t, size, size, 3), np.uint8)
    for i in range(t):
        resized = cv2.resize(
            clip[i, top : top + height, left : left + width], (size, size), interpolation=cv2.INTER_LINEAR
        )
        if flip:
            cv2.flip(resized, 1, dst=out[i])
        else:
            out[i] = resized
    return out


def normalize_clip(clip: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [3, T, H, W], (x/255 - mean)/std with ImageNet statistics (models.input)."""
    clip = np.ascontiguousarray(clip)  # a flipped view has negative strides, which torch cannot wrap
    return normalize_frames(torch.from_numpy(clip)[None])[0]


def random_resized_crop_params(
    height: int,
    width: int,
    rng: RngLike = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop: area fraction ~ U(scale), aspect w/h log-uniform in ratio.

    Falls back to the largest centred crop within the ratio range after `attempts` misses (as the official code)."""
    rng = as_rng(rng)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w
