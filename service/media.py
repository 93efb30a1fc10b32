"""Decoding uploaded videos, images and streams into RGB frames with container timestamps.

PyAV (FFmpeg) reads mp4, mov, mkv, webm, avi, animated GIF/WebP and still images. What this module guarantees:

- `Frame.t` comes from the container's presentation timestamps (phones record variable frame rate), in seconds from
  the first frame of the video stream; a frame without a timestamp gets the previous one plus one nominal interval.
- Rotation metadata (the display matrix phones write instead of rotating pixels) is applied, so faces are upright.
- Decoding streams: `iter_frames` is a generator holding one decoded frame at a time, so memory is bounded by what the
  caller keeps (the face windows), not by the length of the video.
- Frame sizes are checked before any frame is decoded, so a small file claiming a huge image costs nothing: from
  the image header (PNG, JPEG, WebP, GIF: `image_size`, which live-stream frames use too) before FFmpeg opens the
  file, then from the codec parameters of the video stream.
- Anything that cannot be used raises a `MediaError` (service.errors) with a stable `code` and the HTTP status the
  API answers with: `UndecodableMediaError` (400), `UnsupportedMediaError` (415), `MediaTooLargeError` (413). Their
  messages never hold a server path.

Limits (`MediaLimits`) are parameters, not constants: the service settings pass them down.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import cv2
import numpy as np

from s2d.service.errors import MediaError, MediaTooLargeError, UndecodableMediaError, UnsupportedMediaError

# File name suffixes accepted when a name is known (uploads, paths). The content decides the format, not the suffix:
# a real mp4 called clip.mov decodes; the list only refuses names that announce something else (notes.txt, a.exe).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp", ".flv"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS

Source = str | os.PathLike | BinaryIO


# ---------------------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class MediaLimits:
    """What the decoder accepts. Defaults: up to 4K UHD (8.3 MP; an 8K frame is 33 MP and refused), at least 32 px a
    side (a face crop is 224 px; below 32 px there is no face to find), 10 minutes, 200 MB."""

    max_pixels: int = 3840 * 2160
    min_side: int = 32
    max_duration_s: float = 600.0
    max_frames: int | None = None
    max_bytes: int | None = 200 * 1024 * 1024


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` reads from the container headers (no full decode). Sizes are after rotation."""

    width: int
    height: int
    fps: float | None  # average frame rate; None for still images or when the container does not say
    duration_s: float | None
    frame_count: int | None
    codec: str
    rotation: int  # degrees counterclockwise applied to decoded frames (0, 90, 180, 270)
    has_video: bool
    format: str = ""


@dataclass
class Frame:
    index: int  # 0-based index among decoded frames of the video stream
    t: float  # seconds from the first frame, from container timestamps
    image: np.ndarray  # uint8 RGB [H, W, 3], rotation applied (a live stream's: a faces.DeferredImage of it)


# ---------------------------------------------------------------------------------------------------------------------
# Public API

