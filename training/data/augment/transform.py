"""The per-clip training / evaluation transform: resize, RandAugment, crop and flip, normalisation, erasing."""

from __future__ import annotations

import numpy as np
import torch

from .clip import _as_clip, crop_resize_clip, normalize_clip, random_resized_crop_params, resize_clip
from .erasing import RandomErasing
from .randaugment import RandAugment
from .rng import RngLike, _ProcessLocalRng, as_rng


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
