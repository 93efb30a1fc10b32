"""RandAugment for clips (timm semantics): colour ops as one lookup table per clip, geometric ops one warpAffine per
frame with the same matrix. Numerics follow PIL, which timm uses."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

from .clip import _as_clip
from .rng import RngLike, as_rng

MAX_LEVEL = 10.0
FILL = (128, 128, 128)  # timm's fill for pixels that geometric ops bring in from outside the frame


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
