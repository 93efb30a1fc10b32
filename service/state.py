"""The application state: everything the routes use, built once in the lifespan (`AppState.start`) and handed to
them by `Depends` (service.deps). Nothing is created lazily in a route."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from s2d.service import metrics
from s2d.service.capacity import Slots
from s2d.service.gpu import install_gpu_metrics
from s2d.service.registry import ModelRegistry
from s2d.service.settings import Limits, Settings
from s2d.service.shutdown import Shutdown
from s2d.service.sources import SourceManager
from s2d.service.streams import StreamConfig, StreamHub
from s2d.service.uploads import UploadPace, remove_own_spool_files, sweep_stale_spool_files

SHUTTING_DOWN = "server shutting down"  # the close reason live streams get on SIGTERM


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry  # the models, their sessions and batchers
    executor: ThreadPoolExecutor  # decoding and face finding (REST uploads and live streams share it)
    limits: Limits  # what clients may ask for (windows, hops, media sizes)
    stream_config: StreamConfig  # what every live stream and source stream is held to
    requests: Slots  # uploads being worked on (max_active_requests)
    uploads: Slots  # uploads being received (max_active_uploads)
    upload_pace: UploadPace
    streams: StreamHub
    sources: SourceManager  # server-side sources (RTSP / HLS / HTTP URLs the server pulls)
    shutdown: Shutdown

    @classmethod
    def start(cls, settings: Settings) -> AppState:
        """Load every model (raises: the server does not start without them) and start the batchers; warming up
        is the caller's (it runs in the background while /readyz says 503)."""
        sweep_stale_spool_files(settings.upload_dir)
        registry = ModelRegistry(settings)
        registry.load()
        if settings.engine in ("auto", "onnxruntime"):  # NVML gauges when this process runs on a GPU (Triton: its own)
            install_gpu_metrics(settings.providers, settings.device_id)
        registry.start()
        executor = ThreadPoolExecutor(settings.pipeline_threads, thread_name_prefix="s2d-pipeline")
        limits = Limits.from_settings(settings)
        stream_config = StreamConfig.from_settings(settings)
        return cls(
            settings=settings,
            registry=registry,
            executor=executor,
            limits=limits,
            stream_config=stream_config,
            requests=Slots(settings.max_active_requests, metrics.ACTIVE_REQUESTS),
            uploads=Slots(settings.max_active_uploads, metrics.ACTIVE_UPLOADS),
            upload_pace=UploadPace.from_settings(settings),
            streams=StreamHub(settings.stream_max_streams, executor),
            sources=SourceManager(settings, registry, executor, limits, stream_config),
            shutdown=Shutdown(settings.shutdown_grace_s),
        )

    async def stop(self) -> None:
        await self.sources.stop()  # (their last windows need the batchers)
        await self.registry.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        remove_own_spool_files(self.settings.upload_dir)

    async def drain(self) -> None:
        """The first SIGTERM (service.server): stop being ready, close live streams and the subscribers of sources
        with 1001 (sources stop), let requests in flight finish for up to `shutdown_grace_s`, refuse the rest with
        503 (service.shutdown)."""
        await self.shutdown.drain(
            close_streams=lambda: self.streams.close_all(SHUTTING_DOWN) + self.sources.close_all(SHUTTING_DOWN),
            streams_open=lambda: bool(self.streams.open) or self.sources.running,
        )
