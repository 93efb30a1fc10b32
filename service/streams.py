"""Live streams: per-stream state and back-pressure for the WebSocket endpoint `/v1/stream`.

Protocol (version 1; the README's "Live streams" section has the same with examples)
-----------------------------------------------------------------------------------
Connect to `ws[s]://HOST/v1/stream`. With an API key configured, send it as `Authorization: Bearer KEY` or
`X-API-Key: KEY`, or (browsers cannot set headers on a WebSocket) offer the subprotocols `["s2d.v1", "bearer.KEY"]`;
the server then answers with subprotocol `s2d.v1`.

Client -> server
  1. text, first message: the hello, a JSON object (`StreamHello`):
     `{"type": "hello", "model": null, "mode": "faces", "fps": 15, "smoothing": "ema", "ema_alpha": 0.5,
       "hysteresis": 0.1, "window_seconds": null, "hop_seconds": null, "tracks_fps": 10, "stats_interval_s": 1}`
  2. binary: one video frame = a 16-byte header + a JPEG, PNG or WebP image:
       bytes 0-3   magic b"S2D1"
       bytes 4-11  float64 little-endian: client timestamp in milliseconds (any clock, strictly increasing;
                   e.g. `performance.timeOrigin + performance.now()`); it is echoed back in events
       bytes 12-15 uint32 little-endian: frame sequence number (echoed back)
     Stream time `t` (seconds, what windows are cut on) is (timestamp - first frame's timestamp) / 1000.
  3. text: `{"type": "end"}` (classify what is buffered, send the last results, an `end` event, close 1000) or
     `{"type": "ping"}` (answered with `pong`).

Server -> client: JSON text events, each with a `type`:
  `ready`    after the hello: model (name, version, variant, provider, demo), classes, window, effective limits.
  `tracks`   at most `tracks_fps` per second: the faces of the latest processed frame,
             `{seq, frame_ts, t, width, height, tracks: [{track_id, box: [x1, y1, x2, y2], score}]}`.
  `result`   as soon as a window is classified: `{track_id, t_start, t_end, label, confidence, probs: {class: p},
             smoothed: {label, confidence, probs} | null, box, seq, frame_ts, latency_ms: {server, queue,
             inference}}`; `frame_ts`/`seq` name the frame that completed the window, so the client measures
             end-to-end latency with its own clock; `latency_ms.server` is frame arrival -> result sent.
  `stats`    every `stats_interval_s`: frame and window counts, drops by reason, server latency p50/p95.
  `error`    `{code, message, fatal}`; a non-fatal error drops one message and the stream goes on.
  `pong`, `end` (final stats, then close 1000).

Back-pressure (memory per stream is bounded whatever the client does)
  - Frames: at most `stream_frame_buffer` wait for the face pipeline; when the stream falls behind the oldest
    waiting frame is dropped (reason `behind`). Frames closer than 0.5 / fps to the previous one are dropped
    (`rate`). Malformed, oversized and undecodable frames are dropped with an error event.
    Under load a frame also waits for a free pipeline thread; the thread then takes the newest frame of the
    stream and drops the older ones (`behind`), so it never decodes a frame that is already stale.
  - Windows: per track at most one window is in the batcher and one waits for it; a newer window replaces the
    waiting one (`superseded`). Streams together keep at most one batch of clips in the batcher
    (`Batcher.stream_admission`, granted in arrival order): under overload a track waits for its turn in the
    stream and then submits its newest window, so latency stays about one batch long instead of growing with the
    number of open tracks. Windows refused by a full batcher queue (`busy`) or past their deadline (`deadline`)
    are dropped. Every drop is counted in `stats`, in `end`, and in the Prometheus metrics.
  - Events: a bounded outbox; when the client reads too slowly, droppable events (tracks, stats) go first, then
    the oldest results; a single send blocked longer than `stream_send_timeout_s` closes the stream (1008).
  - Incoming messages: the WebSocket layer caps one message at `stream_max_frame_bytes` (close 1009) and stops
    reading the socket while a message waits for the stream (uvicorn's default protocol: TCP flow control then
    pushes back on a client that sends faster than the stream reads); no permessage-deflate (frames are already
    compressed); uvicorn's protocol pings every `stream_heartbeat_s` close dead peers.
  - Closed streams release their state at once (`LiveStream.release`); once no stream has been open for 2 s the
    server gives freed memory back to the OS (`service.memory`).

Close codes: 1000 end, 1001 idle timeout / server shutdown, 1002 protocol error (no valid hello), 1008 policy
(unauthorized, bad hello, unknown model, slow reader), 1009 message too big, 1011 internal error, 1013 try again
later (too many streams, models not ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from s2d.service import metrics
from s2d.service.errors import BusyError, DeadlineError, MediaError, ProtocolError
from s2d.service.schemas import Prediction
from s2d.service.smoothing import TrackSmoother

log = logging.getLogger(__name__)

MAGIC = b"S2D1"
HEADER = struct.Struct("<4sdI")  # magic, client timestamp (ms, float64), sequence number (uint32): 16 bytes
SUBPROTOCOL = "s2d.v1"

# Close codes (RFC 6455 section 7.4.1; 1013 from the IANA registry).
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL, CLOSE_POLICY = 1000, 1001, 1002, 1008
CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1009, 1011, 1013

FRAME_DROP_REASONS = ("behind", "rate", "out_of_order", "malformed", "too_large", "undecodable")
WINDOW_DROP_REASONS = ("superseded", "busy", "deadline", "failed")


class StreamHello(BaseModel):
    """The first message of a stream."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["hello"]
    model: str | None = Field(None, description="model name; default: the service's default model")
    mode: Literal["faces", "aligned"] = Field(
        "faces", description="faces: detect and track faces; aligned: every frame is one aligned face crop (track 0)"
    )
    fps: float = Field(15.0, gt=0, le=120, description="the frame rate the client sends at (capped by the server)")
    window_seconds: float | None = Field(None, gt=0)
    hop_seconds: float | None = Field(None, gt=0)
    smoothing: Literal["none", "ema"] = "ema"
    ema_alpha: float = Field(0.5, gt=0, le=1, description="EMA weight of the newest window (1 = no smoothing)")
    hysteresis: float = Field(
        0.1, ge=0, le=1, description="the smoothed label changes only when a class leads it by this margin"
    )
    tracks_fps: float = Field(10.0, ge=0, le=60, description="most `tracks` events per second (0: none)")
    stats_interval_s: float = Field(1.0, ge=0.1, le=60)


