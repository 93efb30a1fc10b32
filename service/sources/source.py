"""One server-side source: a URL read with PyAV in a reader thread, its frames through a `LiveStream` (the face
pipeline, tracker, windows, batcher and smoothing of `/v1/stream`), its events fanned out to subscribers.

Reading: every frame is decoded (an H.264 stream's frames reference earlier ones, and FFmpeg's `skip_frame=NONKEY`
would leave one frame per GOP, seconds apart: too few for windows), but only the frames taken at the stream's rate
are converted to RGB arrays, the costly step (service.media.container_frames). A taken frame waits for the event loop
in a one-frame mailbox (a newer one replaces it), so a busy loop never lets frames pile up.

Connections: a source that drops (the media ends on rtsp, an error, no data for `read_timeout_s`) reconnects after
a back-off doubling from `backoff_s[0]` to `backoff_s[1]`; `max_attempts` failed connections in a row (a
connection that delivered frames resets the count) make it `failed`, as does anything that will not change on a retry
(frames over the size limit, no video stream, a host the allow-list no longer holds). An http(s) URL whose media ends
(an HLS VOD playlist, a file) is `ended`. Stream time runs on across reconnections (the gap included), so windows,
tracks and smoothing carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from s2d.service import metrics
from s2d.service.errors import MediaError, MediaTooLargeError, SourceNotAllowedError, UnsupportedMediaError
from s2d.service.media import MediaLimits, container_frames, decoder_message, open_url
from s2d.service.schemas import (
    SourceFrames,
    SourceInfo,
    SourceOptions,
    SourceRequest,
    StreamOptions,
    StreamResult,
    TrackResults,
)
from s2d.service.sources.fetch import CheckedHttp
from s2d.service.sources.policy import AllowList, Pinned, parse_url, redact
from s2d.service.sources.rtsp_relay import RtspRelay
from s2d.service.streams import (
    CLOSE_NORMAL,
    LiveStream,
    Outbox,
    StreamConfig,
    StreamHello,
    drain_task,
    event_type,
)

log = logging.getLogger(__name__)

# FFmpeg protocols a source may use: never `file` (an HLS playlist could name local files as its segments), `data`,
# `concat` or `subfile` (a source's http(s) requests are ours anyway: service.sources.fetch). The demuxers an HTTP
# source may use: video containers and HLS with its segments' formats; none that opens other URLs by itself (concat,
# dash, image2...). Probing reads half a second, not FFmpeg's default of several, before the first frame.
_PROTOCOLS = {"rtsp": "rtsp,rtp,srtp,udp,tcp,tls", "http": "http,https,tcp,tls,crypto,httpproxy"}
_HTTP_FORMATS = "hls,mpegts,mov,matroska,flv,mjpeg,mpjpeg,h264,hevc,aac,mp3,ac3,eac3,webvtt"
# The HLS demuxer's keep-alive reuses the last segment's connection as FFmpeg's own HTTP context; our requests are
# not one (FFmpeg 8 aborts the process on its assertion): every segment is a new request through CheckedHttp.
_HLS = {"http_persistent": "0"}
_PROBE = {"analyzeduration": "500000", "probesize": "500000"}


@dataclass(frozen=True)
class SourceConfig:
    """What the settings fix for every source."""

    max_pixels: int
    max_fps: float
    open_timeout_s: float
    read_timeout_s: float
    backoff_s: tuple[float, float]
    max_attempts: int
    results_per_track: int
    results_tracks: int

    @classmethod
    def from_settings(cls, settings) -> SourceConfig:
        return cls(
            max_pixels=min(settings.sources_max_pixels, settings.max_pixels), max_fps=settings.sources_max_fps,
            open_timeout_s=settings.sources_open_timeout_s, read_timeout_s=settings.sources_read_timeout_s,
            backoff_s=settings.sources_backoff_s, max_attempts=settings.sources_max_attempts,
            results_per_track=settings.sources_results_per_track, results_tracks=settings.sources_results_tracks,
        )  # fmt: skip


def ffmpeg_options(url: str, options: SourceOptions) -> dict[str, str]:
    """FFmpeg options for a source URL (also `s2d watch`): the protocols it may use, a short probe; RTSP transport."""
    if url.lower().startswith("rtsp"):
        return {"protocol_whitelist": _PROTOCOLS["rtsp"], "rtsp_transport": options.rtsp_transport, **_PROBE}
    return {"protocol_whitelist": _PROTOCOLS["http"], "format_whitelist": _HTTP_FORMATS, **_HLS, **_PROBE}


class ResultStore:
    """The last results per track, for the most recently seen tracks (bounded both ways)."""

    def __init__(self, per_track: int, tracks: int):
        self.per_track, self.max_tracks = per_track, tracks
        self._tracks: OrderedDict[int, deque[StreamResult]] = OrderedDict()
        self.count = 0

    def add(self, event: StreamResult) -> None:
        track_id = event.track_id
        results = self._tracks.pop(track_id, None) or deque(maxlen=self.per_track)
        results.append(event)
        self._tracks[track_id] = results  # the most recent track last
        if len(self._tracks) > self.max_tracks:
            self._tracks.popitem(last=False)
        self.count += 1

    def last(self, n: int | None = None) -> list[TrackResults]:
        return [TrackResults(track_id=t, results=list(r)[-(n or len(r)) :]) for t, r in sorted(self._tracks.items())]


class _Mailbox:
    """The newest taken frame on its way from the reader thread to the event loop: at most one waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver, on_replaced):
        self._loop, self._deliver, self._on_replaced = loop, deliver, on_replaced
        self._lock = threading.Lock()
        self._item: tuple | None = None

    def put(self, *item) -> None:
        with self._lock:
            replaced, self._item = self._item is not None, item
        if replaced:
            self._on_replaced()
        else:
            self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            item, self._item = self._item, None
        if item is not None:
            self._deliver(*item)


