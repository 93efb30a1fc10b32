"""The live streams of one application: how many are open (the limit), which ones (shutdown closes them), and the
memory given back once none is open."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Executor

from s2d.service import memory, metrics
from s2d.service.streams.live import LiveStream
from s2d.service.streams.protocol import CLOSE_GOING_AWAY


class StreamHub:
    def __init__(self, max_streams: int, executor: Executor):
        self.max_streams = max_streams
        self.active = 0  # accepted connections, from the hello on (a stream object exists once it is ready)
        self.open: set[LiveStream] = set()
        self.idle_memory = IdleMemory(executor)

    @property
    def full(self) -> bool:
        return self.active >= self.max_streams

    def enter(self) -> None:
        self.active += 1
        metrics.ACTIVE_STREAMS.inc()
        self.idle_memory.busy()

    def leave(self) -> None:
        self.active -= 1
        metrics.ACTIVE_STREAMS.dec()
        if self.active == 0:
            self.idle_memory.idle()

    def close_all(self, reason: str) -> int:
        """Close every open stream with 1001 and `reason` (after a fatal error event saying so); returns how many."""
        for live in self.open:
            live.error("shutting_down", reason, fatal=True)
            live.outbox.close(CLOSE_GOING_AWAY, reason)
        return len(self.open)


class IdleMemory:
    """Once no stream has been open for `memory.IDLE_RELEASE_S`, give freed memory back to the OS."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self._timer: asyncio.TimerHandle | None = None
        self.releases = 0

    def busy(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle(self) -> None:
        self.busy()
        self._timer = asyncio.get_running_loop().call_later(memory.IDLE_RELEASE_S, self._release)

    def _release(self) -> None:
        self._timer = None
        self.releases += 1
        # In a pipeline thread: a full collection over a big heap takes milliseconds the event loop need not spend.
        with contextlib.suppress(RuntimeError):  # the executor is shut down: the server is stopping
            asyncio.get_running_loop().run_in_executor(self.executor, memory.release_memory)
