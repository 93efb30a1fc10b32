"""Random erasing (timm semantics) on a normalised clip, one box per clip."""

from __future__ import annotations

import math

import numpy as np
import torch

from .rng import RngLike, as_rng


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
