"""Videos on a Ray cluster (`s2d analyze --ray ADDRESS`): each video is a Ray task (one CPU, or `gpus_per_worker`
GPUs) with Ray's retries; each Ray worker process keeps the models loaded between its tasks, so a model is loaded
once per worker process, not once per video. Ray does the scheduling; this hands it at most `workers` videos at
a time (a stop leaves nothing queued) and the driver writes what comes back, in the same dataset layout.

Tasks rather than actors: a task lost with its node is run again by Ray on any node with room, while an actor's
calls wait for the actor to restart, which never happens when the other nodes are full. Every node needs the same
Python environment (s2d installed) and the same paths: the videos and the model store on a shared volume.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterator

from s2d.batch.dispatch import Stop, bounded
from s2d.batch.worker import Job, Record, Worker, failed_record
from s2d.service.settings import Settings

log = logging.getLogger(__name__)

_workers: dict[str, Worker] = {}  # in a Ray worker process: settings (JSON) -> the Worker holding its models


def _analyse(settings: Settings, job: Job) -> Record:
    """The Ray task: one video, with this worker process's loaded models (loaded by its first task)."""
    import ray

    key = settings.model_dump_json()
    if key not in _workers:
        _workers[key] = Worker(settings, node_id=ray.get_runtime_context().get_node_id())
    return _workers[key].run(job)


def _finished(refs: list) -> list:
    import ray

    return ray.wait(refs, num_returns=1, timeout=0.2)[0]


def driver_options(address: str) -> dict:
    """ray.init options for a driver of the cluster at `address`: on a loopback address, the driver stays on it too.
    Left to itself a driver takes the address its traffic leaves from, and Ray swaps a loopback one for the machine's
    outward address, so a cluster kept on loopback would be reached from outside it."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return {"_node_ip_address": host}
    return {}


class RayPool:
    def __init__(self, settings: Settings, address: str, workers: int | None, gpus_per_worker: float, retries: int):
        import ray

        # Connect before the driver's SIGINT handler is installed (run.run_batch), so that Ray does not replace it.
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **driver_options(address))
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) / gpus_per_worker if gpus_per_worker else resources.get("CPU", 1)
        self.workers = max(1, workers or int(slots))
        self.settings = settings
        self.task = ray.remote(_analyse).options(
            num_cpus=1, num_gpus=gpus_per_worker, max_retries=retries, retry_exceptions=False
        )
        log.info("Ray cluster at %s: %s; %d videos at a time", address, resources, self.workers)

    def run(self, jobs: list[Job], stop: Stop) -> Iterator[Record]:
        """Records as videos finish (see dispatch.bounded for `stop`)."""
        import ray

        settings = ray.put(self.settings)
        inflight: dict = {}
        try:
            for job, ref in bounded(
                jobs, self.workers, stop, lambda j: self.task.remote(settings, j), _finished, inflight
            ):
                yield self._record(job, ref)
        finally:
            for ref in inflight:  # abandoned: Ray stops them (the driver's exit would too)
                ray.cancel(ref, force=True)
            ray.shutdown()

    @staticmethod
    def _record(job: Job, ref) -> Record:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:  # its retries spent: nodes or worker processes lost each time
            log.error("%s was lost on the cluster: %s", job.video.path, err)
            return failed_record(job, "worker_lost", f"lost on the Ray cluster after its retries: {err}")
