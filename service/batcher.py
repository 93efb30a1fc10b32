"""Dynamic batching: one worker per model and device turns clips from every request and stream into batches.

`await batcher.submit(frames)` puts N clips (uint8 [N, T, H, W, 3]) in a bounded queue and resolves when all N
are classified. The worker takes up to `max_batch` clips at a time, waiting at most `max_wait_ms` after the oldest
clip for the batch to fill, and runs the model in a thread of its own so the event loop keeps serving: one call at a
time for an in-process session, up to `Classifier.max_in_flight` for a remote engine (Triton).

Back-pressure lives here: a submit that would overflow the queue raises `BusyError` (HTTP 429 with a Retry-After
estimated from the measured throughput), or, with `wait_for_space=True` (an already accepted request going on),
waits for room. Cancelling the awaiting task (client gone, deadline passed) drops its clips that have not started.
Live streams also take `stream_admission` (one batch's worth of clips) before they submit, so they keep their
backlog themselves and always send their newest window (`service.streams`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from s2d.service import metrics
from s2d.service.errors import BusyError, DeadlineError, ServiceError
from s2d.service.inference import Classifier, ModelOutput

log = logging.getLogger(__name__)


@dataclass
class _Item:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    future: asyncio.Future
    enqueued: float  # time.monotonic()
    deadline: float | None  # time.monotonic() after which the clip is not worth running


@dataclass(frozen=True)
class _ClipOutcome:
    logits: np.ndarray  # [C]
    probs: np.ndarray  # [C]
    queue_s: float
    batch_id: int
    batch_size: int
    compute_s: float


@dataclass(frozen=True)
class BatchResult:
    """The outputs of one submit, in the order of its clips."""

    logits: np.ndarray  # float32 [N, C]
    probs: np.ndarray  # float32 [N, C]
    queue_s: float  # longest time one of the clips waited in the queue
    batches: dict[int, tuple[int, float]] = field(default_factory=dict)  # inference calls that held these clips:
    # batch id -> (clips in the call, seconds); calls are shared with other submits, so merge by id, never add up

    @property
    def compute_s(self) -> float:
        return sum(seconds for _, seconds in self.batches.values())


class Batcher:
    def __init__(
        self,
        model: Classifier,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        queue_size: int = 64,
        extra_delay_ms: float = 0.0,
    ):
        self.model = model
        self.extra_delay = extra_delay_ms / 1000  # fault injection (settings.fault_inference_delay_ms)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue_size = queue_size
        self._queue: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._space: asyncio.Condition | None = None
        self._task: asyncio.Task | None = None
        # Calls in flight at once: one for an in-process session (it uses every core it is given), more for a remote
        # engine, whose server overlaps them (Classifier.max_in_flight).
        self.concurrency = max(1, model.max_in_flight)
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"s2d-infer-{model.name}")
        self._batch_ids = itertools.count()
        # Live streams hold one of these per clip they have here (queued or running): under overload their windows
        # then wait in the stream, where a newer window of the same track replaces an older one, instead of in this
        # FIFO queue, where one clip per open track would make every result as old as the whole queue.
        self.stream_admission = asyncio.Semaphore(max_batch)
        self._seconds_per_batch = 0.0  # moving average of one inference call, for Retry-After
        self._labels = {"model": model.name, "provider": model.provider}
        # Read at scrape time, so clips dropped by cancelled requests leave the gauge at once.
        metrics.QUEUE_DEPTH.labels(model.name).set_function(
            lambda: sum(not item.future.done() for item in tuple(self._queue))
        )

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._arrived = asyncio.Event()
        self._space = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.model.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for item in self._queue:
            if not item.future.done():
                item.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run_exclusive(self, fn, *args):
        """Run fn(*args) in a worker thread (warm-up uses it, before any request is let in)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- queue -----------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Clips waiting (clips whose submitter gave up are dropped here)."""
        if any(item.future.done() for item in self._queue):
            self._queue = deque(item for item in self._queue if not item.future.done())
        return len(self._queue)

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained: batches ahead x measured seconds per batch (at least 1)."""
        batches = self.pending / self.max_batch + 1
        return max(1.0, batches * (self._seconds_per_batch or 1.0) / self.concurrency)

    def _has_room(self, n: int) -> bool:
        pending = self.pending
        # A submit larger than the whole queue is still admitted when the queue is empty, so it can never starve.
        return pending + n <= self.queue_size or pending == 0

    async def submit(
        self, frames: np.ndarray, *, deadline: float | None = None, wait_for_space: bool = False
    ) -> BatchResult:
        """Classify N clips, uint8 [N, T, H, W, 3]; `deadline` is a time.monotonic() value.

        Raises BusyError when the queue is full (unless wait_for_space), DeadlineError past the deadline.
        """
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        n = len(frames)
        if n == 0:
            c = len(self.model.classes)
            return BatchResult(np.zeros((0, c), np.float32), np.zeros((0, c), np.float32), 0.0)
        if not self._has_room(n):
            if not wait_for_space:
                metrics.REJECTED.labels("queue_full").inc()
                raise BusyError(
                    f"the inference queue of model {self.model.name!r} is full ({self.pending} clips waiting)",
                    retry_after=self.retry_after(),
                )
            async with self._space:
                await self._space.wait_for(lambda: self._has_room(n))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Item(clip, loop.create_future(), now, deadline) for clip in frames]
        self._queue.extend(items)
        self._arrived.set()
        outcomes: list[_ClipOutcome] = await asyncio.gather(*(item.future for item in items))
        return BatchResult(
            logits=np.stack([o.logits for o in outcomes]),
            probs=np.stack([o.probs for o in outcomes]),
            queue_s=max(o.queue_s for o in outcomes),
            batches={o.batch_id: (o.batch_size, o.compute_s) for o in outcomes},
        )

    # ---- worker ----------------------------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.future.done():  # cancelled by its submitter
                continue
            if item.deadline is not None and now > item.deadline:
                item.future.set_exception(DeadlineError("the clip waited past its deadline"))
                continue
            batch.append(item)
        return batch

    async def _wait_for_batch(self) -> list[_Item]:
        while True:
            while not self.pending:
                self._arrived.clear()
                await self._arrived.wait()
            # Fill up: wait until max_batch clips are here or the oldest has waited max_wait.
            close_at = self._queue[0].enqueued + self.max_wait
            while self.pending < self.max_batch and (remaining := close_at - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if batch:
                return batch

    async def _notify_space(self) -> None:
        async with self._space:
            self._space.notify_all()

    async def _worker(self) -> None:
        """Take a batch whenever one of the `concurrency` call slots is free, and run it in its own task."""
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task] = set()

        def finished(task: asyncio.Task) -> None:
            running.discard(task)
            slots.release()

        try:
            while True:
                await slots.acquire()
                try:
                    batch = await self._wait_for_batch()
                except BaseException:
                    slots.release()
                    raise
                await self._notify_space()
                task = asyncio.create_task(self._run_batch(batch), name=f"batch-{self.model.name}")
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_batch(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for item in batch:
            metrics.QUEUE_WAIT.labels(**self._labels).observe(started - item.enqueued)
        try:
            output: ModelOutput = await loop.run_in_executor(self._executor, self._run, batch)
        except asyncio.CancelledError:
            for item in batch:
                if not item.future.done():
                    item.future.cancel()
            raise
        except Exception as err:  # a failing model call fails its clips, never the worker
            if isinstance(err, ServiceError):  # a typed refusal of the engine (Triton), logged where it was made
                log.warning("a batch of %d clips on %s failed: %s", len(batch), self.model.name, err.code)
            else:
                log.exception("inference failed for a batch of %d clips on %s", len(batch), self.model.name)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        compute_s = time.monotonic() - started
        self._seconds_per_batch = (
            compute_s if not self._seconds_per_batch else 0.8 * self._seconds_per_batch + 0.2 * compute_s
        )
        metrics.COMPUTE.labels(**self._labels).observe(compute_s)
        metrics.BATCH_SIZE.labels(**self._labels).observe(len(batch))
        metrics.CLIPS.labels(self.model.name).inc(len(batch))
        batch_id = next(self._batch_ids)
        for i, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(
                    _ClipOutcome(
                        output.logits[i], output.probs[i], started - item.enqueued, batch_id, len(batch), compute_s
                    )
                )

    def _run(self, batch: list[_Item]) -> ModelOutput:
        if self.extra_delay:
            time.sleep(self.extra_delay)
        # No clip wanted after the latest of their deadlines; a clip without one (an upload) keeps the engine's.
        deadlines = [item.deadline for item in batch]
        deadline = None if None in deadlines else max(deadlines)
        return self.model.run(np.stack([item.frames for item in batch]), deadline)
