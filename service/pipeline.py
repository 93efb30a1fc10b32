"""One video through the whole pipeline: decode -> (faces: detect, track, align | aligned: resize) -> windows ->
batcher -> per-person results. REST (`/v1/classify`) and `s2d predict` both call `analyse_video`.

The decode / face stages are a plain generator of windows advanced one window at a time in a worker thread, so
memory stays bounded (a few windows in flight) and the event loop never blocks; every window goes to the model's
batcher as soon as it exists, so decoding overlaps inference and windows of concurrent requests share batches.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service import metrics
from service.errors import InvalidParametersError, NoFramesError, TooLargeError
from service.registry import LoadedModel
from service.schemas import (
    ClassifyOptions,
    ClassifyResponse,
    ModelRef,
    Person,
    PersonSummary,
    Prediction,
    Timings,
    VideoInfo,
    WindowResult,
    WindowSpec,
)
from service.smoothing import EmaSmoother

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Limits:
    max_video_seconds: float = 600.0
    max_pixels: int = 3840 * 2160
    min_hop_seconds: float = 0.25
    window_scale_range: tuple[float, float] = (0.5, 2.0)
    detector: str | None = None
    detect_every: int = 1


@dataclass
class Window:
    """T frames of one person, ready for the model."""

    track_id: int
    t_start: float
    t_end: float
    frames: np.ndarray  # uint8 [T, 224, 224, 3]
    boxes: np.ndarray | None = None  # float [T, 4] x1 y1 x2 y2 in video pixels (None in aligned mode)


@dataclass
class Stats:
    """Filled by the window generator while it runs."""

    info: VideoInfo | None = None
    decode_s: float = 0.0
    faces_s: float = 0.0
    frames: int = 0
    faces: int = 0


# ---------------------------------------------------------------------------------------------------------------------
# Window parameters


def resolve_window(card_window: float, options: ClassifyOptions, limits: Limits) -> tuple[float, float]:
    """(window_seconds, hop_seconds) from the options, refused (422) outside what the model allows."""
    window = options.window_seconds or card_window
    low, high = limits.window_scale_range
    if not low * card_window - 1e-9 <= window <= high * card_window + 1e-9:
        raise InvalidParametersError(
            f"window_seconds={window:g} is outside what this model allows: {low * card_window:g} to "
            f"{high * card_window:g} s (it was trained on {card_window:g} s windows)"
        )
    hop = options.hop_seconds or window / 2
    if not limits.min_hop_seconds - 1e-9 <= hop <= window + 1e-9:
        raise InvalidParametersError(
            f"hop_seconds={hop:g} must be between {limits.min_hop_seconds:g} and window_seconds ({window:g})"
        )
    return window, hop


# ---------------------------------------------------------------------------------------------------------------------
# Aligned mode: every frame is already the face crop


class AlignedWindower:
    """Cuts a stream of aligned frames (one person) into windows of T frames sampled uniformly over `window_s`.

    Window k covers [t0 + k * hop, t0 + k * hop + window); frame j of T is the frame nearest to the window's
    (j + 0.5) / T point. A clip shorter than one window still gives one window (the last frame repeats), and a tail
    longer than half a hop after the last full window gets a final window ending at the last frame: nothing the
    user sent is silently dropped.
    """

    def __init__(self, num_frames: int, window_s: float, hop_s: float):
        self.num_frames, self.window, self.hop = num_frames, window_s, hop_s
        self._times: deque[float] = deque()
        self._images: deque[np.ndarray] = deque()
        self._next_start: float | None = None
        self._last_end: float | None = None
        self._dt = 0.0  # frame interval estimate, for the end of the last frame

    def _cut(self, start: float) -> Window:
        times = np.fromiter(self._times, float)
        targets = start + (np.arange(self.num_frames) + 0.5) * self.window / self.num_frames
        picks = np.abs(times[None, :] - targets[:, None]).argmin(axis=1)  # nearest frame per target; past the end
        frames = np.stack([self._images[i] for i in picks])  # the last frame repeats
        self._last_end = start + self.window
        return Window(0, float(start), float(start + self.window), frames)

    def push(self, t: float, image: np.ndarray) -> list[Window]:
        if self._times:
            self._dt = t - self._times[-1]
        if self._next_start is None:
            self._next_start = t
        self._times.append(t)
        self._images.append(image)
        out = []
        while t >= self._next_start + self.window:  # a frame at or past the end: the window is complete
            self._times.pop(), self._images.pop()  # cut without the frame that is past the end
            out.append(self._cut(self._next_start))
            self._times.append(t), self._images.append(image)
            self._next_start += self.hop
            while len(self._times) > 1 and self._times[1] <= self._next_start:  # keep one frame before the start
                self._times.popleft(), self._images.popleft()
        return out

    def flush(self) -> list[Window]:
        if not self._times:
            return []
        end = self._times[-1] + self._dt
        if self._last_end is None:
            return [self._cut(self._times[0])]
        if end - self._last_end > self.hop / 2:
            return [self._cut(max(self._times[0], end - self.window))]
        return []


# ---------------------------------------------------------------------------------------------------------------------
# Decoding (PyAV). TEMPORARY: replaced by service.media (probe / iter_frames) when it lands.


def _open_video(path: Path, limits: Limits):
    import av

    from service.errors import UndecodableError, UnsupportedMediaError

    try:
        container = av.open(str(path))
    except av.error.InvalidDataError as err:
        raise UndecodableError(f"the upload is not a readable video: {err}") from None
    except av.error.FFmpegError as err:
        raise UndecodableError(f"cannot open the upload: {err}") from None
    if not container.streams.video:
        container.close()
        raise UnsupportedMediaError("the upload has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    width, height = stream.codec_context.width, stream.codec_context.height
    duration = float(container.duration / 1_000_000) if container.duration else None
    fps = float(stream.average_rate) if stream.average_rate else None
    if width * height > limits.max_pixels:
        container.close()
        raise TooLargeError(f"frames of {width}x{height} exceed the limit of {limits.max_pixels} pixels")
    if duration is not None and duration > limits.max_video_seconds:
        container.close()
        raise TooLargeError(f"the video lasts {duration:.1f} s, over the limit of {limits.max_video_seconds:g} s")
    info = VideoInfo(width=width, height=height, fps=fps, duration_s=duration, codec=stream.codec_context.name)
    return container, stream, info


def _video_frames(path: Path, limits: Limits, stats: Stats, size: int | None) -> Iterator[tuple[float, np.ndarray]]:
    """(t seconds, uint8 RGB [H, W, 3]) per frame; resized to size x size when size is given."""
    import av

    from service.errors import UndecodableError

    container, stream, stats.info = _open_video(path, limits)
    fps = stats.info.fps or 25.0
    try:
        decoder = container.decode(stream)
        index = 0
        while True:
            start = time.perf_counter()
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except av.error.FFmpegError as err:
                raise UndecodableError(f"decoding failed at frame {index}: {err}") from None
            t = float(frame.time) if frame.time is not None else index / fps
            if t > limits.max_video_seconds:
                raise TooLargeError(f"the video runs past the limit of {limits.max_video_seconds:g} s")
            kwargs = {"width": size, "height": size} if size else {}
            image = frame.to_ndarray(format="rgb24", **kwargs)
            stats.decode_s += time.perf_counter() - start
            stats.frames += 1
            index += 1
            yield t, image
    finally:
        container.close()


def _image_folder_frames(folder: Path, fps: float, stats: Stats, size: int) -> Iterator[tuple[float, np.ndarray]]:
    """A folder of aligned frames (a dataset clip), in the order of the number in their names, at `fps`."""
    import av

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES), key=_frame_number)
    if not files:
        raise NoFramesError(f"no image files in {folder}")
    for index, file in enumerate(files):
        start = time.perf_counter()
        with av.open(str(file)) as container:
            frame = next(container.decode(video=0))
            if stats.info is None:
                stats.info = VideoInfo(width=frame.width, height=frame.height, fps=fps, duration_s=len(files) / fps)
            image = frame.to_ndarray(format="rgb24", width=size, height=size)
        stats.decode_s += time.perf_counter() - start
        stats.frames += 1
        yield index / fps, image


def _frame_number(path: Path) -> tuple[int, str]:
    digits = "".join(c if c.isdigit() else " " for c in path.stem).split()
    return (int(digits[-1]) if digits else -1, path.name)


# ---------------------------------------------------------------------------------------------------------------------
# Window generators


def aligned_windows(
    source: Path,
    num_frames: int,
    size: int,
    window_s: float,
    hop_s: float,
    limits: Limits,
    stats: Stats,
    fps: float = 25.0,
) -> Iterator[Window]:
    frames = (
        _image_folder_frames(source, fps, stats, size)
        if source.is_dir()
        else _video_frames(source, limits, stats, size)
    )
    windower = AlignedWindower(num_frames, window_s, hop_s)
    for t, image in frames:
        yield from windower.push(t, image)
    yield from windower.flush()


def face_windows(
    source: Path, num_frames: int, window_s: float, hop_s: float, limits: Limits, stats: Stats
) -> Iterator[Window]:
    raise NotImplementedError("the face pipeline (service.faces) is not integrated yet; use mode=aligned")


# ---------------------------------------------------------------------------------------------------------------------
# The whole request


@dataclass
class _Collected:
    windows: list[tuple[Window, np.ndarray]] = field(default_factory=list)  # (window without frames, probs [C])
    queue_s: float = 0.0
    batches: dict[int, tuple[int, float]] = field(default_factory=dict)  # batch id -> (size, seconds)


def _prediction(classes: list[str], probs: np.ndarray) -> Prediction:
    best = int(np.argmax(probs))
    return Prediction(
        label=classes[best],
        confidence=float(probs[best]),
        probs={c: float(p) for c, p in zip(classes, probs, strict=True)},
    )


def build_persons(
    classes: list[str], windows: list[tuple[Window, np.ndarray]], options: ClassifyOptions
) -> list[Person]:
    """Group window results by track, smooth if asked, and summarise each person."""
    by_track: dict[int, list[tuple[Window, np.ndarray]]] = {}
    for window, probs in sorted(windows, key=lambda wp: (wp[0].track_id, wp[0].t_start)):
        by_track.setdefault(window.track_id, []).append((window, probs))
    persons = []
    for track_id, items in by_track.items():
        smoother = EmaSmoother(options.ema_alpha) if options.smoothing == "ema" else None
        results, labels = [], []
        for window, probs in items:
            raw = _prediction(classes, probs)
            smoothed = _prediction(classes, smoother.update(probs)) if smoother else None
            box = None if window.boxes is None else [float(v) for v in np.median(window.boxes, axis=0)]
            results.append(
                WindowResult(**raw.model_dump(), t_start=window.t_start, t_end=window.t_end, box=box, smoothed=smoothed)
            )
            labels.append((smoothed or raw).label)
        mean = np.mean([p for _, p in items], axis=0)
        persons.append(
            Person(
                track_id=track_id,
                windows=results,
                summary=PersonSummary(
                    dominant=classes[int(np.argmax(mean))],
                    mean_probs={c: float(p) for c, p in zip(classes, mean, strict=True)},
                    time_share={c: labels.count(c) / len(labels) for c in classes},
                    num_windows=len(items),
                    t_first=items[0][0].t_start,
                    t_last=items[-1][0].t_end,
                ),
            )
        )
    return persons


async def _classify_windows(
    model: LoadedModel, windows: Iterator[Window], executor: Executor, max_inflight: int
) -> _Collected:
    """Advance the window generator in `executor`, one window at a time, submitting each to the batcher.

    The first window is admitted or refused (BusyError) by the queue; later ones wait for room, so a request
    once accepted always completes. At most `max_inflight` windows of this request wait for the model.
    """
    loop = asyncio.get_running_loop()
    collected = _Collected()
    inflight: deque[tuple[Window, asyncio.Task]] = deque()

    async def settle(window: Window, task: asyncio.Task) -> None:
        result = await task
        collected.windows.append((window, result.probs[0]))
        collected.queue_s = max(collected.queue_s, result.queue_s)
        collected.batches.update(result.batches)

    _end = object()
    first = True
    step: asyncio.Future | None = None
    try:
        while True:
            step = loop.run_in_executor(executor, next, windows, _end)
            window = await asyncio.shield(step)  # on cancel, `finally` waits for the step before closing
            if window is _end:
                break
            clip = window.frames[None]
            window.frames = None  # the batcher holds the pixels now; the result keeps only the metadata
            task = loop.create_task(model.batcher.submit(clip, wait_for_space=not first))
            if first:
                await asyncio.sleep(0)  # let the admission step run now: a full queue refuses the request at once
                if task.done() and task.exception() is not None:
                    raise task.exception()
                first = False
            inflight.append((window, task))
            while len(inflight) >= max_inflight or (inflight and inflight[0][1].done()):
                await settle(*inflight.popleft())
        while inflight:
            await settle(*inflight.popleft())
    finally:
        for _, task in inflight:
            task.cancel()
        if step is not None and not step.done():  # a generator must not be closed while it runs in a thread
            await asyncio.wait([step])
        await loop.run_in_executor(executor, windows.close)
    return collected


async def analyse_video(
    source: Path,
    model: LoadedModel,
    options: ClassifyOptions,
    limits: Limits,
    executor: Executor,
    fps: float = 25.0,
) -> ClassifyResponse:
    """Classify every person of the video at `source` (or, in aligned mode, a folder of aligned frames)."""
    started = time.perf_counter()
    card = model.stored.card
    window_s, hop_s = resolve_window(card.window_seconds, options, limits)
    stats = Stats()
    if options.mode == "aligned":
        size = card.input.height
        windows = aligned_windows(source, card.num_frames, size, window_s, hop_s, limits, stats, fps)
    else:
        windows = face_windows(source, card.num_frames, window_s, hop_s, limits, stats)
    collected = await _classify_windows(model, windows, executor, max_inflight=2 * model.batcher.max_batch)
    metrics.FRAMES.labels("classify").inc(stats.frames)
    metrics.FACES.labels("classify").inc(stats.faces)
    if not collected.windows:
        raise NoFramesError("the video has no frames" if options.mode == "aligned" else "no face found in the video")
    info = stats.info.model_copy(update={"frames_decoded": stats.frames, "faces_detected": stats.faces})
    classifier = model.classifier
    return ClassifyResponse(
        model=ModelRef(
            name=model.name,
            version=card.version,
            variant=classifier.variant,
            provider=classifier.provider,
            demo=card.demo,
        ),
        mode=options.mode,
        window=WindowSpec(num_frames=card.num_frames, window_seconds=window_s, hop_seconds=hop_s),
        video=info,
        persons=build_persons(card.classes, collected.windows, options),
        timings=Timings(
            decode=stats.decode_s,
            faces=stats.faces_s,
            queue=collected.queue_s,
            inference=sum(seconds for _, seconds in collected.batches.values()),
            total=time.perf_counter() - started,
        ),
        options=options.model_dump(exclude_none=True),
    )


__all__ = ["AlignedWindower", "Limits", "Window", "analyse_video", "build_persons", "resolve_window"]
