"""Per-stream back-pressure: the bounded frame buffer (oldest dropped, newest taken) and the bounded event outbox."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

from s2d.service import metrics
from s2d.service.streams.protocol import CLOSE_NORMAL, Event, FrameMessage


class FrameBuffer:
    """Frames waiting for the face pipeline: at most `capacity`; a new frame beyond it drops the oldest.

    `put` and `get` run on the event loop; `take_newer` runs in a pipeline thread, so the deque is guarded by a lock.
    """

    def __init__(self, capacity: int, on_drop: Callable[[str], None]):
        self._items: deque[FrameMessage] = deque()
        self.capacity = capacity
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.ended = False  # the client sent `end`: process what is here, then flush

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: FrameMessage) -> None:
        with self._lock:
            full = len(self._items) >= self.capacity
            if full:
                self._items.popleft()
            self._items.append(frame)
        if full:
            self._on_drop("behind")
        self._ready.set()

    def end(self) -> None:
        self.ended = True
        self._ready.set()

    async def get(self) -> FrameMessage | None:
        """The oldest waiting frame; None once the stream ended and nothing is left."""
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
            if self.ended:
                return None
            self._ready.clear()
            await self._ready.wait()

    def take_newer(self) -> tuple[FrameMessage | None, int]:
        """(the newest waiting frame, how many older ones it replaces), emptying the buffer; (None, 0) when empty.

        Called by a pipeline thread just before it decodes a frame: under load a frame waits for a free thread
        behind the other streams' frames, and the frames that arrived meanwhile are fresher. The caller counts the
        skipped frames (on the event loop, where the stream's counters live)."""
        with self._lock:
            if not self._items:
                return None, 0
            newest = self._items.pop()
            skipped = len(self._items)
            self._items.clear()
            return newest, skipped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Outbox:
    """Events waiting to be sent: bounded. Over capacity the oldest droppable event (tracks, stats) goes first,
    else the oldest event of any kind; `dropped` counts them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque[tuple[Event, bool]] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closing: tuple[int, str] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event, droppable: bool = False) -> None:
        if self.closing is not None and self.closing[0] != CLOSE_NORMAL:
            return
        if len(self._items) >= self.capacity:
            index = next((i for i, (_, d) in enumerate(self._items) if d), 0)
            del self._items[index]
            self.dropped += 1
            metrics.STREAM_EVENTS_DROPPED.inc()
        self._items.append((event, droppable))
        self._ready.set()

    def clear(self) -> None:
        self._items.clear()

    def close(self, code: int, reason: str) -> None:
        """Ask the sender to close once the events before this call are sent (the first request wins)."""
        if self.closing is None:
            self.closing = (code, reason)
        self._ready.set()

    async def get(self) -> Event | None:
        """The next event; None when a close was asked for and everything before it is sent."""
        while not self._items:
            if self.closing is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()[0]
