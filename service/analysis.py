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
from typing import TYPE_CHECKING

import numpy as np

from s2d.service import metrics
from s2d.service.errors import InvalidParametersError, NoFramesError
from s2d.service.registry import LoadedModel
from s2d.service.schemas import (
    ClassifyOptions,
    ClassifyResponse,
    FaceAtFrame,
    ModelRef,
    Person,
    PersonSummary,
    Prediction,
    Timings,
    VideoInfo,
    WindowResult,
    WindowSpec,
)
from s2d.service.settings import Limits
from s2d.service.smoothing import TrackSmoother

if TYPE_CHECKING:
    from s2d.service.faces import Window


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
# Frame sources


def _media_limits(limits: Limits):
    from s2d.service.media import MediaLimits

    # Bytes are limited by the upload reader (while streaming); here: pixels and duration.
    return MediaLimits(max_pixels=limits.max_pixels, max_duration_s=limits.max_video_seconds, max_bytes=None)


def _timed_frames(frames: Iterator, stats: Stats) -> Iterator:
    """Count decoded frames and the time spent decoding them."""
    while True:
        start = time.perf_counter()
        frame = next(frames, None)
        stats.decode_s += time.perf_counter() - start
        if frame is None:
            return
        stats.frames += 1
        yield frame


def _video_frames(source: Path, filename: str | None, limits: Limits, stats: Stats) -> Iterator:
    """`service.media.Frame`s of a video file, after probing it (size, duration, codec) into `stats.info`."""
    from s2d.service.media import iter_frames, probe

    media_limits = _media_limits(limits)
    info = probe(source, filename=filename, limits=media_limits)
    stats.info = VideoInfo(
        width=info.width, height=info.height, fps=info.fps, duration_s=info.duration_s, codec=info.codec,
        rotation=info.rotation,
    )  # fmt: skip
    yield from _timed_frames(iter_frames(source, filename=filename, limits=media_limits), stats)


def _image_folder_frames(folder: Path, fps: float, limits: Limits, stats: Stats) -> Iterator:
    """A folder of frames (a dataset clip), ordered by the number in their names, timed at `fps`."""
    from s2d.service.media import IMAGE_EXTENSIONS, Frame, iter_frames

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_frame_number)
    if not files:
        raise NoFramesError(f"no image files in {folder}")

    def frames() -> Iterator:
        for index, file in enumerate(files):
            image = next(iter_frames(file, limits=_media_limits(limits))).image
            if stats.info is None:
                h, w = image.shape[:2]
                stats.info = VideoInfo(width=w, height=h, fps=fps, duration_s=len(files) / fps, codec="images")
            yield Frame(index=index, t=index / fps, image=image)

    yield from _timed_frames(frames(), stats)


def _frame_number(path: Path) -> tuple[int, str]:
    digits = "".join(c if c.isdigit() else " " for c in path.stem).split()
    return (int(digits[-1]) if digits else -1, path.name)


def _frames(source: Path, filename: str | None, limits: Limits, stats: Stats, fps: float) -> Iterator:
    if source.is_dir():
        return _image_folder_frames(source, fps, limits, stats)
    return _video_frames(source, filename, limits, stats)


# ---------------------------------------------------------------------------------------------------------------------
# Window generators (both cut windows with the face pipeline's WindowBuilder)


def aligned_windows(
    frames: Iterator, num_frames: int, size: int, window_s: float, hop_s: float, stats: Stats
) -> Iterator[Window]:
    """Every frame is already the aligned face crop of one person (service.faces.AlignedWindows): no detection."""
    from s2d.service.faces import AlignedWindows

    source = AlignedWindows(num_frames, window_s, hop_s, size)
    for frame in frames:
        yield from source.push(frame)
    yield from source.flush()


