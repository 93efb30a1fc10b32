"""Video files for benchmarks and tests: RGB frames encoded with PyAV (h264 in mp4 by default). The one encoder the
load scripts and the test suite share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 30,
    times: Sequence[float] | None = None,
    rotation: int = 0,
    codec: str = "libx264",
    container: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames [H, W, 3]; `times` (seconds) gives a variable frame rate through explicit timestamps (time
    base 1/1000); `container` forces a format (default: from the suffix); `options` are the encoder's."""
    path = Path(path)
    with av.open(str(path), "w", format=container) as out:
        stream = None
        for i, image in enumerate(frames):
            if stream is None:
                stream = _add_stream(out, image.shape[:2], fps, codec, times is not None, rotation, options)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode() if stream is not None else ():
            out.mux(packet)
    return path


def _add_stream(out, size, fps, codec, variable_rate, rotation, options):
    rate = Fraction(fps).limit_denominator(1001)
    stream = out.add_stream(codec, rate=rate)
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    stream.options = options if options is not None else ({"preset": "ultrafast"} if codec == "libx264" else {})
    if variable_rate:
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    else:
        stream.time_base = 1 / rate
    if rotation:
        stream.set_display_rotation(rotation)
    return stream
