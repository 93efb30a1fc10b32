"""What both pools (local processes, Ray) share: how a stop is asked for, and handing out at most `limit` videos at a
time, so that a stop leaves nothing queued inside the engine and a stop's in-flight videos are few."""

from __future__ import annotations

import logging
import signal
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Stop:
    """Set by SIGINT: the first stops starting videos (those in flight finish and are written), the second abandons
    those in flight (nothing of theirs is written; the next run does them)."""

    requested: bool = False
    abandon: bool = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            self.abandon = True
            log.warning("interrupted again: abandoning the videos in flight (the next run does them)")
        else:
            self.requested = True
            log.warning("interrupted: finishing the videos in flight, then stopping (Ctrl-C again to abandon them)")


@contextmanager
def sigint_stops() -> Iterator[Stop]:
    """SIGINT (Ctrl-C) sets the `Stop` this yields instead of raising KeyboardInterrupt, until the block ends."""
    stop = Stop()
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def bounded(
    jobs: list, limit: int, stop: Stop, submit: Callable[[object], Hashable], finished: Callable[[list], list],
    inflight: dict,
) -> Iterator[tuple[object, Hashable]]:  # fmt: skip
    """(job, handle) as jobs finish. `submit(job)` starts one and returns its handle (a future, an object ref);
    `finished(handles)` waits a moment and returns those done. `inflight` (handle -> job) is the caller's, to give
    up what is left when it stops."""
    pending = deque(jobs)
    while pending or inflight:
        while pending and len(inflight) < limit and not stop.requested:
            job = pending.popleft()
            inflight[submit(job)] = job
        if not inflight or stop.abandon:
            return
        for handle in finished(list(inflight)):
            yield inflight.pop(handle), handle
