"""Random generators for augmentation: one draw per clip, never shared between DataLoader workers."""

from __future__ import annotations

import os

import numpy as np

RngLike = np.random.Generator | int | None


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator, an int seed, or None (fresh, OS-seeded)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class _ProcessLocalRng:
    """A generator created lazily in the process that uses it, so forked DataLoader workers never share a state."""

    def __init__(self) -> None:
        self._pid = -1
        self._rng: np.random.Generator | None = None

    def get(self) -> np.random.Generator:
        if self._rng is None or self._pid != os.getpid():
            self._pid, self._rng = os.getpid(), np.random.default_rng()
        return self._rng
