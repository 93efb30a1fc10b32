"""Helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def random_clip(config, batch: int = 1) -> torch.Tensor:
    """A normalised clip [B, 3, T, H, W] for `config`."""
    return torch.randn(batch, 3, config.num_frames, config.img_size, config.img_size)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every float tensor (BatchNorm statistics included) a random value, so no path is a silent no-op."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(noise.abs() * 0.5 + 0.5)
            elif tensor.dim() == 1 and name.endswith("weight"):
                tensor.copy_(1 + 0.1 * noise)  # norm scales near 1
            else:
                tensor.copy_(0.05 * noise)
    return module


def resize_to_tensor(size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """A plain eval transform: resize each frame to size x size, scale to [0, 1], return [C, T, H, W] float.

    Not normalised, so tests can read pixel values back; training uses training.data.augment.VideoTransform.
    """

    def transform(frames: np.ndarray) -> torch.Tensor:
        resized = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
        return torch.from_numpy(resized).permute(3, 0, 1, 2).float().div_(255.0)

    return transform
