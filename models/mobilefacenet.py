"""MobileFaceNet landmark network (68 landmarks, 112x112 input), used by S2D only for its `conv_4` feature map.

Module names and shapes follow the `pytorch_face_landmark` checkpoint (`mobilefacenet_model_best.pth.tar`, stored as
{'state_dict': ...} without prefix), so it loads strictly. The network is always frozen and in eval mode: S2D never
trains it, and its BatchNorm layers must use their running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """conv then BatchNorm; in eval mode as one convolution with the BatchNorm folded into its weights and bias.

    Folding is exact up to rounding and saves a full pass over every activation map (the landmark network is always
    in eval mode, and its BatchNorm passes cost as much as its depth-wise convolutions on CPU).
    """
    if bn.training:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # [C_out]
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class ConvBlock(nn.Module):
    """Conv (no bias) -> BatchNorm -> PReLU."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(conv_bn(self.conv, self.bn, x))


class LinearBlock(nn.Module):
    """Conv (no bias) -> BatchNorm, no activation."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn(self.conv, self.bn, x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to `groups` channels, 3x3 depth-wise, 1x1 project; optional residual."""

    def __init__(self, in_c: int, out_c: int, groups: int, stride: int, residual: bool = False):
        super().__init__()
        self.conv = ConvBlock(in_c, groups)
        self.conv_dw = ConvBlock(groups, groups, kernel=3, stride=stride, padding=1, groups=groups)
        self.project = LinearBlock(groups, out_c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, channels: int, num_blocks: int, groups: int):
        super().__init__()
        self.model = nn.Sequential(
            *[DepthWise(channels, channels, groups, stride=1, residual=True) for _ in range(num_blocks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GDCHead(nn.Module):
    """Global depth-wise conv head regressing the 136 landmark coordinates (kept for strict loading)."""

    def __init__(self, out_features: int):
        super().__init__()
        self.conv_6_dw = LinearBlock(512, 512, kernel=7, groups=512)
        self.linear = nn.Linear(512, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(self.conv_6_dw(x).flatten(1)))


class MobileFaceNet(nn.Module):
    input_size = 112

    def __init__(self, num_outputs: int = 136):
        super().__init__()
        self.conv1 = ConvBlock(3, 64, kernel=3, stride=2, padding=1)  # 112 -> 56
        self.conv2_dw = ConvBlock(64, 64, kernel=3, padding=1, groups=64)
        self.conv_23 = DepthWise(64, 64, groups=128, stride=2)  # 56 -> 28
        self.conv_3 = Residual(64, num_blocks=4, groups=128)
        self.conv_34 = DepthWise(64, 128, groups=256, stride=2)  # 28 -> 14
        self.conv_4 = Residual(128, num_blocks=6, groups=256)  # the features S2D uses: [N, 128, 14, 14]
        self.conv_45 = DepthWise(128, 128, groups=512, stride=2)  # 14 -> 7
        self.conv_5 = Residual(128, num_blocks=2, groups=256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.output_layer = GDCHead(num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 112, 112] -> conv_4 map [N, 128, 14, 14]."""
        x = self.conv2_dw(self.conv1(x))
        return self.conv_4(self.conv_34(self.conv_3(self.conv_23(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Landmarks [N, 136] and the conv_4 features, like the original network."""
        feat = self.features(x)
        out = self.conv_6_sep(self.conv_5(self.conv_45(feat)))
        return self.output_layer(out), feat


class LandmarkFeatureExtractor(nn.Module):
    """Frozen MobileFaceNet giving S2D its landmark features from the same normalised frames the ViT sees."""

    def __init__(self):
        super().__init__()
        self.net = MobileFaceNet()
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> LandmarkFeatureExtractor:
        # Always eval: BatchNorm must keep its running statistics whatever the enclosing model does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised RGB frames [N, 3, H, W] -> [N, 128, 14, 14]."""
        size = self.net.input_size
        if frames.shape[-2:] != (size, size):
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=True)
        # Always fp32, whatever autocast the caller runs under: the network is small, and oneDNN's bf16 depth-wise
        # convolutions are much slower than fp32 on CPUs; channels-last makes the fp32 ones faster (BENCHMARKS.md).
        device_type = frames.device.type if frames.device.type in ("cuda", "xpu") else "cpu"  # meta: FLOP counting
        with torch.autocast(device_type, enabled=False):
            frames = frames.float().contiguous(memory_format=torch.channels_last)
            return self.net.features(frames).contiguous()

    def load_mobilefacenet_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Strictly load the original `state_dict` (official names; a `module.` prefix is dropped)."""
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
        self.net.load_state_dict(state_dict, strict=True)
