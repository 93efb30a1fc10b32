"""The server-side sources of one application: create (checked against the settings and the allow-list), list,
stop; their state in the metrics; all closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor

from s2d.service import metrics
from s2d.service.analysis import resolve_window
from s2d.service.errors import NotFoundError, SourcesDisabledError, TooManySourcesError
from s2d.service.schemas import SourceRequest
from s2d.service.settings import Limits
from s2d.service.sources.policy import AllowList, Resolver, parse_url
from s2d.service.sources.source import Source, SourceConfig
from s2d.service.streams import CLOSE_GOING_AWAY, StreamConfig

STOP_TIMEOUT_S = 10.0  # a stopped source's last windows are classified within this (then cancelled)


class SourceManager:
    def __init__(self, settings, registry, executor: Executor, limits: Limits, stream_config: StreamConfig):
        self.enabled = settings.sources_enabled
        # A bad entry stops the start-up, with its reason.
        self.allow = AllowList.parse(settings.sources_allow, Resolver(settings.sources_dns_server))
        self.max_sources = settings.sources_max
        self.registry, self.executor, self.limits = registry, executor, limits
        self.config = SourceConfig.from_settings(settings)
        self.stream_config = stream_config
        self.send_queue = settings.stream_send_queue
        self.sources: dict[str, Source] = {}
        # One reader thread per connection (blocking network reads); room for the readers of deleted sources that
        # still wait for their read timeout.
        self.readers = ThreadPoolExecutor(2 * settings.sources_max, thread_name_prefix="s2d-source")

    def check_enabled(self) -> None:
        if not self.enabled:
            raise SourcesDisabledError()

    @property
    def active(self) -> int:
        return sum(1 for s in self.sources.values() if s.state not in ("ended", "failed"))

    @property
    def running(self) -> bool:
        """Some source is still winding down (the shutdown drain waits for it)."""
        return any(s.running for s in self.sources.values())

    async def create(self, request: SourceRequest) -> Source:
        """Start a source: 403 when off or not allowed, 422 for a scheme or window refused, 404 / 503 for the model,
        409 when as many as allowed run."""
        self.check_enabled()
        parse_url(request.url)
        model = self.registry.get(request.model)
        window_s, hop_s = resolve_window(model.stored.card.window_seconds, request.options, self.limits)
        pinned = await self.allow.check(request.url)  # the first connection goes to this address
        if self.active >= self.max_sources:  # (after the await: no other create can slip in between)
            raise TooManySourcesError(f"{self.active} sources are running, the most allowed; stop one first",
                                      details={"max_sources": self.max_sources})  # fmt: skip
        self._forget_finished()
        source_id = uuid.uuid4().hex[:12]
        source = Source(source_id, request, model, window_s, hop_s, self.config, self.stream_config, self.executor,
                        self.readers, self.allow, self._state_changed, pinned)  # fmt: skip
        self.sources[source_id] = source
        source.start()
        return source

    def get(self, source_id: str) -> Source:
        self.check_enabled()
        source = self.sources.get(source_id)
        if source is None:
            raise NotFoundError(f"no source {source_id!r}", details={"source_id": source_id})
        return source

    async def delete(self, source_id: str) -> Source:
        """Stop the source (its last windows are classified and sent) and forget it."""
        source = self.get(source_id)
        source.stop()
        await source.wait(STOP_TIMEOUT_S)
        self._remove(source)
        return source

    def close_all(self, reason: str) -> int:
        """The first SIGTERM: close every source's subscribers with 1001 and stop it; returns how many were running."""
        running = [s for s in self.sources.values() if s.running]
        for source in running:
            source.close(CLOSE_GOING_AWAY, reason)
        return len(running)

    async def stop(self) -> None:
        for source in self.sources.values():
            source.stop("server stopped")
        await asyncio.gather(*(s.wait(STOP_TIMEOUT_S) for s in self.sources.values()))
        self.readers.shutdown(wait=False, cancel_futures=True)

    def _forget_finished(self) -> None:
        """Keep at most `max_sources` finished sources listed (the oldest go), so their state stays readable."""
        finished = sorted((s for s in self.sources.values() if not s.running), key=lambda s: s.state_since)
        for source in finished[: max(0, len(finished) - self.max_sources)]:
            self._remove(source)

    def _remove(self, source: Source) -> None:
        self.sources.pop(source.id, None)
        series = [(metrics.SOURCE_STATE, state) for state in metrics.SOURCE_STATES]
        series += [(metrics.SOURCE_FRAMES, "decoded"), (metrics.SOURCE_FRAMES, "taken")]
        for metric, *labels in [*series, (metrics.SOURCE_WINDOWS,), (metrics.SOURCE_RECONNECTS,)]:
            with contextlib.suppress(KeyError):  # never counted
                metric.remove(source.id, *labels)
        self._state_changed(None)

    def _state_changed(self, source: Source | None) -> None:
        if source is not None:
            for state in metrics.SOURCE_STATES:
                metrics.SOURCE_STATE.labels(source.id, state).set(1 if state == source.state else 0)
        for state in metrics.SOURCE_STATES:
            metrics.SOURCES.labels(state).set(sum(1 for s in self.sources.values() if s.state == state))
