"""Clip-level augmentation for S2D training and evaluation (the official dynamic-stage recipe).

Every random choice is drawn ONCE per clip and applied identically to all of its frames, so the temporal signal the
model learns from (how a face moves) is never corrupted by per-frame jitter. The pipeline mirrors the official
`VideoClsDatasetFrame` train path: resize to size x size, RandAugment `rand-m7-n4-mstd0.5-inc1` (timm semantics),
random-resized-crop (scale 0.08-1, ratio 3/4-4/3) with horizontal flip, ImageNet normalisation to [3, T, H, W], then
random erasing (p 0.25, per-pixel noise). Batch-level Mixup/CutMix with label smoothing lives here too.

Everything is numpy / OpenCV / torch (there is no torchvision on our machines). Frames are uint8 RGB [T, H, W, 3].

Where we deliberately differ from the official code (all documented at the function concerned):
- AutoContrast, Equalize and Contrast compute their statistics over the whole clip, not per frame, so they are one
  lookup table shared by all frames (no brightness flicker between frames). With T=1 they equal timm/PIL.
- Random erasing draws its noise once per clip (same box AND same noise in every frame); the official code shares
  the box but draws fresh noise per frame. `RandomErasing(per_frame_noise=True)` restores that.
- Random-resized-crop and flip run on uint8 frames before normalisation (the official code crops the normalised float
  tensor); bilinear resampling commutes with the affine normalisation, so this only adds uint8 rounding (<= 0.5/255).
- RandAugment's geometric ops default to bilinear; the official recipe passes `--train_interpolation bicubic`
  (`interpolation="bicubic"` matches it at ~3x the cost of each geometric op).

Reproducibility: pass `rng=` (a `np.random.Generator` or an int seed) per call, e.g. derived from
(seed, epoch, sample index). A generator stored on a transform is copied into every DataLoader worker with the same
state, so workers would repeat each other's augmentations; when no rng is given we create a fresh OS-seeded
generator lazily in each process instead.
"""

from s2d.models.config import IMAGENET_MEAN, IMAGENET_STD

from .clip import crop_resize_clip, normalize_clip, random_resized_crop_params, resize_clip
from .erasing import RandomErasing
from .mixup import Mixup, cutmix_box, mixup_target, smooth_one_hot
from .randaugment import RAND_INCREASING_OPS, RAND_OPS, AugOp, RandAugment, apply_op, level_to_arg
from .rng import as_rng
from .transform import VideoTransform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RAND_INCREASING_OPS",
    "RAND_OPS",
    "AugOp",
    "Mixup",
    "RandAugment",
    "RandomErasing",
    "VideoTransform",
    "apply_op",
    "as_rng",
    "crop_resize_clip",
    "cutmix_box",
    "level_to_arg",
    "mixup_target",
    "normalize_clip",
    "random_resized_crop_params",
    "resize_clip",
    "smooth_one_hot",
]
