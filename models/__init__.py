"""The S2D network in PyTorch: ViT + Multi-View Complementary Prompters + Temporal-Modeling Adapters."""

from __future__ import annotations

from .config import IMAGENET_MEAN, IMAGENET_STD, S2DConfig, get_config, list_variants, register_variant
from .input import normalize_frames
from .s2d import S2DModel, S2DNet, clip_flops, count_parameters, is_trainable_name


def create_model(name: str = "s2d_base", *, image: bool = False, **overrides) -> S2DModel:
    """Build a registered variant with fresh weights and the official freeze rule applied.

    `image=True` gives the static-stage model (T=1, no TMA, no temporal embedding); `overrides` change config fields,
    e.g. `create_model("s2d_base", num_classes=11)` or `num_frames=8`.
    """
    config = get_config(name)
    if image:
        config = config.as_image_model()
    model = S2DModel(config.replace(**overrides) if overrides else config)
    model.s2d.freeze_backbone()
    return model


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "S2DConfig",
    "S2DModel",
    "S2DNet",
    "clip_flops",
    "count_parameters",
    "create_model",
    "get_config",
    "is_trainable_name",
    "list_variants",
    "normalize_frames",
    "register_variant",
]
