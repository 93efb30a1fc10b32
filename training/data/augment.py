"""Clip-level augmentation for S2D training and evaluation (the official dynamic-stage recipe).

Every random choice is drawn ONCE per clip and applied identically to all of its frames, so the temporal signal the
model learns from (how a face moves) is never corrupted by per-frame jitter. The pipeline mirrors the official
`VideoClsDatasetFrame` train path: resize to size x size, RandAugment `rand-m7-n4-mstd0.5-inc1` (timm semantics),
random-resized-crop (scale 0.08-1, ratio 3/4-4/3) with horizontal flip, ImageNet normalisation to [3, T, H, W], then
random erasing (p 0.25, per-pixel noise). Batch-level Mixup/CutMix with label smoothing lives here too.

Everything is numpy / OpenCV / torch (there is no torchvision on our machines). Frames are uint8 RGB [T, H, W, 3].

Where we deliberately differ from the official code (all documented at the function concerned):
- AutoContrast, Equalize and Contrast compute their statistics over the whole clip, not per frame, so they are one
  lookup table shared by all frames (no brightness flicker between frames). With T=1 they equal timm/PIL.
- Random erasing draws its noise once per clip (same box AND same noise in every frame); the official code shares
  the box but draws fresh noise per frame. `RandomErasing(per_frame_noise=True)` restores that.
- Random-resized-crop and flip run on uint8 frames before normalisation (the official code crops the normalised float
  tensor); bilinear resampling commutes with the affine normalisation, so this only adds uint8 rounding (<= 0.5/255).
- RandAugment's geometric ops default to bilinear; the official recipe passes `--train_interpolation bicubic`
  (`interpolation="bicubic"` matches it at ~3x the cost of each geometric op).

Reproducibility: pass `rng=` (a `np.random.Generator` or an int seed) per call, e.g. derived from
(seed, epoch, sample index). A generator stored on a transform is copied into every DataLoader worker with the same
state, so workers would repeat each other's augmentations; when no rng is given we create a fresh OS-seeded
generator lazily in each process instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.config import IMAGENET_MEAN, IMAGENET_STD
from models.input import normalize_frames  # one definition, shared with the model side

MAX_LEVEL = 10.0
FILL = (128, 128, 128)  # timm's fill for pixels that geometric ops bring in from outside the frame

RngLike = np.random.Generator | int | None

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RAND_INCREASING_OPS",
    "RAND_OPS",
    "AugOp",
    "Mixup",
    "RandAugment",
    "RandomErasing",
    "SoftTargetCrossEntropy",
    "VideoTransform",
    "apply_op",
    "crop_resize_clip",
    "cutmix_box",
    "level_to_arg",
    "mixup_target",
    "normalize_clip",
    "random_resized_crop_params",
    "resize_clip",
    "smooth_one_hot",
]


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator, an int seed, or None (fresh, OS-seeded)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class _ProcessLocalRng:
    """A generator created lazily in the process that uses it, so forked DataLoader workers never share a state."""

    def __init__(self) -> None:
        self._pid = -1
        self._rng: np.random.Generator | None = None

    def get(self) -> np.random.Generator:
        if self._rng is None or self._pid != os.getpid():
            self._pid, self._rng = os.getpid(), np.random.default_rng()
        return self._rng


# ---------------------------------------------------------------------------------------------------------------------
# Clip checks, resizing, normalisation
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# RandAugment ops. Each takes a uint8 clip [T, H, W, 3] and returns a new one; colour ops are one lookup table for
# the whole clip, geometric ops one warpAffine per frame with the same matrix. Numerics follow PIL, which timm uses.
# ---------------------------------------------------------------------------------------------------------------------

_IDENTITY = np.arange(256, dtype=np.int64)


def _apply_lut(clip: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map pixel values through a (256,) table, or a (3, 256) table with one row per channel."""
    lut = np.clip(np.asarray(lut), 0, 255).astype(np.uint8)
    table = lut.reshape(1, 256, 1) if lut.ndim == 1 else np.ascontiguousarray(lut.T).reshape(1, 256, 3)
    t, h, w, _ = clip.shape
    if lut.ndim == 1:
        return cv2.LUT(clip.reshape(t * h, w * 3), table.reshape(1, 256)).reshape(clip.shape)
    return cv2.LUT(np.ascontiguousarray(clip).reshape(t * h, w, 3), table).reshape(clip.shape)


