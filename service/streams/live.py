"""One live stream: frames through the face pipeline to the model's batcher, results and stats as events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from s2d.service import metrics
from s2d.service.errors import BusyError, DeadlineError, ProtocolError, ServiceError
from s2d.service.schemas import Prediction, StreamResult
from s2d.service.smoothing import TrackSmoother
from s2d.service.streams.buffers import FrameBuffer, Outbox
from s2d.service.streams.protocol import (
    CLOSE_NORMAL,
    FRAME_DROP_REASONS,
    SUBPROTOCOL,
    WINDOW_DROP_REASONS,
    FrameMessage,
    StreamHello,
    check_image,
    decode_checked,
    decode_image,
    parse_frame,
)

if TYPE_CHECKING:
    from s2d.service.registry import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class StreamConfig:
    """What the service settings fix for every stream."""

    max_frame_bytes: int
    max_pixels: int
    max_fps: float
    frame_buffer: int
    send_queue: int
    send_timeout_s: float
    window_deadline_s: float
    idle_timeout_s: float
    detector: str | None
    insightface_root: Path | None
    detect_every: int
    detect_interval_s: float = 0.0  # > 0: detections this many seconds apart at the stream's rate, not detect_every
    decode_only_used: bool = False  # faces mode: decode and refine only the frames detection or a window uses
    detect_size_ratio: float = 0.0  # see FacePipeline
    full_detect_every: int = 1
    extra_frame_delay_s: float = 0.0  # fault injection (settings.fault_frame_delay_ms)

    @classmethod
    def from_settings(cls, settings) -> StreamConfig:
        """What `service.settings.Settings` fixes for every stream (WebSocket streams and server-side sources)."""
        return cls(
            max_frame_bytes=settings.stream_max_frame_bytes,
            max_pixels=min(settings.stream_max_pixels, settings.max_pixels),
            max_fps=settings.stream_max_fps,
            frame_buffer=settings.stream_frame_buffer,
            send_queue=settings.stream_send_queue,
            send_timeout_s=settings.stream_send_timeout_s,
            window_deadline_s=settings.stream_window_deadline_s,
            idle_timeout_s=settings.stream_idle_timeout_s,
            detector=settings.detector,
            insightface_root=settings.insightface_root,
            detect_every=settings.detect_every,
            detect_interval_s=settings.stream_detect_interval_s,
            decode_only_used=settings.stream_decode_only_used,
            detect_size_ratio=settings.stream_detect_size_ratio,
            full_detect_every=settings.stream_full_detect_every,
            extra_frame_delay_s=settings.fault_frame_delay_ms / 1000,
        )

    def detect_every_frames(self, fps: float) -> int:
        """Frames between a stream's full detections: `detect_interval_s` at the stream's rate when set (a live
        stream's cost per frame is mostly detection, and ONet follows the tracked faces in between: BENCHMARKS.md,
        issue 28), else `detect_every` as for uploads."""
        if self.detect_interval_s <= 0:
            return self.detect_every
        return max(1, round(self.detect_interval_s * fps))


@dataclass
class _Processed:
    """What a pipeline thread made of one frame (the newest waiting one when it started)."""

    frame: FrameMessage
    tracks: list = field(default_factory=list)  # (track_id, box [4], score) of the faces in the frame
    windows: list = field(default_factory=list)  # windows completed by this frame
    size: tuple[int, int] = (0, 0)  # (width, height)
    skipped: int = 0  # older frames replaced by this one: counted as dropped (`behind`)
    error: ProtocolError | None = None  # the frame could not be decoded
    undecodable: list = field(default_factory=list)  # (seq, error) of earlier deferred frames a window picked


@dataclass
class _TrackSlot:
    """At most one window of the track in the batcher (`inflight`) and one waiting for it (`waiting`)."""

    inflight: asyncio.Task | None = None
    waiting: tuple[Any, FrameMessage] | None = None  # (Window, the frame that completed it)
    smoother: TrackSmoother | None = None


@dataclass
class StreamStats:
    frames_received: int = 0
    frames_processed: int = 0
    frames_dropped: Counter = field(default_factory=Counter)
    faces: int = 0
    windows_submitted: int = 0
    windows_classified: int = 0
    windows_dropped: Counter = field(default_factory=Counter)
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=200))  # server-side, recent results

    def as_dict(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        return {
            "frames": {
                "received": self.frames_received,
                "processed": self.frames_processed,
                "dropped": {r: self.frames_dropped[r] for r in FRAME_DROP_REASONS},
                "dropped_total": sum(self.frames_dropped.values()),
            },
            "windows": {
                "submitted": self.windows_submitted,
                "classified": self.windows_classified,
                "dropped": {r: self.windows_dropped[r] for r in WINDOW_DROP_REASONS},
            },
            "latency_ms": None
            if lat is None
            else {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "n": len(lat)},
        }


class LiveStream:
    """One stream: frames -> face pipeline (in the shared pipeline executor) -> the model's batcher.

    The WebSocket endpoint feeds `on_frame` (encoded images) and a server-side source `on_image` (frames it decoded
    itself); everything after decoding is the same. The owner sends what `outbox.get()` yields; all state changes
    happen on the event loop, the face pipeline runs in a worker thread one frame at a time. `origin` labels the
    frame and face counters (`stream`, `source`).
    """

    def __init__(
        self, hello: StreamHello, model: LoadedModel, window_s: float, hop_s: float, config: StreamConfig,
        executor: Executor,
        origin: str = "stream",
    ):  # fmt: skip
        from s2d.service.faces import AlignedWindows, FacePipeline

        self.hello, self.model, self.config, self.executor = hello, model, config, executor
        self.origin = origin
        card = model.stored.card
        self.classes: list[str] = card.classes
        self.window_s, self.hop_s = window_s, hop_s
        self.fps = min(hello.fps, config.max_fps)
        self.stats = StreamStats()
        self.outbox = Outbox(config.send_queue)
        self.frames = FrameBuffer(config.frame_buffer, self._drop_frame)
        self.tracks: dict[int, _TrackSlot] = {}
        self._t0_ms: float | None = None  # timestamp of the first frame
        self._last_ts: float | None = None  # of the last frame accepted
        self._last_tracks_sent = -np.inf
        self._had_tracks = False
        self.pipeline: FacePipeline | None = None
        self.aligned: AlignedWindows | None = None
        self.detect_every = config.detect_every_frames(self.fps)
        if hello.mode == "faces":
            self.pipeline = FacePipeline(
                None, card.num_frames, window_s, hop_s, detect_every=self.detect_every,
                detect_size_ratio=config.detect_size_ratio, full_detect_every=config.full_detect_every,
                frame_interval_s=1 / self.fps if config.decode_only_used else None,
            )  # fmt: skip  # detector: set per call (one per worker thread; detectors are not thread-safe)
        else:
            self.aligned = AlignedWindows(card.num_frames, window_s, hop_s, card.input.height)

    # ---- events ----------------------------------------------------------------------------------------------------
    def ready_event(self) -> dict[str, Any]:
        c, card = self.config, self.model.stored.card
        return {
            "type": "ready",
            "protocol": SUBPROTOCOL,
            "model": self.model.ref(),
            "classes": self.classes,
            "mode": self.hello.mode,
            "window": {"num_frames": card.num_frames, "window_seconds": self.window_s, "hop_seconds": self.hop_s},
            "detect_every_frames": self.detect_every if self.pipeline is not None else None,
            "smoothing": {"method": self.hello.smoothing, "ema_alpha": self.hello.ema_alpha,
                          "hysteresis": self.hello.hysteresis},
            "limits": {"fps": self.fps, "max_frame_bytes": c.max_frame_bytes, "max_pixels": c.max_pixels,
                       "frame_buffer": c.frame_buffer, "idle_timeout_s": c.idle_timeout_s},
        }  # fmt: skip

    def error(self, code: str, message: str, fatal: bool = False) -> None:
        self.outbox.put({"type": "error", "code": code, "message": message, "fatal": fatal}, droppable=not fatal)

    def stats_event(self, final: bool = False) -> dict[str, Any]:
        body = self.stats.as_dict()
        body.update(type="end" if final else "stats", events_dropped=self.outbox.dropped,
                    active_tracks=sum(1 for s in self.tracks.values() if s.inflight or s.waiting))  # fmt: skip
        return body

    # ---- frames in -------------------------------------------------------------------------------------------------
    def _drop_frame(self, reason: str) -> None:
        self.stats.frames_dropped[reason] += 1
        metrics.FRAMES_DROPPED.labels(reason).inc()

    def on_frame(self, data: bytes, arrived: float) -> None:
        """A binary message: checked here (cheap), decoded later by the processor."""
        self.stats.frames_received += 1
        try:
            frame = parse_frame(data, self.config.max_frame_bytes, arrived)
        except ProtocolError as err:
            self._drop_frame("too_large" if err.code == "too_large" else "malformed")
            self.error(err.code, err.message)
            return
        self._accept(frame)

    def on_image(self, image: np.ndarray, ts_ms: float, seq: int, arrived: float) -> None:
        """A frame decoded already (uint8 RGB [H, W, 3], its size checked by whoever decoded it): from here on the
        same path as an encoded frame."""
        self.stats.frames_received += 1
        self._accept(FrameMessage(seq=seq, ts=ts_ms, payload=b"", arrived=arrived, image=image))

    def _accept(self, frame: FrameMessage) -> None:
        """Timestamps in order and at most the stream's rate; then the frame waits for the pipeline."""
        if self._last_ts is not None:
            if frame.ts <= self._last_ts:
                self._drop_frame("out_of_order")
                self.error("out_of_order", f"frame {frame.seq}: timestamp {frame.ts} is not after {self._last_ts}")
                return
            if frame.ts - self._last_ts < 500.0 / self.fps:  # half an interval: jitter and catch-up pass
                self._drop_frame("rate")
                return
        if self._t0_ms is None:
            self._t0_ms = frame.ts
        self._last_ts = frame.ts
        self.frames.put(frame)

    # ---- processing ------------------------------------------------------------------------------------------------
    def _process(self, frame: FrameMessage) -> _Processed:
        """In a pipeline thread: swap in the newest waiting frame, decode it, find faces, cut windows."""
        if self.config.extra_frame_delay_s:
            time.sleep(self.config.extra_frame_delay_s)
        skipped = 0
        if not self.frames.ended:  # after `end` every buffered frame is classified, in order
            newer, skipped = self.frames.take_newer()
            if newer is not None:
                frame, skipped = newer, skipped + 1  # the frame this job was started for is stale too
        try:
            tracks, windows, size = self._detect(frame)
        except ProtocolError as err:
            return _Processed(frame, skipped=skipped, error=err, undecodable=self._undecodable())
        return _Processed(frame, tracks, windows, size, skipped, undecodable=self._undecodable())

    def _undecodable(self) -> list:
        return self.pipeline.take_undecodable() if self.pipeline is not None else []

    def _detect(self, frame: FrameMessage) -> tuple[list, list, tuple[int, int]]:
        """Decode, find faces, cut windows: (tracks, windows, (width, height))."""
        from s2d.service.faces import ALIGNED_TRACK, DeferredImage, thread_detector
        from s2d.service.media import Frame

        t = (frame.ts - self._t0_ms) / 1000.0
        if frame.image is not None:
            image = frame.image
            h, w = image.shape[:2]
        elif self.pipeline is not None and self.config.decode_only_used:  # the header checked now, pixels if used
            w, h = check_image(frame.payload, self.config.max_pixels)
            image = DeferredImage(partial(decode_checked, frame.payload))
        else:
            image = decode_image(frame.payload, self.config.max_pixels)
            h, w = image.shape[:2]
        if self.pipeline is not None:
            self.pipeline.detector = thread_detector(self.config.detector, self.config.insightface_root)
            tracks, windows = self.pipeline.push(Frame(index=frame.seq, t=t, image=image))
            if isinstance(image, DeferredImage) and image.decoded:  # its own size (EXIF may turn the header's)
                h, w = image.get().shape[:2]
            return [(tr.track_id, tr.box, tr.score) for tr in tracks], windows, (w, h)
        windows = self.aligned.push(Frame(index=frame.seq, t=t, image=image))
        return [(ALIGNED_TRACK, np.array([0, 0, w, h], np.float32), 1.0)], windows, (w, h)

    def _flush(self) -> list:
        return self.pipeline.flush() if self.pipeline is not None else self.aligned.flush()

    async def process(self) -> None:
        """Processor task: frames from the buffer through the pipeline until `end`, then the last windows."""
        loop = asyncio.get_running_loop()
        while (frame := await self.frames.get()) is not None:
            done = await loop.run_in_executor(self.executor, self._process, frame)
            for _ in range(done.skipped):
                self._drop_frame("behind")
            self._report_undecodable(done.undecodable)
            if (err := done.error) is not None:
                self._drop_frame(err.code if err.code in FRAME_DROP_REASONS else "undecodable")
                self.error(err.code, f"frame {done.frame.seq}: {err.message}")
                continue
            self.stats.frames_processed += 1
            self.stats.faces += len(done.tracks)
            metrics.FRAMES.labels(self.origin).inc()
            metrics.FACES.labels(self.origin).inc(len(done.tracks))
            self._send_tracks(done.frame, done.tracks, done.size)
            for window in done.windows:
                self._offer(window, done.frame)
        if self._t0_ms is not None:
            for window in await loop.run_in_executor(self.executor, self._flush):
                self._offer(window, None)
            self._report_undecodable(self._undecodable())
        while any(slot.inflight for slot in self.tracks.values()):
            await asyncio.gather(*(s.inflight for s in self.tracks.values() if s.inflight), return_exceptions=True)
        self.outbox.put(self.stats_event(final=True))
        self.outbox.close(CLOSE_NORMAL, "end of stream")

    def _report_undecodable(self, failed: list) -> None:
        """Frames whose header was sound, decoded only when a window picked them, whose data was not: the stream
        says so (the window used a grey crop in the frame's place)."""
        for seq, err in failed:
            message = getattr(err, "message", str(err))
            self.error("undecodable", f"frame {seq}: {message}; a window used a grey crop in its place")

    async def tick(self) -> None:
        """Periodic stats until cancelled (droppable: a slow reader loses these first)."""
        while True:
            await asyncio.sleep(self.hello.stats_interval_s)
            self.outbox.put(self.stats_event(), droppable=True)

    def _send_tracks(self, frame: FrameMessage, tracks: list, size: tuple[int, int]) -> None:
        rate = self.hello.tracks_fps
        now = time.monotonic()
        changed = bool(tracks) != self._had_tracks  # always tell when faces appear or all are gone
        if rate <= 0 or (now - self._last_tracks_sent < 1 / rate and not changed):
            return
        self._last_tracks_sent, self._had_tracks = now, bool(tracks)
        self.outbox.put(
            {"type": "tracks", "seq": frame.seq, "frame_ts": frame.ts, "t": (frame.ts - self._t0_ms) / 1000,
             "width": size[0], "height": size[1],
             "tracks": [{"track_id": int(i), "box": [round(float(v), 1) for v in box], "score": round(float(s), 3)}
                        for i, box, s in tracks]},
            droppable=True,
        )  # fmt: skip

    # ---- windows -> batcher ----------------------------------------------------------------------------------------
    def _offer(self, window, frame: FrameMessage | None) -> None:
        slot = self.tracks.get(window.track_id)
        if slot is None:
            slot = self.tracks[window.track_id] = _TrackSlot()
            if self.hello.smoothing == "ema":
                slot.smoother = TrackSmoother(self.hello.ema_alpha, self.hello.hysteresis)
        if slot.inflight is None:
            slot.inflight = asyncio.create_task(self._classify(window.track_id, slot, window, frame))
            return
        if slot.waiting is not None:
            self._drop_window("superseded")
        slot.waiting = (window, frame)

    def _drop_window(self, reason: str) -> None:
        self.stats.windows_dropped[reason] += 1
        metrics.STREAM_WINDOWS_DROPPED.labels(reason).inc()

    async def _classify(self, track_id: int, slot: _TrackSlot, window, frame: FrameMessage | None) -> None:
        admission = self.model.batcher.stream_admission  # one batch of stream clips at a time, fair (FIFO) by track
        while window is not None:
            async with admission:
                if slot.waiting is not None:  # a newer window came while this one waited for its turn
                    self._drop_window("superseded")
                    (window, frame), slot.waiting = slot.waiting, None
                await self._classify_one(slot, window, frame)
            window, frame = slot.waiting if slot.waiting is not None else (None, None)
            slot.waiting = None
        slot.inflight = None

    async def _classify_one(self, slot: _TrackSlot, window, frame: FrameMessage | None) -> None:
        clip = window.frames[None]  # uint8 [1, T, 224, 224, 3]
        self.stats.windows_submitted += 1
        try:
            result = await self.model.batcher.submit(clip, deadline=time.monotonic() + self.config.window_deadline_s)
        except BusyError:
            self._drop_window("busy")
            return
        except DeadlineError:
            self._drop_window("deadline")
            return
        except ServiceError:  # the engine refused the call (Triton unavailable) and logged why: no trace per window
            self._drop_window("failed")
            return
        except Exception:  # a failing model call drops this window, never the stream
            log.exception("stream window failed")
            self._drop_window("failed")
            return
        self.stats.windows_classified += 1
        probs = result.probs[0]
        smoothed = None
        if slot.smoother is not None:
            smoothed_probs, label = slot.smoother.update(probs)
            smoothed = Prediction.of(self.classes, smoothed_probs, label=label, digits=5)
        latency = {"queue": round(result.queue_s * 1000, 2), "inference": round(result.compute_s * 1000, 2)}
        if frame is not None:
            latency["server"] = round((time.monotonic() - frame.arrived) * 1000, 2)
            self.stats.latencies_ms.append(latency["server"])
            metrics.STREAM_RESULT_LATENCY.observe(latency["server"] / 1000)
        raw = Prediction.of(self.classes, probs, digits=5)
        self.outbox.put(
            StreamResult(
                **dict(raw), track_id=int(window.track_id), t_start=round(window.t_start, 4),
                t_end=round(window.t_end, 4), smoothed=smoothed, box=[round(float(v), 1) for v in window.boxes[-1]],
                padded=bool(window.padded), seq=frame.seq if frame else None, frame_ts=frame.ts if frame else None,
                latency_ms=latency,
            )
        )  # fmt: skip

    def cancel(self) -> None:
        """The stream is over: free the windows it still has in the batcher queue."""
        for slot in self.tracks.values():
            slot.waiting = None
            if slot.inflight is not None:
                slot.inflight.cancel()

    def release(self) -> None:
        """After `cancel` and once its tasks are done: drop everything the stream holds (frames, per-track window
        buffers and tracker, events, smoothers). The endpoint and its tasks also hold this object through reference
        cycles (bound methods, cancelled tasks' tracebacks); emptying it here frees the bulk at once rather than at
        the garbage collector's next full pass, which a long-lived stream's objects otherwise wait for."""
        self.cancel()
        self.tracks.clear()
        self.frames.clear()
        self.outbox.clear()
        self.pipeline = self.aligned = None


async def drain_task(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
