"""Reading frames and choosing which frames make a clip (the official S2D temporal sampling).

Sampling works on frame indices with pure numpy functions so the train/eval policies are testable without images.
Reading a clip tolerates unreadable frames (on_error="skip": the nearest readable neighbour stands in, counted and
logged once per file), because a few broken frames in DFEW/MAFW must not end a 100-epoch run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .layouts import DatasetError

log = logging.getLogger(__name__)
_warned: set[str] = set()  # files already logged in this process: a broken frame is read every epoch


class FrameError(DatasetError):
    """A frame (or every frame of a clip) could not be read; the message names the path or clip."""


def read_frame(path: str | Path) -> np.ndarray:
    """The image at `path` as uint8 RGB [H, W, 3] (grey and RGBA converted); FrameError if missing or unreadable.

    Reads the bytes with numpy and decodes in memory, so no file handle outlives the call (DataLoader workers).
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise FrameError(f"cannot read frame {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB) if data.size else None  # RGB directly: no second pass
    if image is None:
        raise FrameError(f"cannot decode frame {path} (empty or not an image)")
    return image


# ---------------------------------------------------------------------------------------------------------------------
# Temporal sampling


def _check(num_available: int, num_frames: int) -> None:
    if num_available < 1 or num_frames < 1:
        raise ValueError(f"need at least one frame available and requested, got {num_available}, {num_frames}")


def _window(start: int, num_available: int, num_frames: int) -> np.ndarray:
    """num_frames consecutive indices from `start`; past the end the last frame repeats (the official padding)."""
    return np.minimum(np.arange(start, start + num_frames), num_available - 1).astype(np.int64)


def train_window(num_available: int, num_frames: int = 16, rng: np.random.Generator | None = None) -> np.ndarray:
    """A random window of consecutive frames (start uniform over every valid position); short clips are padded."""
    _check(num_available, num_frames)
    rng = rng if rng is not None else np.random.default_rng()
    start = int(rng.integers(0, num_available - num_frames + 1)) if num_available > num_frames else 0
    return _window(start, num_available, num_frames)


def test_windows(num_available: int, num_frames: int = 16, views: int = 2) -> list[np.ndarray]:
    """`views` windows evenly spaced from the first to the last (views=2: first and last num_frames frames).

    Matches the official test segments (start = k * (n - T) / (views - 1), floored); one view is the centre window.
    """
    _check(num_available, num_frames)
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    span = max(num_available - num_frames, 0)
    starts = [span // 2] if views == 1 else [k * span // (views - 1) for k in range(views)]
    return [_window(s, num_available, num_frames) for s in starts]


test_windows.__test__ = False  # a sampling function, not a test: pytest must not collect it where it is imported


def uniform_indices(num_available: int, num_frames: int) -> np.ndarray:
    """One frame from the centre of each of num_frames equal segments of the whole clip (repeats when short)."""
    _check(num_available, num_frames)
    centres = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(np.floor(centres), num_available - 1).astype(np.int64)


def uniform_times(duration_s: float, num_frames: int) -> np.ndarray:
    """Timestamps (seconds) of the centres of num_frames equal segments: `uniform_indices` for decoded video."""
    if duration_s <= 0 or num_frames < 1:
        raise ValueError(f"need a positive duration and frame count, got {duration_s}, {num_frames}")
    return (np.arange(num_frames) + 0.5) * (duration_s / num_frames)


# ---------------------------------------------------------------------------------------------------------------------
# Reading clips


def _warn_once(path: Path, error: FrameError) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("unreadable frame replaced by its nearest readable neighbour: %s (%s)", path, error)


class _ClipReader:
    """Reads frames of one clip, each file at most once, standing in the nearest readable frame when skipping."""

    def __init__(self, frames: Sequence[Path], clip_id: str, on_error: str) -> None:
        self.frames, self.clip_id, self.skip = frames, clip_id, on_error == "skip"
        self.cache: dict[int, np.ndarray | None] = {}
        self.bad = 0

    def _try(self, i: int) -> np.ndarray | None:
        if i not in self.cache:
            try:
                self.cache[i] = read_frame(self.frames[i])
            except FrameError as error:
                if not self.skip:
                    raise FrameError(f"clip {self.clip_id}: {error}") from None
                _warn_once(self.frames[i], error)
                self.cache[i] = None
        return self.cache[i]

    def get(self, i: int) -> np.ndarray:
        image = self._try(i)
        if image is not None:
            return image
        self.bad += 1
        for distance in range(1, len(self.frames)):
            for j in (i - distance, i + distance):
                if 0 <= j < len(self.frames) and (image := self._try(j)) is not None:
                    return image
        raise FrameError(f"clip {self.clip_id}: none of its {len(self.frames)} frames can be read ({self.frames[0]})")


def load_clip(
    frames: Sequence[Path], indices: Sequence[int], *, clip_id: str = "?", on_error: str = "skip"
) -> tuple[np.ndarray, int]:
    """Frames `indices` of a clip as uint8 [T, H, W, 3] and how many had to be replaced by a neighbour.

    Frames of another size than the first are resized to it, so variable face crops still stack.
    """
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', not {on_error!r}")
    reader = _ClipReader(frames, clip_id, on_error)
    images = [reader.get(int(i)) for i in indices]
    height, width = images[0].shape[:2]
    images = [im if im.shape[:2] == (height, width) else cv2.resize(im, (width, height)) for im in images]
    return np.stack(images), reader.bad
