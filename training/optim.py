"""Optimiser and schedules of the official recipe: AdamW with no weight decay on biases, 1-D tensors and embeddings;
learning rate scaled by the total batch / 8; per-step cosine schedule after a linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "temporal_embedding", "cls_token")


def parameter_groups(model: nn.Module, weight_decay: float, lr_scales: Mapping[str, float] | None = None) -> list[dict]:
    """Trainable parameters grouped by weight decay (none on biases, 1-D tensors and embeddings) and by learning-rate
    multiple: a parameter whose name contains a key of `lr_scales` trains at that multiple of the scheduled lr (the
    first matching key wins; `CosineSchedule` applies it). Without `lr_scales`: two groups, decay and no decay."""
    lr_scales = dict(lr_scales or {})
    groups = {(decay, 1.0): _group(weight_decay if decay else 0.0, 1.0) for decay in (True, False)}
    matched = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        short = name.rsplit(".", 1)[-1]
        decay = not (param.dim() <= 1 or name.endswith(".bias") or short in NO_DECAY_NAMES)
        part = next((part for part in lr_scales if part in name), None)
        scale = 1.0 if part is None else float(lr_scales[part])
        matched.add(part)
        groups.setdefault((decay, scale), _group(weight_decay if decay else 0.0, scale))["params"].append(param)
    unused = sorted(set(lr_scales) - matched)
    if unused:
        raise ValueError(f"lr_scales key(s) {', '.join(unused)} match no trainable parameter name")
    return list(groups.values())


def _group(weight_decay: float, lr_scale: float) -> dict:
    return {"params": [], "weight_decay": weight_decay, "lr_scale": lr_scale}


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """The official rule: the configured lr is for a total batch of 8."""
    return base_lr * total_batch / 8


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), lr_scales: Mapping[str, float] | None = None
) -> torch.optim.AdamW:
    groups = parameter_groups(model, weight_decay, lr_scales)
    if not any(group["params"] for group in groups):
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=1e-8)


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, warmup_lr: float) -> float:
    """Linear warm-up from `warmup_lr` to `base_lr`, then half a cosine from `base_lr` to `min_lr`, per step."""
    if step < warmup_steps:
        return warmup_lr + (base_lr - warmup_lr) * step / max(1, warmup_steps - 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


class CosineSchedule:
    """Sets the lr of every param group (times its `lr_scale`) before each step; its state is the step counter."""

    def __init__(self, optimizer, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, warmup_lr: float):
        self.optimizer = optimizer
        self.args = (total_steps, warmup_steps, base_lr, min_lr, warmup_lr)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        return cosine_lr(step, *self.args)

    def step(self) -> float:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.step_count += 1
        return lr

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
