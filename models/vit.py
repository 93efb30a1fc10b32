"""Vision Transformer pieces with timm's module names, so ViT / MAE / S2D state dicts load without renaming.

Pre-norm blocks, exact GELU, no layer scale; attention through `scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: [N, 3, H, W] -> [N, (H/p)*(W/p), D], row-major patch order."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected {self.img_size}x{self.img_size} frames, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, D, h, w] -> [N, h*w, D]


class Attention(nn.Module):
    """Multi-head self-attention along the second-to-last axis of [..., L, D] (timm names: qkv, proj).

    The leading axes are batch axes, so the ViT attends over tokens ([N, L, D]) and the TMA over frames
    ([B, L, T, d]) with the same module.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, (length, dim) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, length, dim)  # leading axes folded into one batch axis: plain 4-D attention (ONNX-friendly)
        n = x.shape[0]
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [N, heads, L, hd]
        x = F.scaled_dot_product_attention(q, k, v)
        x = self.proj(x.transpose(1, 2).reshape(n, length, dim))
        return x.reshape(*lead, length, dim)

    def forward_first_query(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output of the first token only, [N, L, D] -> [N, 1, D], the same values as forward(x)[:, :1].

        Keys and values still come from every token; the weighted sum and the projection are computed for one row
        instead of L. The query projection still runs for every row: slicing the fused qkv weight instead leaves a
        Slice on a weight in the ONNX graph, which int8 quantisation then skips.
        """
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [N, heads, L, hd]
        out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [N, heads, 1, hd]
        return self.proj(out.transpose(1, 2).reshape(n, 1, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_first_token(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, D] -> [N, 1, D], the same values as forward(x)[:, :1]: for a last block whose other rows nobody
        reads (the CLS token's), which skips the attention output, projection and MLP of the other L - 1 rows."""
        first = x[:, :1] + self.attn.forward_first_query(self.norm1(x))
        return first + self.mlp(self.norm2(first))