def _blend_lut(degenerate: np.ndarray | float, factor: float) -> np.ndarray:
    """PIL's Image.blend(degenerate, image, factor) as a table over image values: floor, then clip to [0, 255]."""
    values = np.float32(degenerate) + np.float32(factor) * (_IDENTITY.astype(np.float32) - np.float32(degenerate))
    return np.clip(np.floor(values), 0, 255).astype(np.int64)


def _blend(degenerate: np.ndarray, clip: np.ndarray, factor: float) -> np.ndarray:
    """PIL's Image.blend(degenerate, image, factor) for whole arrays, in one cv2.addWeighted pass (~30x faster than
    float numpy). PIL floors; addWeighted rounds, so we subtract 0.499: floor(v) for every v whose fractional part is
    below 0.999 (a 1-level difference otherwise, and float rounding aside)."""
    return cv2.addWeighted(clip, float(factor), degenerate, 1.0 - float(factor), -0.499)


def _channel_histograms(clip: np.ndarray) -> np.ndarray:
    """Per-channel 256-bin histograms pooled over all frames, shape (3, 256)."""
    flat = np.ascontiguousarray(clip).reshape(-1, clip.shape[2], 3)
    return np.stack([cv2.calcHist([flat], [c], None, [256], [0, 256]).ravel() for c in range(3)]).astype(np.int64)


