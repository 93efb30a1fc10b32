"""Helpers to run the official S2D code (MSA-LMC/S2D) as a numerical reference. Not imported by the `models` package.

The official code is never copied here: these helpers import it from a local extraction (`--official DIR`) inside a
scratch environment (see tests/fixtures/golden/README.md) and only set up, randomise and run it.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_COMMIT = "e1b5e5d"
LANDMARK_SIZE = 112  # MobileFaceNet input side (official landmark/backbone.py)


def import_official(official_dir: str | Path) -> tuple[ModuleType, ModuleType]:
    """Import the official `model_finetuning` and `landmark/mobilefacenet.py` modules.

    mobilefacenet.py is loaded from its file: importing the `landmark` package would also import basenet.py, which
    needs the real torchvision, and backbone.py, whose `Landmark` loads a checkpoint we do not have.
    """
    official_dir = Path(official_dir).resolve()
    if official_dir not in {Path(p).resolve() for p in sys.path if p}:
        # Its modules import each other by top-level names, so the folder must be on the import path as a whole.
        raise SystemExit(f"the official code must be importable: run with PYTHONPATH={official_dir}")
    import model_finetuning

    path = official_dir / "landmark" / "mobilefacenet.py"
    spec = importlib.util.spec_from_file_location("official_mobilefacenet", path)
    mobilefacenet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mobilefacenet)
    return model_finetuning, mobilefacenet


def build_mobilefacenet(mobilefacenet: ModuleType) -> nn.Module:
    """The official landmark network exactly as `landmark/backbone.py` builds it (68 landmarks -> 136 outputs)."""
    return mobilefacenet.MobileFaceNet([LANDMARK_SIZE, LANDMARK_SIZE], 136).eval()


@torch.no_grad()
def landmark_features(mobilefacenet: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """Same computation as the official `Landmark.forward(x)` (extract_feature=True).

    clip: normalised RGB [B, 3, T, H, W] -> conv_4 feature map [B*T, 128, 14, 14] (frames clip-major).
    """
    b, c, t, h, w = clip.shape
    x = clip.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # einops 'b c t h w -> (b t) c h w'
    if h != LANDMARK_SIZE or w != LANDMARK_SIZE:
        x = F.interpolate(x, size=(LANDMARK_SIZE, LANDMARK_SIZE), mode="bilinear", align_corners=True)
    _, feat = mobilefacenet(x)  # the official net runs to its landmark output; S2D keeps only the conv_4 map
    return feat


@torch.no_grad()
def randomize_(model: nn.Module, generator: torch.Generator) -> int:
    """Overwrite every floating parameter and BatchNorm statistic with random values; return the count of tensors.

    The official initialisation leaves many tensors constant (LayerNorm/BatchNorm affine, biases, fovea.smooth,
    BatchNorm running stats), which would let a wrong implementation pass. The scales keep activations O(1):
    weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2), norm scales ~ 1 +- 0.1, embeddings ~ N(0, 0.2^2).
    Raises if any floating parameter is not covered by a rule.
    """

    def normal(t: torch.Tensor, mean: float, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator) * std + mean)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    done: set[int] = set()
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not own and not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        kind = type(module).__name__
        for name, p in own.items():
            if kind == "Fovea":  # fovea.smooth: softmax temperature, initialised to 10
                normal(p, 10.0, 2.0)
            elif isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                normal(p, 1.0 if name == "weight" else 0.0, 0.1)
            elif isinstance(module, nn.PReLU):
                normal(p, 0.25, 0.1)
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                normal(p, 0.0, 1.0 / math.sqrt(p[0].numel()) if name == "weight" else 0.05)  # p[0]: fan-in
            elif name in ("cls_token", "pos_embed", "temporal_embedding"):
                normal(p, 0.0, 0.2)
            else:
                raise ValueError(f"no randomisation rule for {kind}.{name}")
            done.add(id(p))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            normal(module.running_mean, 0.0, 0.1)
            uniform(module.running_var, 0.5, 1.5)  # positive
            done.update((id(module.running_mean), id(module.running_var)))
    missed = [n for n, p in model.named_parameters() if p.is_floating_point() and id(p) not in done]
    if missed:
        raise ValueError(f"parameters left unrandomised: {missed}")
    return len(done)
