"""Temporal smoothing of per-window probabilities for one track: REST results and live streams both use
`TrackSmoother` (an EMA, then a label with hysteresis)."""

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


class Hysteresis:
    """A label that does not flicker: it changes only when another class leads the current one by `margin`.

    `update(probs)` takes (smoothed) probabilities [C] and returns the index of the label to show; margin 0 is the
    plain argmax. Live streams put it after the EMA, per track.
    """

    def __init__(self, margin: float = 0.1):
        if not 0 <= margin <= 1:
            raise ValueError(f"margin must be in [0, 1], got {margin}")
        self.margin = margin
        self.label: int | None = None

    def update(self, probs: np.ndarray) -> int:
        best = int(np.argmax(probs))
        if self.label is None or probs[best] - probs[self.label] > self.margin:
            self.label = best
        return self.label


class TrackSmoother:
    """One track's smoothing: the EMA of its window probabilities, then the label chosen with hysteresis on them."""

    def __init__(self, alpha: float = 0.5, margin: float = 0.1):
        self.ema, self.hysteresis = EmaSmoother(alpha), Hysteresis(margin)

    def update(self, probs: np.ndarray) -> tuple[np.ndarray, int]:
        """(smoothed probabilities [C], index of the label to show)."""
        smoothed = self.ema.update(probs)
        return smoothed, self.hysteresis.update(smoothed)