def face_windows(
    frames: Iterator, num_frames: int, window_s: float, hop_s: float, limits: Limits, stats: Stats
) -> Iterator[Window]:
    """Detect, track and align every face (service.faces.FacePipeline); windows per track."""
    from s2d.service.faces import FacePipeline, thread_detector

    detector = thread_detector(limits.detector, limits.insightface_root)
    pipeline = FacePipeline(detector, num_frames, window_s, hop_s, detect_every=limits.detect_every)
    for frame in frames:
        start = time.perf_counter()
        tracks, windows = pipeline.push(frame)
        stats.faces_s += time.perf_counter() - start
        stats.faces += len(tracks)
        yield from windows
    yield from pipeline.flush()


# ---------------------------------------------------------------------------------------------------------------------
# The whole request


@dataclass
class _Collected:
    windows: list[tuple[Window, np.ndarray]] = field(default_factory=list)  # (window without frames, probs [C])
    queue_s: float = 0.0
    batches: dict[int, tuple[int, float]] = field(default_factory=dict)  # batch id -> (size, seconds)


def build_persons(
    classes: list[str], windows: list[tuple[Window, np.ndarray]], options: ClassifyOptions
) -> list[Person]:
    """Group window results by track, smooth if asked, and summarise each person."""
    by_track: dict[int, list[tuple[Window, np.ndarray]]] = {}
    for window, probs in sorted(windows, key=lambda wp: (wp[0].track_id, wp[0].t_start)):
        by_track.setdefault(window.track_id, []).append((window, probs))
    persons = []
    for track_id, items in by_track.items():
        smoother = TrackSmoother(options.ema_alpha, options.hysteresis) if options.smoothing == "ema" else None
        results, labels = [], []
        for window, probs in items:
            raw = Prediction.of(classes, probs)
            smoothed = Prediction.of(classes, *smoother.update(probs)) if smoother else None
            box = None if window.boxes is None else [float(v) for v in np.median(window.boxes, axis=0)]
            span = {"t_start": window.t_start, "t_end": window.t_end}
            middle = _middle_face(window)
            results.append(WindowResult(**raw.model_dump(), **span, box=box, middle=middle, smoothed=smoothed))
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


def _middle_face(window: Window) -> FaceAtFrame | None:
    """The face's box and keypoints at the window's middle sampled frame (None without keypoints: aligned mode)."""
    if window.keypoints is None:
        return None
    mid = len(window.timestamps) // 2
    return FaceAtFrame(t=float(window.timestamps[mid]), box=window.boxes[mid].tolist(),
                       keypoints=window.keypoints[mid].tolist())  # fmt: skip


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
    filename: str | None = None,
    fps: float = 25.0,
) -> ClassifyResponse:
    """Classify every person of the video at `source` (or, in aligned mode, a folder of aligned frames at `fps`).

    `filename` is the name the client gave the upload (its suffix is checked; the bytes decide the format).
    """
    started = time.perf_counter()
    card = model.stored.card
    window_s, hop_s = resolve_window(card.window_seconds, options, limits)
    stats = Stats()
    frames = _frames(source, filename, limits, stats, fps)
    if options.mode == "aligned":
        windows = aligned_windows(frames, card.num_frames, card.input.height, window_s, hop_s, stats)
    else:
        windows = face_windows(frames, card.num_frames, window_s, hop_s, limits, stats)
    collected = await _classify_windows(model, windows, executor, max_inflight=2 * model.batcher.max_batch)
    metrics.FRAMES.labels("classify").inc(stats.frames)
    metrics.FACES.labels("classify").inc(stats.faces)
    info = stats.info.model_copy(update={"frames_decoded": stats.frames, "faces_detected": stats.faces})
    return ClassifyResponse(
        model=ModelRef(**model.ref()),
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
        notes=_notes(stats, collected),
    )


def _notes(stats: Stats, collected: _Collected) -> list[str]:
    """A decodable video in which nobody is found is an answer (no persons), said in words; not an error. (Every
    face found makes a window, a short track a padded one, and a video with no decodable frame is refused by the
    decoder, so no windows means no face.)"""
    return [] if collected.windows else [f"no face was found in {stats.frames} frames"]


__all__ = ["Window", "analyse_video", "build_persons", "resolve_window"]