class _Connection:
    """What one reader thread learned about its connection (read by the event loop once the thread is done)."""

    def __init__(self):
        self.decoded = 0  # frames FFmpeg decoded
        self.frames = 0  # frames taken
        self.ended = False  # the media ended (no error)


class Source:
    def __init__(
        self, source_id: str, request: SourceRequest, model, window_s: float, hop_s: float, config: SourceConfig,
        stream_config: StreamConfig, executor: Executor, readers: Executor, allow: AllowList, on_state,
        pinned: Pinned | None = None,
    ):  # fmt: skip
        self.id, self.request, self.config, self.allow = source_id, request, config, allow
        self._pinned = pinned  # the host as checked when the source was created: its first connection's
        self.readers, self._on_state = readers, on_state
        options = request.options
        analysis = options.model_dump(include=set(StreamOptions.model_fields))
        hello = StreamHello(type="hello", model=model.name, **analysis | {"fps": min(options.fps, config.max_fps)})
        self.live = LiveStream(hello, model, window_s, hop_s, stream_config, executor, origin="source")
        self.realtime = options.realtime if options.realtime is not None else not request.url.lower().startswith("rtsp")
        self.media_limits = MediaLimits(max_pixels=config.max_pixels, max_duration_s=math.inf, max_bytes=None)
        self.results = ResultStore(config.results_per_track, config.results_tracks)
        self.subscribers: set[Outbox] = set()
        self.frames = SourceFrames()
        self.state, self.state_since, self.created_at = "connecting", time.time(), time.time()
        self.attempts = self.reconnects = 0
        self.last_error: str | None = None
        self.final: dict | None = None  # the `end` event, for subscribers who come later
        self._stop = threading.Event()  # seen by the reader thread between frames
        self._stopping = asyncio.Event()
        self._last_ts_ms: float | None = None  # the stream time of the last frame taken, and when (monotonic)
        self._last_taken_at = 0.0
        self._seq = 0
        self._tasks: list[asyncio.Task] = []

    # ---- life ------------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._publish_state()
        self._tasks = [
            asyncio.create_task(self._connections(), name=f"source-{self.id}-connect"),
            asyncio.create_task(self.live.process(), name=f"source-{self.id}-process"),
            asyncio.create_task(self._pump(), name=f"source-{self.id}-events"),
            asyncio.create_task(self.live.tick(), name=f"source-{self.id}-stats"),
        ]

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks[:3])

    def stop(self, reason: str = "stopped") -> None:
        """No more frames: the last windows are classified, the `end` event goes out, subscribers are closed."""
        if not self._stopping.is_set():
            if self.state not in ("ended", "failed"):  # (a source already over keeps why it ended)
                self.last_error = reason
            self._stop.set()
            self._stopping.set()

    def close(self, code: int, reason: str) -> None:
        """Stop and close every subscriber with `code` (the server shutting down: 1001) after an error saying so."""
        for box in self.subscribers:
            box.put({"type": "error", "code": "shutting_down", "message": reason, "fatal": True})
            box.close(code, reason)
        self.stop(reason)

    async def wait(self, timeout: float) -> None:
        """Until the source has wound down (its last windows classified), at most `timeout` seconds; then cancelled."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks[:3], return_exceptions=True), timeout)
        for task in self._tasks:
            await drain_task(task)
        self.live.release()

    # ---- connections -----------------------------------------------------------------------------------------------
    async def _connections(self) -> None:
        try:
            while not self._stopping.is_set():
                outcome, error = await self._connect_once()
                if self._stopping.is_set():
                    break
                if outcome in ("ended", "failed"):
                    self._set_state(outcome, error)
                    return
                self.attempts = 0 if outcome == "dropped" else self.attempts + 1
                if self.attempts >= self.config.max_attempts:
                    self._set_state("failed", f"{self.attempts} connection attempts failed in a row; the last: {error}")
                    break
                self._set_state("reconnecting", error)
                await self._back_off()
                self.reconnects += 1
                metrics.SOURCE_RECONNECTS.labels(self.id).inc()
        finally:
            if self.state not in ("ended", "failed"):
                self._set_state("ended", self.last_error)
            self.live.frames.end()  # the processor classifies what it has, then sends `end`

    async def _connect_once(self) -> tuple[str, str | None]:
        """One connection, and how it went: "ended" (the media ran out), "dropped" (after frames), "refused" (no
        frame), "failed" (a retry cannot help) or "stopped"; with the error."""
        connection = _Connection()
        try:
            # Resolved and checked once per connection (the creation's lookup serves the first): names can move,
            # and the connection goes to the address checked, never to a second lookup.
            pinned, self._pinned = self._pinned or await self.allow.check(self.request.url), None
            loop = asyncio.get_running_loop()
            reading = loop.run_in_executor(self.readers, self._read, loop, connection, pinned)
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not reading.done():
                return "stopped", None  # the reader thread notices at its next frame or read timeout
            reading.result()
        except (SourceNotAllowedError, MediaTooLargeError, UnsupportedMediaError) as err:
            return "failed", err.message  # a retry would get the same answer
        except MediaError as err:
            return ("dropped" if connection.frames else "refused"), err.message
        except Exception as err:  # anything FFmpeg raises outside decoding: the same as a drop
            log.warning("source %s: %s", self.id, err, exc_info=err)
            return ("dropped" if connection.frames else "refused"), decoder_message(err)
        if connection.ended and not self.request.url.lower().startswith("rtsp"):
            return "ended", None  # an HLS VOD playlist or a file over HTTP was read to its end
        return ("dropped" if connection.frames else "refused"), "the stream ended"

    async def _back_off(self) -> None:
        first, most = self.config.backoff_s
        delay = min(first * 2 ** max(self.attempts - 1, 0), most)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _read(self, loop: asyncio.AbstractEventLoop, connection: _Connection, pinned: Pinned) -> None:
        """In a reader thread: open, take frames at the stream's rate until the media ends, an error, or stop.
        RTSP over TCP: through our relay to the checked address (service.sources.rtsp_relay: no redirect followed);
        rtsps, or RTSP with media over UDP: FFmpeg connects to the checked address itself; http(s): every request
        FFmpeg makes is ours (service.sources.fetch)."""
        url, timeout = self.request.url, (self.config.open_timeout_s, self.config.read_timeout_s)
        options, parts = ffmpeg_options(url, self.request.options), parse_url(url)
        if parts.scheme.lower() == "rtsps" or (parts.scheme.lower() == "rtsp" and options["rtsp_transport"] != "tcp"):
            # FFmpeg connects to the checked address itself (TLS, or media over UDP: nothing a relay could read).
            container = open_url(pinned.url(parts), limits=self.media_limits, options=options, timeout=timeout)
            self._read_container(loop, connection, container, None)
            return
        if parts.scheme.lower() == "rtsp":  # over TCP: through our relay, which refuses redirects
            guard: CheckedHttp | RtspRelay = RtspRelay(pinned, timeout[0])
            target, io_open = guard.url(parts), None
        else:  # http(s): every request FFmpeg makes is ours
            guard = CheckedHttp(self.allow, timeout, [pinned])
            target, io_open = url, guard.io_open
        try:
            container = open_url(target, limits=self.media_limits, options=options, timeout=timeout, io_open=io_open)
            self._read_container(loop, connection, container, guard)
        except Exception:
            if (refused := guard.refused()) is not None:  # the reason, not FFmpeg's word for what followed
                raise refused from None
            raise
        finally:
            guard.close()
        if (refused := guard.refused()) is not None:  # e.g. a playlist's segment FFmpeg skipped: not an end
            raise refused

    def _read_container(self, loop, connection: _Connection, container, guard: CheckedHttp | RtspRelay | None) -> None:
        mailbox = _Mailbox(loop, self._deliver, self._replaced)
        with container:
            wall0 = offset_ms = None
            for frame in container_frames(container, limits=self.media_limits, max_fps=self.live.fps):
                if self._stop.is_set():
                    return
                if guard is not None and (refused := guard.refused()) is not None:
                    raise refused
                if wall0 is None:  # this connection's first frame: stream time goes on from the last one
                    wall0, offset_ms = time.monotonic() - frame.t, self._offset_ms()
                    loop.call_soon_threadsafe(self._live)
                if self.realtime and self._stop.wait(max(0.0, wall0 + frame.t - time.monotonic())):
                    return
                self._count_decoded(frame.index + 1 - connection.decoded)
                connection.decoded, connection.frames, self._seq = frame.index + 1, connection.frames + 1, self._seq + 1
                mailbox.put(frame.image, offset_ms + frame.t * 1000, self._seq, time.monotonic())
            connection.ended = True

    def _offset_ms(self) -> float:
        if self._last_ts_ms is None:
            return 0.0
        return self._last_ts_ms + max((time.monotonic() - self._last_taken_at) * 1000, 1.0)

    def _count_decoded(self, n: int) -> None:
        """In the reader thread (the loop only reads the count)."""
        self.frames.decoded += n
        metrics.SOURCE_FRAMES.labels(self.id, "decoded").inc(n)

    def _deliver(self, image, ts_ms: float, seq: int, arrived: float) -> None:
        """On the event loop: a taken frame into the live stream (unless the source is stopping)."""
        if self._stopping.is_set() or self.live.frames.ended:
            return
        self._last_ts_ms, self._last_taken_at = ts_ms, arrived
        self.frames.taken += 1
        metrics.SOURCE_FRAMES.labels(self.id, "taken").inc()
        self.live.on_image(image, ts_ms, seq, arrived)

    def _replaced(self) -> None:
        self.frames.replaced += 1  # (in the reader thread; read on the loop: a plain int is enough)

    def _live(self) -> None:
        if not self._stopping.is_set():
            self.attempts = 0
            self._set_state("live", None)

    # ---- state and events ------------------------------------------------------------------------------------------
    def _set_state(self, state: str, error: str | None) -> None:
        if state == self.state and error == self.last_error:
            return
        self.state, self.state_since = state, time.time()
        if error is not None:  # kept while live again: why the last connection dropped
            self.last_error = error
        self._publish_state()

    def _publish_state(self) -> None:
        self._on_state(self)
        self._publish({"type": "source", **self.info().model_dump()})

    def _publish(self, event: dict[str, Any], droppable: bool = False) -> None:
        for box in self.subscribers:
            box.put(event, droppable=droppable)

    async def _pump(self) -> None:
        """The live stream's events to the results store and the subscribers, until its `end`."""
        while (event := await self.live.outbox.get()) is not None:
            kind = event_type(event)
            if isinstance(event, StreamResult):
                self.results.add(event)
                metrics.SOURCE_WINDOWS.labels(self.id).inc()
            elif kind == "end":
                self.final = event
            self._publish(event, droppable=kind in ("tracks", "stats") or (kind == "error" and not event["fatal"]))
        for box in self.subscribers:
            box.close(CLOSE_NORMAL, "source ended")
        self.subscribers.clear()
        await drain_task(self._tasks[3])  # no stats after the end

    def subscribe(self, queue: int) -> Outbox:
        """An outbox of this source's events from now on, after a `source` and a `ready` event (and, once the source
        is over, its `end`); the caller sends it and `unsubscribe`s."""
        box = Outbox(queue)
        box.put({"type": "source", **self.info().model_dump()})
        box.put(self.live.ready_event())
        if self.final is not None or not self.running:
            if self.final is not None:
                box.put(self.final)
            box.close(CLOSE_NORMAL, "source ended")
        else:
            self.subscribers.add(box)
        return box

    def unsubscribe(self, box: Outbox) -> None:
        self.subscribers.discard(box)

    def info(self) -> SourceInfo:
        stats = self.live.stats
        notes = []
        if self.live.hello.mode == "faces" and stats.frames_processed and not stats.faces:
            notes.append(f"no face was found in {stats.frames_processed} frames")
        return SourceInfo(
            id=self.id, name=self.request.name, url=redact(self.request.url), model=self.live.model.name,
            state=self.state, state_since=self.state_since, created_at=self.created_at, attempts=self.attempts,
            reconnects=self.reconnects, last_error=self.last_error, frames=self.frames.model_copy(),
            stream=stats.as_dict(), faces_detected=stats.faces, results=self.results.count,
            options=self.request.options, notes=notes,
        )  # fmt: skip