# ---------------------------------------------------------------------------------------------------------------------
# Frames


@dataclass
class FrameMessage:
    seq: int
    ts: float  # client timestamp, milliseconds
    payload: bytes  # the encoded image
    arrived: float  # time.monotonic() when the message was read


def parse_frame(data: bytes, max_bytes: int, arrived: float) -> FrameMessage:
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise ProtocolError("bad_frame", f"a frame starts with the {HEADER.size}-byte header (magic b'S2D1')")
    if len(data) - HEADER.size > max_bytes:
        raise ProtocolError("too_large", f"frame of {len(data) - HEADER.size} bytes; the limit is {max_bytes}")
    _, ts, seq = HEADER.unpack_from(data)
    if not np.isfinite(ts):
        raise ProtocolError("bad_frame", "the frame timestamp is not a finite number")
    return FrameMessage(seq=seq, ts=ts, payload=data[HEADER.size :], arrived=arrived)


def pack_frame(image: bytes, ts_ms: float, seq: int) -> bytes:
    """The binary message of one frame (clients in Python: tests, the load script)."""
    return HEADER.pack(MAGIC, ts_ms, seq) + image


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """uint8 RGB [H, W, 3]; ProtocolError for anything not a readable image within the pixel limit, which is
    checked from the image header before decoding (service.media, as for uploads)."""
    import cv2

    from s2d.service.media import MediaLimits, check_size, image_size

    size = image_size(data)
    if size is None:
        raise ProtocolError("undecodable", "a frame must be a JPEG, PNG or WebP image")
    try:
        check_size(*size, MediaLimits(max_pixels=max_pixels))
    except MediaError as err:  # the same stable codes: too_large, unsupported_media
        raise ProtocolError(err.code, str(err)) from None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ProtocolError("undecodable", "the frame image could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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


# ---------------------------------------------------------------------------------------------------------------------
# Events


class Outbox:
    """Events waiting to be sent: bounded. Over capacity the oldest droppable event (tracks, stats) goes first,
    else the oldest event of any kind; `dropped` counts them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque[tuple[dict[str, Any], bool]] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closing: tuple[int, str] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: dict[str, Any], droppable: bool = False) -> None:
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

    async def get(self) -> dict[str, Any] | None:
        """The next event; None when a close was asked for and everything before it is sent."""
        while not self._items:
            if self.closing is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()[0]


# ---------------------------------------------------------------------------------------------------------------------
# Per-stream state


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
    detect_every: int
    extra_frame_delay_s: float = 0.0  # fault injection (settings.fault_frame_delay_ms)


@dataclass
class _Processed:
    """What a pipeline thread made of one frame (the newest waiting one when it started)."""

    frame: FrameMessage
    tracks: list = field(default_factory=list)  # (track_id, box [4], score) of the faces in the frame
    windows: list = field(default_factory=list)  # windows completed by this frame
    size: tuple[int, int] = (0, 0)  # (width, height)
    skipped: int = 0  # older frames replaced by this one: counted as dropped (`behind`)
    error: ProtocolError | None = None  # the frame could not be decoded


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
    """One client's stream: frames -> face pipeline (in the shared pipeline executor) -> the model's batcher.

    The endpoint feeds `on_frame` / `end` from its receive loop and sends what `outbox.get()` yields; all state
    changes happen on the event loop, the face pipeline runs in a worker thread one frame at a time.
    """

    def __init__(self, hello: StreamHello, model, window_s: float, hop_s: float, config: StreamConfig, executor):
        from s2d.service.faces import FacePipeline, WindowBuilder

        self.hello, self.model, self.config, self.executor = hello, model, config, executor
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
        if hello.mode == "faces":
            self.pipeline = FacePipeline(
                None, card.num_frames, window_s, hop_s, detect_every=config.detect_every
            )  # detector: set per call (one per worker thread; detectors are not thread-safe)
            self.builder = None
        else:
            self.pipeline = None
            self.builder = WindowBuilder(card.num_frames, window_s, hop_s)
        self._size = card.input.height

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
            return _Processed(frame, skipped=skipped, error=err)
        return _Processed(frame, tracks, windows, size, skipped)

    def _detect(self, frame: FrameMessage) -> tuple[list, list, tuple[int, int]]:
        """Decode, find faces, cut windows: (tracks, windows, (width, height))."""
        from s2d.service.media import Frame

        image = decode_image(frame.payload, self.config.max_pixels)
        t = (frame.ts - self._t0_ms) / 1000.0
        h, w = image.shape[:2]
        if self.pipeline is not None:
            from s2d.service.pipeline import _detector  # the per-thread detector cache REST uses too

            self.pipeline.detector = _detector(self.config.detector)
            tracks, windows = self.pipeline.push(Frame(index=frame.seq, t=t, image=image))
            return [(tr.track_id, tr.box, tr.score) for tr in tracks], windows, (w, h)
        import cv2

        crop = cv2.resize(image, (self._size, self._size), interpolation=cv2.INTER_AREA)
        box = np.array([0, 0, w, h], np.float32)
        return [(0, box, 1.0)], self.builder.push(0, t, crop, box), (w, h)

    def _flush(self) -> list:
        return self.pipeline.flush() if self.pipeline is not None else self.builder.flush()

    async def process(self) -> None:
        """Processor task: frames from the buffer through the pipeline until `end`, then the last windows."""
        loop = asyncio.get_running_loop()
        while (frame := await self.frames.get()) is not None:
            done = await loop.run_in_executor(self.executor, self._process, frame)
            for _ in range(done.skipped):
                self._drop_frame("behind")
            if (err := done.error) is not None:
                self._drop_frame(err.code if err.code in FRAME_DROP_REASONS else "undecodable")
                self.error(err.code, f"frame {done.frame.seq}: {err.message}")
                continue
            self.stats.frames_processed += 1
            self.stats.faces += len(done.tracks)
            metrics.FRAMES.labels("stream").inc()
            metrics.FACES.labels("stream").inc(len(done.tracks))
            self._send_tracks(done.frame, done.tracks, done.size)
            for window in done.windows:
                self._offer(window, done.frame)
        if self._t0_ms is not None:
            for window in await loop.run_in_executor(self.executor, self._flush):
                self._offer(window, None)
        while any(slot.inflight for slot in self.tracks.values()):
            await asyncio.gather(*(s.inflight for s in self.tracks.values() if s.inflight), return_exceptions=True)
        self.outbox.put(self.stats_event(final=True))
        self.outbox.close(CLOSE_NORMAL, "end of stream")

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
        except Exception:  # a failing model call drops this window, never the stream
            log.exception("stream window failed")
            self._drop_window("failed")
            return
        self.stats.windows_classified += 1
        probs = result.probs[0]
        raw = Prediction.of(self.classes, probs, digits=5).model_dump()
        event = {"type": "result", "track_id": int(window.track_id), "t_start": round(window.t_start, 4),
                 "t_end": round(window.t_end, 4), **raw, "smoothed": None,
                 "box": [round(float(v), 1) for v in window.boxes[-1]], "padded": bool(window.padded),
                 "seq": frame.seq if frame else None, "frame_ts": frame.ts if frame else None}  # fmt: skip
        if slot.smoother is not None:
            smoothed, label = slot.smoother.update(probs)
            event["smoothed"] = Prediction.of(self.classes, smoothed, label=label, digits=5).model_dump()
        latency = {"queue": round(result.queue_s * 1000, 2), "inference": round(result.compute_s * 1000, 2)}
        if frame is not None:
            latency["server"] = round((time.monotonic() - frame.arrived) * 1000, 2)
            self.stats.latencies_ms.append(latency["server"])
            metrics.STREAM_RESULT_LATENCY.observe(latency["server"] / 1000)
        event["latency_ms"] = latency
        self.outbox.put(event)

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
        self.pipeline = self.builder = None


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), allow_nan=False)


async def drain_task(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
