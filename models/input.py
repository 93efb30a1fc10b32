"""The model's input: uint8 RGB frames, channels last (what decoders and the face aligner give), become the
ImageNet-normalised float clip the network takes. The one place this is written: export, training, the demo and the
CLI all call it."""

from __future__ import annotations

import torch

from .config import IMAGENET_MEAN, IMAGENET_STD


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float32 [B, 3, T, H, W] = (x / 255 - mean) / std, ImageNet statistics.

    One copy converts dtype and layout together (contiguous output); the affine step is then done in place."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).mul(255).view(1, 3, 1, 1, 1)
    inv_std = torch.tensor(IMAGENET_STD, device=frames.device).mul(255).reciprocal().view(1, 3, 1, 1, 1)
    clip = frames.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
    return clip.sub_(mean).mul_(inv_std)