# How much of a file the image header reader looks at: a JPEG's frame header follows its APP segments (EXIF, XMP,
# ICC profile; 64 KiB each at most), usually in the first few KiB.
HEAD_BYTES = 256 * 1024


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, WebP or GIF image, or None when `data` does not start one
    (another format, or too short to tell). Read before decoding, so that a small file claiming a huge image is
    refused without allocating it: uploads (`probe`, `iter_frames`) and live-stream frames use it."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:  # the logical screen: the canvas FFmpeg allocates
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """From the first start-of-frame marker, walking the segments before it."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:  # no length field
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def probe(source: Source, *, filename: str | None = None, limits: MediaLimits | None = None) -> MediaInfo:
    """Read the container headers of a file (path or binary file object) and check them against `limits`."""
    limits = limits or MediaLimits()
    container, stream = _open_video(source, filename, limits)
    with container:
        info = _info(container, stream, _first_frame_rotation(container, stream))
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise MediaTooLargeError(
            f"the video lasts {info.duration_s:.1f} s; the limit is {limits.max_duration_s:.0f} s", reason="duration"
        )
    return info


def iter_frames(
    source: Source,
    *,
    filename: str | None = None,
    limits: MediaLimits | None = None,
    max_fps: float | None = None,
    threads: int = 0,
) -> Iterator[Frame]:
    """Decode the first video stream frame by frame: `Frame(index, t, image RGB uint8 [H, W, 3])`.

    `max_fps` drops frames closer than 1/max_fps to the last one kept (`index` still counts every decoded frame), a
    cheap way to bound the work on 60/120 fps uploads. `threads=0` lets FFmpeg choose. Errors after some frames were
    yielded (a truncated file) still raise `UndecodableMediaError`: nothing is dropped silently.
    """
    limits = limits or MediaLimits()
    container, stream = _open_video(source, filename, limits)
    with container:
        info = _info(container, stream, rotation=0)  # per-frame rotation is applied in _decode
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        yield from _decode(container, stream, info, limits, max_fps)


def open_url(
    url: str, *, limits: MediaLimits, options: dict[str, str] | None = None, timeout: tuple[float, float] | None = None,
    format: str | None = None, io_open: Callable | None = None,
) -> av.container.InputContainer:  # fmt: skip
    """Open a network stream or a device (a camera over RTSP, an HLS playlist, `/dev/video0` with format "v4l2"):
    FFmpeg `options`, (open, read) `timeout` in seconds, `io_open` to make every request FFmpeg makes for it (PyAV's);
    the video stream's frame size is checked before any frame is decoded. Frames come from `container_frames`."""
    try:
        container = av.open(url, mode="r", format=format, options=options or {}, timeout=timeout,
                            metadata_errors="ignore", io_open=io_open)  # fmt: skip
    except (av.FFmpegError, ValueError, OSError) as e:
        raise UndecodableMediaError(f"cannot open the stream: {decoder_message(e)}", reason="container") from e
    try:
        codec = _video_stream(container).codec_context
        check_size(codec.width, codec.height, limits)
    except BaseException:
        container.close()
        raise
    return container


def container_frames(
    container: av.container.InputContainer, *, limits: MediaLimits, max_fps: float | None = None
) -> Iterator[Frame]:
    """The frames of an open container's first video stream, as `iter_frames` yields them (every frame decoded,
    only those `max_fps` keeps converted; `index` counts the decoded ones). The caller closes the container.

    One decoding thread: a live stream arrives at its own pace and many share the cores (FFmpeg would otherwise start
    threads per core for each)."""
    stream = _video_stream(container)
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    yield from _decode(container, stream, _info(container, stream, rotation=0), limits, max_fps)


# ---------------------------------------------------------------------------------------------------------------------
# Internals


def _open(source: Source, filename: str | None, limits: MediaLimits) -> av.container.InputContainer:
    name = filename if filename is not None else (os.fspath(source) if isinstance(source, str | os.PathLike) else None)
    if name is not None:
        suffix = Path(name).suffix.lower()
        if suffix not in MEDIA_EXTENSIONS:
            accepted = " ".join(sorted(MEDIA_EXTENSIONS))
            raise UnsupportedMediaError(
                f"{Path(name).name!r}: file type {suffix or '(none)'!r} is not a video or image; accepted: {accepted}",
                reason="extension",
            )
    size = _size_of(source)
    if size == 0:
        raise UndecodableMediaError("the file is empty (0 bytes)", reason="zero_bytes")
    if size is not None and limits.max_bytes is not None and size > limits.max_bytes:
        raise MediaTooLargeError(f"the file has {size} bytes; the limit is {limits.max_bytes}", reason="bytes")
    # Before FFmpeg sees the file: opening it probes the stream, which decodes a whole PNG or WebP frame, so a small
    # file that claims a huge image would be allocated before its size is known.
    if (header := image_size(_head(source))) is not None:
        check_size(*header, limits)
    try:
        target = os.fspath(source) if isinstance(source, str | os.PathLike) else source
        return av.open(target, mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise UndecodableMediaError(f"cannot read the media container: {decoder_message(e)}", reason="container") from e


def _size_of(source: Source) -> int | None:
    if isinstance(source, str | os.PathLike):
        return os.stat(source).st_size
    try:
        pos = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None  # a pipe: unknown size


def _head(source: Source) -> bytes:
    """The first HEAD_BYTES of a path or a seekable file object (its position left where it was)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return f.read(HEAD_BYTES)
    try:
        pos = source.tell()
        head = source.read(HEAD_BYTES)
        source.seek(pos)
        return head
    except (AttributeError, OSError, ValueError):
        return b""  # a pipe: FFmpeg's codec parameters are the only check before decoding


def _open_video(
    source: Source, filename: str | None, limits: MediaLimits
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The open container and its first video stream, its frame size (from the codec parameters, which FFmpeg
    reads from the container and stream headers) checked before any frame is decoded."""
    container = _open(source, filename, limits)
    try:
        stream = _video_stream(container)
        check_size(stream.codec_context.width, stream.codec_context.height, limits)
    except BaseException:
        container.close()
        raise
    return container, stream


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise UnsupportedMediaError(f"the file has no video stream (it holds: {', '.join(kinds)})", reason="no_video")
    return container.streams.video[0]


def _info(container: av.container.InputContainer, stream: av.video.stream.VideoStream, rotation: int) -> MediaInfo:
    ctx = stream.codec_context
    w, h = (ctx.height, ctx.width) if rotation in (90, 270) else (ctx.width, ctx.height)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    return MediaInfo(
        width=w,
        height=h,
        fps=fps,
        duration_s=duration,
        frame_count=stream.frames or None,
        codec=ctx.name,
        rotation=rotation,
        has_video=True,
        format=container.format.name,
    )


def _first_frame_rotation(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Rotation of the display matrix, read from the first decoded frame (FFmpeg attaches the stream's matrix to
    frames; the headers do not expose it): degrees counterclockwise in {0, 90, 180, 270}."""
    try:
        for frame in container.decode(stream):
            return _quarter(frame.rotation or 0)
    except (av.FFmpegError, ValueError, OSError, EOFError):
        return 0  # iter_frames reports the decoding error with context
    return 0


def _quarter(degrees: float) -> int:
    return round(degrees / 90.0) % 4 * 90


def _rotate(image: np.ndarray, ccw_degrees: int) -> np.ndarray:
    if ccw_degrees == 90:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if ccw_degrees == 180:
        return cv2.rotate(image, cv2.ROTATE_180)
    if ccw_degrees == 270:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    return image


def check_size(width: int, height: int, limits: MediaLimits) -> None:
    """Refuse a frame size over `limits.max_pixels` (413) or under `limits.min_side` (415). Rotation changes
    neither, so the stored (unrotated) size is checked."""
    if width <= 0 or height <= 0:
        return  # unknown before the first frame: checked again per frame
    if width * height > limits.max_pixels:
        raise MediaTooLargeError(
            f"frames of {width}x{height} ({width * height / 1e6:.1f} MP) exceed the limit of "
            f"{limits.max_pixels / 1e6:.1f} MP",
            reason="pixels",
        )
    if min(width, height) < limits.min_side:
        raise UnsupportedMediaError(
            f"frames of {width}x{height} are too small to hold a face (at least {limits.min_side} px a side)",
            reason="too_small",
        )


def _decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: MediaInfo,
    limits: MediaLimits,
    max_fps: float | None,
) -> Iterator[Frame]:
    nominal = 1.0 / info.fps if info.fps and math.isfinite(info.fps) and info.fps > 0 else 0.0
    start = stream.start_time  # in stream time_base; None for some images and raw streams
    index, t_prev, t_kept = 0, None, -math.inf
    try:
        for frame in container.decode(stream):
            t = _timestamp(frame, stream, start, t_prev, nominal)
            t_prev = t
            if t > limits.max_duration_s:
                raise MediaTooLargeError(
                    f"the video runs past {limits.max_duration_s:.0f} s, the limit", reason="duration"
                )
            if limits.max_frames is not None and index >= limits.max_frames:
                raise MediaTooLargeError(f"the video has more than {limits.max_frames} frames", reason="frames")
            rotation = _quarter(frame.rotation) if frame.rotation else info.rotation
            if max_fps is None or t - t_kept >= 1.0 / max_fps - 1e-6:
                w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
                check_size(w, h, limits)
                image = _rotate(frame.to_ndarray(format="rgb24"), rotation)
                t_kept = t
                yield Frame(index=index, t=t, image=image)
            index += 1
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        raise UndecodableMediaError(
            f"decoding stopped after {index} frame(s): {decoder_message(e)}", reason="truncated" if index else "corrupt"
        ) from e
    if index == 0:
        raise UndecodableMediaError("the video stream holds no decodable frame", reason="no_frames")


def _timestamp(frame: av.VideoFrame, stream, start: int | None, t_prev: float | None, nominal: float) -> float:
    pts = frame.pts
    if pts is None or frame.time_base is None:
        return 0.0 if t_prev is None else t_prev + nominal
    t = float((pts - (start or 0)) * frame.time_base)
    if t_prev is not None and t <= t_prev:  # broken or repeated timestamps: keep time moving forward
        t = t_prev + (nominal or 1e-3)
    return max(t, 0.0)


_PATH = re.compile(r"""['"]?(?:[A-Za-z]:)?[/\\][^\s'"]*['"]?""")


def decoder_message(e: BaseException) -> str:
    """What FFmpeg said, without the file path it names (an upload's spool path is nobody's business)."""
    text = (getattr(e, "strerror", None) or str(e)).strip() or type(e).__name__
    return _PATH.sub("the file", text)
