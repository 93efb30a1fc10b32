"""Multi-View Complementary Prompters (MCP): landmark features turned into prompts for every ViT block.

The official code lays tokens out as [N, C, 14, 14] maps and applies 1x1 convolutions. A 1x1 convolution is a
per-position linear map and the Fovea softmax runs over all positions, so the same computation on tokens
[N, 196, C] is exact and skips the layout copies. The parameters keep the Conv2d shapes ([out, in, 1, 1]) so the
official state dict loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tma import TemporalModelingAdapter


class TokenConv1x1(nn.Conv2d):
    """A 1x1 Conv2d (same parameters) applied to tokens: [N, L, C_in] -> [N, L, C_out]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(tokens, self.weight.flatten(1), self.bias)


class Fovea(nn.Module):
    """Spatial soft attention per channel: softmax over positions of (z * smooth), times z."""

    def __init__(self, smooth: float = 10.0):
        super().__init__()
        self.smooth = nn.Parameter(torch.full((1,), smooth))

    def forward(self, z: torch.Tensor, first_row_is_cls: bool = False) -> torch.Tensor:
        # z: [N, L, C]; the softmax runs over the L positions, separately for each channel
        if first_row_is_cls:  # the CLS row is no position: left out of the softmax, a zero row in its place
            return F.pad(self(z[:, 1:]), (0, 0, 1, 0))
        return torch.softmax(z * self.smooth, dim=1) * z


class PromptPatchEmbed(nn.Module):
    """Landmark feature map -> tokens of the ViT width: [N, C_l, 14, 14] -> [N, 196, D] (1x1 conv)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = TokenConv1x1(in_chans, embed_dim)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.proj(feature_map.flatten(2).transpose(1, 2))  # row-major positions, like the patch tokens


class PromptBlock(nn.Module):
    """One MCP (plus the TMA of the video model) for one ViT block.

    Inputs are normalised RGB patch tokens r and landmark tokens l, both [B*T, L, D]. Returns
    p = conv1x1(Fovea(conv0_0(r)) + conv0_1(l)), the landmark prompt (also the next block's landmark stream), and
    t = TMA(r), the temporal update (None in the image model). With `first_row_is_cls` the inputs carry a CLS row
    first ([B*T, 1 + L, D]): every map is per token except the Fovea's softmax, which leaves that row out, so the
    other rows get the values they would get without it; the CLS row's outputs are for the caller to discard.
    """

    def __init__(self, dim: int, hidden_dim: int, tma: TemporalModelingAdapter | None):
        super().__init__()
        self.conv0_0 = TokenConv1x1(dim, hidden_dim)
        self.conv0_1 = TokenConv1x1(dim, hidden_dim)
        self.conv1x1 = TokenConv1x1(hidden_dim, dim)
        self.fovea = Fovea()
        self.TMA = tma

    def forward(
        self, rgb: torch.Tensor, landmark: torch.Tensor, num_frames: int, first_row_is_cls: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        temporal = self.TMA(rgb, num_frames) if self.TMA is not None else None
        prompt = self.conv1x1(self.fovea(self.conv0_0(rgb), first_row_is_cls) + self.conv0_1(landmark))
        return prompt, temporal
