"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

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
