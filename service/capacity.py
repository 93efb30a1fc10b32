"""Slots: how much work of one stage runs at once, against a cap (`s2d_active_*` gauges).

REST requests pass two stages with separate caps: receiving the upload (`max_active_uploads`, generous: a slow or
stalled client holds only this slot, until its upload deadline) and the work on it (`max_active_requests`, taken
once the upload is spooled). Refusing when a cap is reached is the caller's (429 busy with Retry-After).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import Gauge


class Slots:
    def __init__(self, cap: int, gauge: Gauge):
        self.cap, self.gauge = cap, gauge
        self.taken = 0

    @property
    def full(self) -> bool:
        return self.taken >= self.cap

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One slot for the block (checked with `full` first: no await between the check and the hold)."""
        self.taken += 1
        self.gauge.inc()
        try:
            yield
        finally:
            self.taken -= 1
            self.gauge.dec()
