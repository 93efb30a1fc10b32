"""Model configuration as small dataclasses, and the registry of named variants.

`s2d_base` is the paper's model (ViT-B/16 backbone). `s2d_small` and `s2d_tiny` keep every S2D component but use the
ViT-S/16 and ViT-Ti/16 widths, for CPU serving and fast tests. Everything that is not width/depth (prompt hidden size,
adapter ratio and heads, landmark channels, eps values) is the same in every variant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class S2DConfig:
    """Shape of one S2D network. `temporal=False` gives the static (image) model: T=1, no TMA, no temporal embedding."""

    name: str = "s2d_base"
    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_frames: int = 16
    num_classes: int = 7
    temporal: bool = True
    prompt_hidden_dim: int = 8  # channels inside each Multi-View Complementary Prompter
    adapter_ratio: float = 0.25  # TMA bottleneck = embed_dim * ratio
    adapter_heads: int = 8  # heads of the TMA's temporal self-attention
    landmark_channels: int = 128  # MobileFaceNet conv_4 channels
    head_dropout: float = 0.5  # the paper's value for DFEW / MAFW (0 for FERV39k)
    norm_eps: float = 1e-6  # ViT LayerNorms and prompt norms; the TMA's own LayerNorm uses torch's 1e-5

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.grid_size != 14:
            # The landmark map (MobileFaceNet conv_4 at 112x112) is 14x14 and is added position-wise to the patches.
            raise ValueError(f"S2D needs a 14x14 patch grid to match the landmark features, got {self.grid_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.temporal and self.adapter_dim % self.adapter_heads:
            raise ValueError(f"adapter dim {self.adapter_dim} is not divisible by adapter_heads {self.adapter_heads}")
        if not self.temporal and self.num_frames != 1:
            raise ValueError("the static (image) model has num_frames=1")
        if self.num_frames < 1 or self.num_classes < 1:
            raise ValueError("num_frames and num_classes must be positive")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def adapter_dim(self) -> int:
        return int(self.embed_dim * self.adapter_ratio)

    def replace(self, **changes) -> S2DConfig:
        return dataclasses.replace(self, **changes)

    def as_image_model(self) -> S2DConfig:
        """The static-stage (SFER) model of the same width: ViT + MCP, T=1, no TMA, no temporal embedding."""
        return self.replace(temporal=False, num_frames=1)

    def as_video_model(self, num_frames: int = 16) -> S2DConfig:
        return self.replace(temporal=True, num_frames=num_frames)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> S2DConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown S2D config fields: {unknown}")
        return cls(**values)


_REGISTRY: dict[str, S2DConfig] = {}


def register_variant(config: S2DConfig) -> S2DConfig:
    if config.name in _REGISTRY:
        raise ValueError(f"variant {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    return config


register_variant(S2DConfig(name="s2d_base", embed_dim=768, depth=12, num_heads=12))  # ViT-B/16, the paper
register_variant(S2DConfig(name="s2d_small", embed_dim=384, depth=12, num_heads=6))  # ViT-S/16 widths
register_variant(S2DConfig(name="s2d_tiny", embed_dim=192, depth=12, num_heads=3))  # ViT-Ti/16 widths


def list_variants() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides) -> S2DConfig:
    """The registered configuration `name`, with `overrides` (e.g. num_classes=11, num_frames=8) applied."""
    try:
        config = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model variant {name!r}; known: {', '.join(list_variants())}") from None
    return config.replace(**overrides) if overrides else config
