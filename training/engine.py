"""One training epoch and one evaluation pass; everything else (data, checkpoints, logging) lives in train.py."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .distributed import all_reduce_sum
from .metrics import confusion_matrix
from .optim import CosineSchedule
from .sdl import EmotionAnchors, sdl_loss


@dataclass
class StepSettings:
    device: torch.device
    precision: str = "fp32"  # fp32, bf16, fp16
    accum_steps: int = 1
    clip_grad: float | None = None
    max_steps: int | None = None  # optimiser steps per epoch (smoke runs)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: CosineSchedule,
    epoch: int,
    settings: StepSettings,
    scaler: torch.amp.GradScaler | None = None,
    mixup: Callable | None = None,
    anchors: EmotionAnchors | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Returns mean loss, mean SDL loss, clips/s and the share of time spent waiting for data."""
    model.train()
    accum = settings.accum_steps
    use_sdl = anchors is not None and anchors.active(epoch)
    refresh_memory = anchors is not None and anchors.updates_in(epoch)
    totals = {"loss": 0.0, "sdl_loss": 0.0, "steps": 0, "clips": 0, "data_s": 0.0}
    optimizer.zero_grad(set_to_none=True)
    start = tick = time.perf_counter()
    for i, (clips, labels) in enumerate(loader):
        step, last_micro = i // accum, (i + 1) % accum == 0
        if settings.max_steps is not None and step >= settings.max_steps:
            break
        totals["data_s"] += time.perf_counter() - tick
        clips, labels = clips.to(settings.device, non_blocking=True), labels.to(settings.device, non_blocking=True)
        if i % accum == 0:
            schedule.step()
        inputs, targets = mixup(clips, labels) if mixup is not None else (clips, labels)
        no_sync = getattr(model, "no_sync", None)
        with no_sync() if (no_sync and not last_micro) else contextlib.nullcontext():
            with settings.autocast():
                logits, features = model(inputs)
            loss = criterion(logits.float(), targets)
            if use_sdl:
                extra = sdl_loss(logits, anchors.soft_targets(features.detach()), epoch)
                totals["sdl_loss"] += extra.item()
                loss = loss + extra
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, batch {i}: stopping")
            totals["loss"] += loss.item()
            backward = scaler.scale(loss / accum) if scaler is not None else loss / accum
            backward.backward()
        if last_micro:
            _optimizer_step(model, optimizer, scaler, settings.clip_grad)
            if refresh_memory:  # the memory sees the un-mixed clip after the step, as released
                with torch.no_grad(), settings.autocast():
                    clean_logits, clean_features = model(clips)
                anchors.update(clean_features, clean_logits, labels)
            totals["steps"] += 1
        totals["clips"] += len(clips)
        if progress is not None:
            progress({"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]})
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    batches = max(1, totals["steps"] * accum)
    return {
        "loss": totals["loss"] / batches,
        "sdl_loss": totals["sdl_loss"] / batches if use_sdl else None,
        "lr": optimizer.param_groups[0]["lr"],
        "steps": totals["steps"],
        "clips_per_s": totals["clips"] / elapsed if elapsed else 0.0,
        "data_wait_share": totals["data_s"] / elapsed if elapsed else 0.0,
    }


def _optimizer_step(model: nn.Module, optimizer, scaler, clip_grad: float | None) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, settings: StepSettings) -> torch.Tensor:
    """Confusion matrix summed over processes. Items are clips [B, 3, T, H, W] or views [B, V..., 3, T, H, W]
    (temporal views x crops); the softmax outputs of a clip's views are averaged."""
    model.eval()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=settings.device)
    for views, labels in loader:
        views = views.reshape(views.shape[0], -1, *views.shape[-4:])  # [B, V, 3, T, H, W]
        batch, num_views = views.shape[:2]
        with settings.autocast():
            logits, _ = model(views.flatten(0, 1).to(settings.device, non_blocking=True))
        probs = logits.float().softmax(dim=-1).view(batch, num_views, -1).mean(dim=1)
        matrix += confusion_matrix(probs.argmax(dim=-1), labels.to(settings.device), num_classes)
    return all_reduce_sum(matrix).cpu()
