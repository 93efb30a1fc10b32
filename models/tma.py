"""Temporal-Modeling Adapter (TMA): the only place where S2D looks across frames.

TMA(x) = S(LN(T(x))) with no skip connection inside (the caller adds the result to the RGB tokens):
  T: Linear D->d, GELU, self-attention over the T frames of each patch position, Linear d->D
  LN: LayerNorm(D) with torch's default eps 1e-5 (the rest of the ViT uses 1e-6)
  S: Linear D->d, GELU, Linear d->D
Module names (T_Adapter.D_fc1, norm, S_Adapter.D_fc2, ...) follow the official checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .vit import Attention


class Adapter(nn.Module):
    """Bottleneck D -> d -> D, optionally with self-attention (no qkv bias) along the second-to-last axis."""

    def __init__(self, dim: int, hidden_dim: int, num_heads: int | None = None):
        super().__init__()
        self.act = nn.GELU()
        self.D_fc1 = nn.Linear(dim, hidden_dim)
        self.D_fc2 = nn.Linear(hidden_dim, dim)
        self.attn = Attention(hidden_dim, num_heads, qkv_bias=False) if num_heads else None

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """D -> d, GELU: per token."""
        return self.act(self.D_fc1(x))

    def up(self, h: torch.Tensor) -> torch.Tensor:
        """d -> D: per token."""
        return self.D_fc2(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        return self.up(self.attn(h) if self.attn is not None else h)


class TemporalModelingAdapter(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, num_heads: int):
        super().__init__()
        self.T_Adapter = Adapter(dim, hidden_dim, num_heads)
        self.norm = nn.LayerNorm(dim)
        self.S_Adapter = Adapter(dim, hidden_dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        # x: [B*T, L, D] tokens of B clips, frames consecutive -> attend over T for each (clip, position).
        # T_Adapter's down and up maps act per token, so the frames are brought together after `down` and put back
        # before `up`: the same values as transposing x itself, with a quarter of the width (d, not D) to move.
        frames, length, _ = x.shape
        t = self.T_Adapter
        h = t.down(x)  # [B*T, L, d]
        h = h.view(frames // num_frames, num_frames, length, -1).transpose(1, 2)  # [B, L, T, d]
        h = t.attn(h).transpose(1, 2).reshape(frames, length, -1)  # back to [B*T, L, d]
        return self.S_Adapter(self.norm(t.up(h)))
