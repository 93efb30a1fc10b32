"""Videos on this machine: N worker processes (`concurrent.futures.ProcessPoolExecutor`), each holding the loaded
models, one video each at a time."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from s2d.batch.dispatch import Stop, bounded
from s2d.batch.worker import Job, Record, Worker, failed_record
from s2d.service.settings import Settings

log = logging.getLogger(__name__)

_worker: Worker | None = None  # the one Worker of a pool process


def _start_worker(settings: Settings) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides
    _worker = Worker(settings)


def _run(job: Job) -> Record:
    return _worker.run(job)


class LocalPool:
    def __init__(self, settings: Settings, workers: int):
        self.settings = settings
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: a fresh interpreter per worker (no forked ONNX Runtime or decoder threads).
        return ProcessPoolExecutor(self.workers, get_context("spawn"), _start_worker, (self.settings,))

    def run(self, jobs: list[Job], stop: Stop) -> Iterator[Record]:
        """Records as videos finish (see dispatch.bounded for `stop`)."""
        inflight: dict[Future, Job] = {}
        self._pool = self._new_pool()
        try:
            for job, future in bounded(jobs, self.workers, stop, self._submit, self._finished, inflight):
                yield self._record(job, future)
        finally:
            self._close(abandon=bool(inflight))

    def _submit(self, job: Job) -> Future:
        try:
            future = self._pool.submit(_run, job)
        except BrokenProcessPool:  # a worker died between videos: nothing was lost with it
            self._replace_pool()
            future = self._pool.submit(_run, job)
        future.pool = self._pool  # which pool ran it: a broken pool is replaced once, not once per lost video
        return future

    def _replace_pool(self) -> None:
        self._close(abandon=True)
        self._pool = self._new_pool()

    @staticmethod
    def _finished(futures: list[Future]) -> list[Future]:
        return list(wait(futures, timeout=0.2, return_when=FIRST_COMPLETED).done)

    def _record(self, job: Job, future: Future) -> Record:
        """A worker process that died (killed, out of memory, a crash in native code) breaks the pool and loses every
        video in flight with it: each is recorded as failed (the next run tries it again) and a new pool goes on."""
        try:
            return future.result()
        except BrokenProcessPool as err:
            log.error("a worker process died while %s was in flight: %s", job.video.path, err)
            if future.pool is self._pool:
                self._replace_pool()
            return failed_record(job, "worker_died", "a worker process died while this video was in flight")

    def _close(self, abandon: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if abandon:  # no public way to stop a running task: end the worker processes (they hold nothing of ours)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            deadline = time.monotonic() + 10
            for process in list(getattr(pool, "_processes", {}).values()):
                process.join(max(0.0, deadline - time.monotonic()))
        pool.shutdown(wait=not abandon, cancel_futures=True)
