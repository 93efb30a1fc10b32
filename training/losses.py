"""Losses beside the plain ones: cross-entropy against soft targets (Mixup, label smoothing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class SoftTargetCrossEntropy(torch.nn.Module):
    """Cross-entropy against soft targets [B, C] (what Mixup and smooth_one_hot produce), averaged over the batch."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
