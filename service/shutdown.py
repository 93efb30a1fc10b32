"""Graceful shutdown: the drain that runs on the first SIGTERM / SIGINT, before uvicorn's own shutdown.

Uvicorn on a signal stops listening at once, closes idle connections, sends WebSocket close 1012 without a reason,
waits `timeout_graceful_shutdown` for requests in flight and then cancels them: their clients see a bare disconnect.
`service.server.DrainingServer` runs `drain` first, while the socket still listens:

1. `/readyz` and new work answer 503 `shutting_down` (with Retry-After), so a load balancer moves on;
2. live streams are closed with 1001 "server shutting down";
3. requests in flight may finish for up to `shutdown_grace_s`; those still running then are cancelled, which
   answers them 503 `shutting_down` (uploads still being received included) and deletes their spool files;

then uvicorn's shutdown proceeds (nothing is left in flight by then) and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from s2d.service import metrics
from s2d.service.errors import ShuttingDownError

log = logging.getLogger(__name__)
POLL_S = 0.05


class Shutdown:
    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.started = False  # the drain has begun: no new work
        self.overdue = False  # the grace is over: work still in flight is cancelled
        self._tasks: set[asyncio.Task] = set()

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """The current request as work in flight: refused once the drain has begun; waited for by the drain, and
        past its grace cancelled, which this turns into 503 shutting_down."""
        if self.started:
            raise ShuttingDownError()
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self.overdue:
                raise
            task.uncancel()  # the cancellation is answered here, not propagated
            message = f"the server is shutting down; the request could not finish within {self.grace_s:g} s"
            raise ShuttingDownError(message) from None
        finally:
            self._tasks.discard(task)

    async def drain(self, close_streams: Callable[[], int], streams_open: Callable[[], bool]) -> None:
        self.started = True
        metrics.READY.set(0)
        streams = close_streams()
        log.info("shutting down: %d request(s) in flight, %d stream(s) closed", len(self._tasks), streams)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while (self._tasks or streams_open()) and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        if left := set(self._tasks):
            log.warning("shutting down: %d request(s) still in flight after %g s are refused", len(left), self.grace_s)
            self.overdue = True
            for task in left:
                task.cancel()
            await asyncio.wait(left, timeout=self.grace_s)  # their answers are written when their tasks end
