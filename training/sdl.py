"""Emotion-Anchors Self-Distillation Loss (SDL).

A memory keeps, per class c, the last `size` pooled clip features (`queue[c]`) and their softmax outputs
(`probe[c]`). For a training clip with feature f, cosine similarity to every anchor is taken, the top-k per class are
kept (k * C anchors with similarities s), and the soft target is q = sum(s * probe) / sum(s). The loss added to the
classification loss is w(epoch) * BCE-with-logits(logits, q).

Two modes:
* `faithful` reproduces the released code, defects included: the memory starts as uniform noise, is refreshed only
  in epochs that are multiples of `update_freq` (so 100 epochs with frequency 100 never fill it), and each process
  keeps its own memory.
* `fixed` (default): the memory is refreshed after every step of every epoch from `start_epoch` on, the loss is used
  only once every class queue holds real features, and updates are all-gathered so every process has the same memory.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from .distributed import all_gather_cat

# Released schedule of the SDL weight: (first epoch, weight), in order.
WEIGHT_SCHEDULE = ((0, 0.0), (30, 0.01), (50, 0.1), (60, 0.5), (80, 1.0))


def sdl_weight(epoch: int) -> float:
    weight = 0.0
    for first_epoch, value in WEIGHT_SCHEDULE:
        if epoch >= first_epoch:
            weight = value
    return weight


class SDLConfig(BaseModel):
    """SDL's settings; the recipe's `sdl` section (training.config.SDLSection) is this plus `enabled`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["fixed", "faithful"] = "fixed"
    size: int = Field(16, ge=1)  # anchors kept per class
    top_k: int = Field(2, ge=1)
    start_epoch: int = Field(21, ge=0)  # the released code uses SDL only when epoch > 20
    update_freq: int = Field(40, ge=1)  # faithful mode: memory refreshed only in epochs that are multiples of this

    @model_validator(mode="after")
    def _top_k_within_size(self) -> SDLConfig:
        if self.top_k > self.size:
            raise ValueError(f"SDL top_k must be in 1..size ({self.size}), got {self.top_k}")
        return self


class EmotionAnchors(nn.Module):
    """The SDL memory (buffers, so it is saved and restored with the training state) and its soft targets."""

    def __init__(self, num_classes: int, dim: int, config: SDLConfig):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        faithful = config.mode == "faithful"
        init = torch.rand if faithful else torch.zeros  # the released code starts from uniform noise
        self.register_buffer("queue", init(num_classes, config.size, dim))
        self.register_buffer("probe", init(num_classes, config.size, num_classes))
        # How many real entries each class queue holds (faithful mode counts them but does not wait for them).
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.long))

    @property
    def ready(self) -> bool:
        return self.config.mode == "faithful" or bool((self.filled >= self.config.size).all())

    def active(self, epoch: int) -> bool:
        """Whether the SDL term is added to the loss in this epoch."""
        return epoch >= self.config.start_epoch and sdl_weight(epoch) > 0 and self.ready

    def updates_in(self, epoch: int) -> bool:
        """Whether the memory is refreshed after the steps of this epoch."""
        if epoch < self.config.start_epoch:
            return False
        return self.config.mode == "fixed" or epoch % self.config.update_freq == 0

    @torch.no_grad()
    def soft_targets(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, D] -> soft targets [B, C]."""
        sims = F.normalize(features.float(), dim=-1) @ F.normalize(self.queue, dim=-1).flatten(0, 1).T  # [B, C*S]
        sims = sims.view(len(features), self.num_classes, self.config.size)
        top, index = sims.topk(self.config.top_k, dim=-1)  # [B, C, k]
        classes = torch.arange(self.num_classes, device=features.device).view(1, -1, 1)
        anchors = self.probe[classes, index]  # [B, C, k, C]
        weighted = (top.unsqueeze(-1) * anchors).sum(dim=(1, 2))  # [B, C]
        total = top.sum(dim=(1, 2)).unsqueeze(-1)
        total = torch.where(total.abs() < 1e-6, torch.full_like(total, 1e-6), total)  # avoid 0/0, else as released
        return weighted / total

    @torch.no_grad()
    def update(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Push (feature, softmax) of each clip into its true class's FIFO, in batch order."""
        probs = logits.float().softmax(dim=-1)
        features = features.float()
        if self.config.mode == "fixed":  # every process sees every clip, so memories stay identical
            features, probs, labels = all_gather_cat(features), all_gather_cat(probs), all_gather_cat(labels)
        size = self.config.size
        for c in labels.unique().tolist():
            mine = labels == c
            self.queue[c] = torch.cat([self.queue[c], features[mine]])[-size:]
            self.probe[c] = torch.cat([self.probe[c], probs[mine]])[-size:]
            self.filled[c] = min(size, int(self.filled[c]) + int(mine.sum()))


def sdl_loss(logits: torch.Tensor, soft_targets: torch.Tensor, epoch: int) -> torch.Tensor:
    """w(epoch) * BCE-with-logits(logits, q), mean over batch and classes as released."""
    return sdl_weight(epoch) * F.binary_cross_entropy_with_logits(logits.float(), soft_targets)