def _grey(clip: np.ndarray) -> np.ndarray:
    """RGB -> grey [T, H, W] uint8 with ITU-R 601-2 weights (OpenCV's fixed point; PIL's differs by 1 level for
    ~0.1% of colours)."""
    t, h, w, _ = clip.shape
    return cv2.cvtColor(np.ascontiguousarray(clip).reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def invert(clip: np.ndarray, _arg: Any = None) -> np.ndarray:
    return _apply_lut(clip, 255 - _IDENTITY)


def solarize(clip: np.ndarray, threshold: int) -> np.ndarray:
    """Invert the values >= threshold (threshold 256 leaves the clip unchanged)."""
    return _apply_lut(clip, np.where(threshold > _IDENTITY, _IDENTITY, 255 - _IDENTITY))


def solarize_add(clip: np.ndarray, add: int, threshold: int = 128) -> np.ndarray:
    """Add `add` (saturating) to the values below threshold."""
    return _apply_lut(clip, np.where(threshold > _IDENTITY, np.minimum(255, _IDENTITY + add), _IDENTITY))


def posterize(clip: np.ndarray, bits: int) -> np.ndarray:
    """Keep the `bits` most significant bits (0 bits gives black, 8 leaves the clip unchanged)."""
    if bits >= 8:
        return clip
    return _apply_lut(clip, _IDENTITY & (~(2 ** (8 - bits) - 1) & 0xFF))


def auto_contrast(clip: np.ndarray, _arg: Any = None) -> np.ndarray:
    """Stretch each channel so its darkest value maps to 0 and its brightest to 255 (PIL autocontrast, cutoff 0).

    The extremes are taken over the whole clip: one table for all frames (official: per frame)."""
    hist = _channel_histograms(clip)
    luts = []
    for h in hist:
        nonzero = np.flatnonzero(h)
        lo, hi = (nonzero[0], nonzero[-1]) if nonzero.size else (0, 0)
        if hi <= lo:
            luts.append(_IDENTITY)
            continue
        scale = 255.0 / (hi - lo)
        luts.append(np.clip((_IDENTITY * scale - lo * scale).astype(np.int64), 0, 255))
    return _apply_lut(clip, np.stack(luts))


def equalize(clip: np.ndarray, _arg: Any = None) -> np.ndarray:
    """Histogram equalisation per channel (PIL's ImageOps.equalize), histogram pooled over the whole clip."""
    hist = _channel_histograms(clip)
    luts = []
    for h in hist:
        nonzero = h[h > 0]
        step = (int(nonzero.sum()) - int(nonzero[-1])) // 256 if nonzero.size > 1 else 0
        if not step:
            luts.append(_IDENTITY)
            continue
        below = np.concatenate([[0], np.cumsum(h)[:-1]])  # count of pixels with a smaller value
        luts.append((step // 2 + below) // step)
    return _apply_lut(clip, np.stack(luts))


def brightness(clip: np.ndarray, factor: float) -> np.ndarray:
    """Blend with black: factor 0 gives black, 1 the original (PIL ImageEnhance.Brightness)."""
    return _apply_lut(clip, _blend_lut(0.0, factor))


def contrast(clip: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the clip's mean grey level (PIL ImageEnhance.Contrast; mean over the whole clip)."""
    mean = int(_grey(clip).mean() + 0.5)
    return _apply_lut(clip, _blend_lut(float(mean), factor))


def color(clip: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the greyscale clip: factor 0 gives grey, 1 the original (PIL ImageEnhance.Color)."""
    t, h, w, _ = clip.shape
    grey = cv2.cvtColor(_grey(clip).reshape(t * h, w), cv2.COLOR_GRAY2RGB).reshape(clip.shape)
    return _blend(grey, np.ascontiguousarray(clip), factor)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def sharpness(clip: np.ndarray, factor: float) -> np.ndarray:
    """Blend with PIL's SMOOTH-filtered clip (border pixels unfiltered): < 1 blurs, > 1 sharpens.

    Frames are stacked vertically so one filter2D call covers the clip; the rows where neighbouring frames meet are
    frame borders, which PIL leaves unfiltered anyway and we restore."""
    t, h, w, _ = clip.shape
    smooth = cv2.filter2D(np.ascontiguousarray(clip).reshape(t * h, w, 3), -1, _SMOOTH).reshape(clip.shape)
    smooth[:, [0, -1]] = clip[:, [0, -1]]
    smooth[:, :, [0, -1]] = clip[:, :, [0, -1]]
    return _blend(smooth, np.ascontiguousarray(clip), factor)


_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def affine(clip: np.ndarray, coeffs: Sequence[float], interpolation: str = "bilinear") -> np.ndarray:
    """PIL's Image.transform(AFFINE, coeffs): output pixel (x, y) samples input (a x + b y + c, d x + e y + f).

    PIL measures coordinates from pixel corners, OpenCV from pixel centres; the offset is converted so results agree.
    Pixels from outside the frame are filled with timm's grey (128)."""
    a, b, c, d, e, f = coeffs
    matrix = np.array(
        [[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]],
        dtype=np.float64,
    )
    if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
        return clip
    t, h, w, _ = clip.shape
    flags = _INTERPOLATIONS[interpolation] | cv2.WARP_INVERSE_MAP
    out = np.empty_like(clip)
    for i in range(t):
        out[i] = cv2.warpAffine(clip[i], matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=FILL)
    return out


def rotate(clip: np.ndarray, degrees: float, interpolation: str = "bilinear") -> np.ndarray:
    """Rotate counter-clockwise about the frame centre (PIL Image.rotate without expand)."""
    h, w = clip.shape[1:3]
    angle = -math.radians(degrees)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = w / 2.0, h / 2.0
    coeffs = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
    return affine(clip, coeffs, interpolation)


def shear_x(clip: np.ndarray, factor: float, interpolation: str = "bilinear") -> np.ndarray:
    return affine(clip, (1, factor, 0, 0, 1, 0), interpolation)


def shear_y(clip: np.ndarray, factor: float, interpolation: str = "bilinear") -> np.ndarray:
    return affine(clip, (1, 0, 0, factor, 1, 0), interpolation)


def translate_x_rel(clip: np.ndarray, pct: float, interpolation: str = "bilinear") -> np.ndarray:
    """Shift by pct of the width; positive pct moves content LEFT (timm/PIL convention)."""
    return affine(clip, (1, 0, pct * clip.shape[2], 0, 1, 0), interpolation)


def translate_y_rel(clip: np.ndarray, pct: float, interpolation: str = "bilinear") -> np.ndarray:
    """Shift by pct of the height; positive pct moves content UP."""
    return affine(clip, (1, 0, 0, 0, 1, pct * clip.shape[1]), interpolation)


_GEOMETRIC: dict[str, Callable[..., np.ndarray]] = {
    "Rotate": rotate,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateXRel": translate_x_rel,
    "TranslateYRel": translate_y_rel,
}
_PIXEL: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "PosterizeIncreasing": posterize,
    "Solarize": solarize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "ColorIncreasing": color,
    "Contrast": contrast,
    "ContrastIncreasing": contrast,
    "Brightness": brightness,
    "BrightnessIncreasing": brightness,
    "Sharpness": sharpness,
    "SharpnessIncreasing": sharpness,
}

# timm's RandAugment op lists (`inc1` selects the increasing variants).
RAND_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
RAND_INCREASING_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
_SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"} | {
    n for n in RAND_INCREASING_OPS if n.endswith("Increasing") and not n.startswith(("Posterize", "Solarize"))
}


def level_to_arg(name: str, magnitude: float, negate: bool = False) -> float | int | None:
    """timm's magnitude (0..10) -> op argument. `negate` is the random sign of the signed ops.

    At m=7: Rotate 21 deg, Shear 0.21, TranslateRel 0.315 of the size, Posterize(Increasing) 2 bits,
    Solarize(Increasing) threshold 77, SolarizeAdd +77, enhance(Increasing) factor 1 +/- 0.63."""
    level = magnitude / MAX_LEVEL
    sign = -1.0 if negate else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return sign * level * 30.0
    if name in ("ShearX", "ShearY"):
        return sign * level * 0.3
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * level * 0.45
    if name == "Posterize":
        return int(level * 4)
    if name == "PosterizeIncreasing":
        return 4 - int(level * 4)
    if name == "Solarize":
        return int(level * 256)
    if name == "SolarizeIncreasing":
        return 256 - int(level * 256)
    if name == "SolarizeAdd":
        return int(level * 110)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return 1.0 + sign * level * 0.9
    raise KeyError(f"unknown RandAugment op {name!r}")


def apply_op(clip: np.ndarray, name: str, arg: Any, interpolation: str = "bilinear") -> np.ndarray:
    """Apply one named op with an already-resolved argument to every frame of the clip."""
    if name in _GEOMETRIC:
        return _GEOMETRIC[name](clip, arg, interpolation)
    return _PIXEL[name](clip, arg)


class AugOp(NamedTuple):
    """One op drawn for a clip: its name, sampled magnitude and resolved argument."""

    name: str
    magnitude: float
    arg: float | int | None


class RandAugment:
    """timm RandAugment (`rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc{increasing}`) over whole clips.

    Per clip: `num_ops` ops drawn uniformly WITH replacement; each is applied with probability 0.5; each applied op
    draws its own magnitude from N(magnitude, magnitude_std) clipped to [0, 10] and its own random sign. All of this
    is drawn once and applied identically to every frame (as the official code does by passing the frame list
    through each timm op)."""

    def __init__(
        self,
        num_ops: int = 4,
        magnitude: float = 7,
        magnitude_std: float = 0.5,
        increasing: bool = True,
        prob: float = 0.5,
        interpolation: str = "bilinear",
        ops: Sequence[str] | None = None,
    ) -> None:
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        self.ops = tuple(ops) if ops is not None else (RAND_INCREASING_OPS if increasing else RAND_OPS)
        unknown = [n for n in self.ops if n not in _GEOMETRIC and n not in _PIXEL]
        if unknown:
            raise ValueError(f"unknown RandAugment ops {unknown}")
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, magnitude, magnitude_std
        self.prob, self.interpolation = prob, interpolation

    def sample_magnitude(self, rng: np.random.Generator) -> float:
        magnitude = float(self.magnitude)
        if self.magnitude_std > 0:
            magnitude = rng.normal(magnitude, self.magnitude_std)
        return float(min(MAX_LEVEL, max(0.0, magnitude)))

    def sample(self, rng: RngLike = None) -> list[AugOp]:
        """The ops to apply to one clip, in order (skipped ops are left out)."""
        rng = as_rng(rng)
        plan = []
        for index in rng.integers(0, len(self.ops), size=self.num_ops):
            name = self.ops[index]
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            magnitude = self.sample_magnitude(rng)
            negate = bool(rng.random() > 0.5)
            plan.append(AugOp(name, magnitude, level_to_arg(name, magnitude, negate)))
        return plan

    def apply(self, clip: np.ndarray, plan: Sequence[AugOp]) -> np.ndarray:
        for op in plan:
            clip = apply_op(clip, op.name, op.arg, self.interpolation)
        return clip

    def __call__(self, clip: np.ndarray, rng: RngLike = None) -> np.ndarray:
        return self.apply(_as_clip(clip), self.sample(rng))

    def __repr__(self) -> str:
        return (
            f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, magnitude_std={self.magnitude_std}, "
            f"ops={len(self.ops)}, interpolation={self.interpolation!r})"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Random resized crop, random erasing
# ---------------------------------------------------------------------------------------------------------------------


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


class RandomErasing:
    """timm RandomErasing on a normalised clip [C, T, H, W] (or an image [C, H, W]): with `probability`, erase
    `count` boxes (count uniform in [min_count, max_count]), each of area ~ U(min_area, max_area)/count of the frame
    and log-uniform aspect in (min_aspect, 1/min_aspect), filled with N(0, 1) noise ("pixel"), one N(0, 1) colour
    per channel ("rand") or zeros ("const").

    The box is the same for every frame, as in the official code (`_erase_cube`, reached with num_splits=recount=1 so
    no frame is skipped). The official code draws new noise for each frame; we draw it once per clip by default so a
    clip of identical frames stays identical (`per_frame_noise=True` gives the official behaviour)."""

    def __init__(
        self,
        probability: float = 0.25,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        mode: str = "pixel",
        min_count: int = 1,
        max_count: int | None = None,
        attempts: int = 100,
        per_frame_noise: bool = False,
    ) -> None:
        if mode not in ("pixel", "rand", "const"):
            raise ValueError("mode must be 'pixel', 'rand' or 'const'")
        self.probability, self.min_area, self.max_area = probability, min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
        self.mode, self.min_count, self.max_count = mode, min_count, max_count or min_count
        self.attempts, self.per_frame_noise = attempts, per_frame_noise

    def sample_boxes(self, height: int, width: int, rng: RngLike = None) -> list[tuple[int, int, int, int]]:
        """(top, left, h, w) boxes to erase in one clip; empty when the clip is left alone."""
        rng = as_rng(rng)
        if rng.random() > self.probability:
            return []
        count = self.min_count
        if self.max_count > self.min_count:
            count = int(rng.integers(self.min_count, self.max_count + 1))
        boxes = []
        for _ in range(count):
            for _ in range(self.attempts):
                target_area = rng.uniform(self.min_area, self.max_area) * height * width / count
                aspect = math.exp(rng.uniform(*self.log_aspect))
                h = round(math.sqrt(target_area * aspect))
                w = round(math.sqrt(target_area / aspect))
                if w < width and h < height:
                    boxes.append((int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w))
                    break
        return boxes

    def _fill(self, shape: tuple[int, ...], frames: int, rng: np.random.Generator) -> torch.Tensor:
        """Values for one box, shape [C, frames or 1, h, w] (broadcast over frames when shared)."""
        c, h, w = shape
        n = frames if self.per_frame_noise else 1
        if self.mode == "pixel":
            return torch.from_numpy(rng.standard_normal((c, n, h, w), dtype=np.float32))
        if self.mode == "rand":
            return torch.from_numpy(rng.standard_normal((c, n, 1, 1), dtype=np.float32))
        return torch.zeros((c, 1, 1, 1))

    def __call__(self, x: torch.Tensor, rng: RngLike = None) -> torch.Tensor:
        """Erase in place and return x."""
        rng = as_rng(rng)
        video = x if x.dim() == 4 else x.unsqueeze(1)
        c, t, height, width = video.shape
        for top, left, h, w in self.sample_boxes(height, width, rng):
            video[:, :, top : top + h, left : left + w] = self._fill((c, h, w), t, rng).to(x.dtype)
        return x


# ---------------------------------------------------------------------------------------------------------------------
# The per-clip transform
# ---------------------------------------------------------------------------------------------------------------------


class VideoTransform:
    """uint8 frames [T, H, W, 3] (T >= 1; a single [H, W, 3] image is T=1) -> float32 [3, T, size, size].

    Train (official dynamic-stage recipe): resize to size x size, RandAugment m7 n4 mstd0.5 inc1, random-resized-crop
    (scale 0.08-1, ratio 3/4-4/3, bilinear back to size), horizontal flip p 0.5, ImageNet normalisation, random
    erasing p `erasing_prob` (pixel noise, one box). One set of random parameters per clip.

    Eval: resize to size x size and normalise -> [3, T, size, size]. With crops > 1 -> [crops, 3, T, size, size]:
    the short side is resized to size and `crops` evenly spaced size x size windows are taken along the longer side.
    The official test resizes frames to a square first, so its "2 crops" coincide; we do the same for square frames
    (all crops equal the plain resize) but keep the original aspect for non-square frames so the crops differ.
    """

    def __init__(
        self,
        train: bool,
        size: int = 224,
        randaugment: bool | RandAugment = True,
        erasing_prob: float = 0.25,
        flip: bool = True,
        crops: int = 1,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        rng: RngLike = None,
    ) -> None:
        if crops < 1:
            raise ValueError("crops must be >= 1")
        self.train, self.size, self.flip, self.crops = train, size, flip, crops
        self.scale, self.ratio = scale, ratio
        if isinstance(randaugment, RandAugment):
            self.randaugment: RandAugment | None = randaugment
        else:
            self.randaugment = RandAugment() if randaugment else None
        self.erasing = RandomErasing(probability=erasing_prob) if erasing_prob > 0 else None
        self._fixed_rng = as_rng(rng) if rng is not None else None
        self._local_rng = _ProcessLocalRng()

    def _rng(self, rng: RngLike) -> np.random.Generator:
        if rng is not None:
            return as_rng(rng)
        return self._fixed_rng if self._fixed_rng is not None else self._local_rng.get()

    def __call__(self, frames: np.ndarray, rng: RngLike = None) -> torch.Tensor:
        clip = _as_clip(frames)
        if self.train:
            return self.train_transform(clip, self._rng(rng))
        return self.eval_transform(clip)

    def train_transform(self, clip: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        clip = resize_clip(clip, self.size, self.size)
        if self.randaugment is not None:
            clip = self.randaugment(clip, rng)
        top, left, h, w = random_resized_crop_params(self.size, self.size, rng, self.scale, self.ratio)
        flip = self.flip and rng.random() < 0.5
        x = normalize_clip(crop_resize_clip(clip, top, left, h, w, self.size, flip))
        if self.erasing is not None:
            x = self.erasing(x, rng)
        return x

    def eval_transform(self, clip: np.ndarray) -> torch.Tensor:
        if self.crops == 1:
            return normalize_clip(resize_clip(clip, self.size, self.size))
        _, h, w, _ = clip.shape
        short, long = min(h, w), max(h, w)
        long_size = max(self.size, int(self.size * long / short))
        clip = resize_clip(clip, *((long_size, self.size) if h > w else (self.size, long_size)))
        step = (long_size - self.size) / (self.crops - 1)
        views = []
        for i in range(self.crops):
            start = int(i * step)
            view = clip[:, start : start + self.size] if h > w else clip[:, :, start : start + self.size]
            views.append(normalize_clip(view))
        return torch.stack(views)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return (
            f"VideoTransform({mode}, size={self.size}, randaugment={self.randaugment}, "
            f"erasing={self.erasing is not None}, flip={self.flip}, crops={self.crops})"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Batch mixing and soft targets
# ---------------------------------------------------------------------------------------------------------------------


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Label-smoothed one-hot targets [B, C]: off = smoothing/C, on = 1 - smoothing + off (rows sum to 1)."""
    off = smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, dtype=torch.float32, device=y.device)
    return out.scatter_(1, y.long().view(-1, 1), 1.0 - smoothing + off)


def mixup_target(y: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """lam * smoothed(y) + (1 - lam) * smoothed(y flipped along the batch)."""
    y1 = smooth_one_hot(y, num_classes, smoothing)
    return y1 * lam + y1.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, rng: RngLike = None) -> tuple[tuple[int, int, int, int], float]:
    """timm's CutMix box (y0, y1, x0, x1) for mixing ratio lam, and lam corrected to 1 - (clipped box area)/(H W).

    The box has sides sqrt(1 - lam) of the frame, a uniformly drawn centre, and is clipped at the borders."""
    rng = as_rng(rng)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    x0, x1 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)


class Mixup:
    """timm Mixup/CutMix in "batch" mode: one lambda per batch, each sample mixed with its mirror `x.flip(0)`.

    With probability `prob` a batch is mixed; then CutMix (lambda ~ Beta(cutmix_alpha)) is chosen with `switch_prob`,
    otherwise Mixup (lambda ~ Beta(mixup_alpha)). The CutMix box covers the same pixels in every frame ([..., H, W]
    indexing) and lambda is corrected to the box's real area. Targets are label-smoothed and mixed with the same
    lambda. Set `enabled = False` to switch mixing off (targets are still smoothed). Works for x [B, C, T, H, W] or
    [B, C, H, W]; odd batch sizes work too (the middle sample mixes with itself; timm asserts an even batch).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        prob: float = 1.0,
        label_smoothing: float = 0.1,
        num_classes: int = 7,
        correct_lam: bool = True,
        rng: RngLike = None,
    ) -> None:
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("one of mixup_alpha, cutmix_alpha must be > 0")
        self.mixup_alpha, self.cutmix_alpha, self.switch_prob, self.prob = mixup_alpha, cutmix_alpha, switch_prob, prob
        self.label_smoothing, self.num_classes, self.correct_lam = label_smoothing, num_classes, correct_lam
        self.enabled = True
        self._fixed_rng = as_rng(rng) if rng is not None else None
        self._local_rng = _ProcessLocalRng()

    def sample_params(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(lam, use_cutmix) for one batch; lam 1.0 means no mixing."""
        if not self.enabled or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    @staticmethod
    def mix(x: torch.Tensor, lam: float) -> torch.Tensor:
        """lam * x + (1 - lam) * x.flip(0)."""
        return x * lam + x.flip(0) * (1.0 - lam)

    @staticmethod
    def paste(x: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """x with the box (y0, y1, x0, x1) of every frame replaced by the flipped batch's pixels."""
        y0, y1, x0, x1 = box
        out = x.clone()
        out[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        return out

    def __call__(self, x: torch.Tensor, y: torch.Tensor, rng: RngLike = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed x, soft targets [B, num_classes]); x is not modified in place."""
        if rng is not None:
            rng = as_rng(rng)
        else:
            rng = self._fixed_rng if self._fixed_rng is not None else self._local_rng.get()
        lam, use_cutmix = self.sample_params(rng)
        if lam < 1.0:
            if use_cutmix:
                box, corrected = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
                lam = corrected if self.correct_lam else lam
                x = self.paste(x, box)
            else:
                x = self.mix(x, lam)
        return x, mixup_target(y, self.num_classes, lam, self.label_smoothing).to(x.device)


class SoftTargetCrossEntropy(torch.nn.Module):
    """Cross-entropy against soft targets [B, C] (what Mixup and smooth_one_hot produce), averaged over the batch."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
