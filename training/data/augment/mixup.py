"""Batch-level Mixup / CutMix with label smoothing: soft targets [B, C] for clips [B, C, T, H, W]."""

from __future__ import annotations

import math

import numpy as np
import torch

from .rng import RngLike, _ProcessLocalRng, as_rng


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
