"""Temporal smoothing of per-window probabilities for one track (REST results and live streams share it)."""

from __future__ import annotations

import numpy as np


class EmaSmoother:
    """Exponential moving average: s_k = alpha * p_k + (1 - alpha) * s_{k-1}; the first window passes unchanged.

    alpha = 1 is no smoothing; smaller alpha reacts slower and flickers less.
    """

    def __init__(self, alpha: float = 0.5):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.state: np.ndarray | None = None  # float [C]

    def update(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        self.state = probs.copy() if self.state is None else self.alpha * probs + (1 - self.alpha) * self.state
        return self.state.copy()
