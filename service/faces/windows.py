"""Per-track clip windows: T aligned crops sampled uniformly over `window_seconds`, advancing by `hop_seconds`.

Sampling: window [t_start, t_start + window_seconds] is cut into T equal bins and each bin's centre takes the
track's frame nearest in time, so a window holds the same span of real time at 24, 30, 60 fps or variable frame
rate (a slower video repeats frames, a faster one skips). A window is emitted as soon as the track has a frame at
or after its last sampling time. The first window of a track starts at the track's first frame.

When a track ends (it left the scene, or the video ended) its frames after the last emitted window still give one
window, starting on the hop grid and padded by repeating the last frame (`padded=True`); a track shorter than one
window gives exactly that one window. Memory: only frames still reachable by a future window are kept.

Lazy crops: `push` may take, instead of a crop, a function that makes it (the pipeline's alignment). It is called
only for frames a window picks: once the track's next frame has come, a frame's neighbours in time are known, and
so is whether it is the nearest to any sampling time of this or a later window (the same `_nearest` rule on the
same float sums as `_emit`, so the windows are exactly those of eager crops); a frame no window picks is never
aligned. At most the newest frame of each track waits with its function (and the image it holds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Window:
    track_id: int
    t_start: float  # seconds
    t_end: float  # seconds, t_start + window_seconds
    frames: np.ndarray  # uint8 [T, 224, 224, 3] aligned RGB face crops
    boxes: np.ndarray  # float32 [T, 4] face boxes in frame pixels
    timestamps: np.ndarray  # float64 [T] seconds of the frames used
    padded: bool = False  # the track ended before t_end: its last frame repeats
    keypoints: np.ndarray | None = None  # float32 [T, 5, 2] face keypoints in frame pixels, when the source has them


@dataclass
class _TrackBuffer:
    next_start: float
    # [t, crop [224, 224, 3] (or the function making it, or None: no window picks it), box [4], keypoints or None]
    items: deque = field(default_factory=deque)
    covered_until: float = -np.inf  # end of the last emitted window


class WindowBuilder:
    def __init__(self, num_frames: int, window_seconds: float, hop_seconds: float | None = None):
        if num_frames < 1 or window_seconds <= 0:
            raise ValueError(f"need num_frames >= 1 and window_seconds > 0, got {num_frames}, {window_seconds}")
        hop = window_seconds if hop_seconds is None else hop_seconds
        if hop <= 0:
            raise ValueError(f"hop_seconds must be > 0, got {hop}")
        self.num_frames, self.window_seconds, self.hop_seconds = num_frames, float(window_seconds), float(hop)
        self._offsets = (np.arange(num_frames) + 0.5) * (self.window_seconds / num_frames)  # bin centres
        self._tracks: dict[int, _TrackBuffer] = {}

    def push(
        self,
        track_id: int,
        t: float,
        crop: np.ndarray | Callable[[], np.ndarray],
        box: np.ndarray,
        keypoints: np.ndarray | None = None,
    ) -> list[Window]:
        """Add one aligned crop of a track at time t (seconds), or a function making it (called only if a window
        picks the frame); returns the windows completed by it."""
        buf = self._tracks.get(track_id)
        if buf is None:
            buf = self._tracks[track_id] = _TrackBuffer(next_start=t)
        points = None if keypoints is None else np.array(keypoints, np.float32)
        buf.items.append([t, crop, np.asarray(box, np.float32), points])
        if len(buf.items) > 1 and callable(buf.items[-2][1]):
            self._settle(buf)
        out = []
        while t >= buf.next_start + self._offsets[-1]:
            out.append(self._emit(track_id, buf, padded=False))
        return out

    def may_pick(self, t: float, frame_interval: float) -> bool:
        """Whether a frame at time t will likely be picked by some track's window, frames coming every
        `frame_interval` seconds: a sampling time of a window still to come lies within half an interval of t (the
        nearest-frame rule of `_emit`, before the next frame is known)."""
        half = frame_interval / 2 * (1 + 1e-6)  # a target midway between two frames: both may be picked
        return any(
            np.any(np.abs(targets - t) <= half)
            for buf in self._tracks.values()
            for targets in self._targets_until(buf, t + half)
        )

    def end(self, track_id: int) -> list[Window]:
        """The track is over: emit the window holding its uncovered frames, if any, and forget it."""
        buf = self._tracks.pop(track_id, None)
        if buf is None or not buf.items or buf.items[-1][0] <= buf.covered_until:
            return []
        return [self._emit(track_id, buf, padded=True)]

    def flush(self) -> list[Window]:
        return [w for track_id in list(self._tracks) for w in self.end(track_id)]

    def _emit(self, track_id: int, buf: _TrackBuffer, padded: bool) -> Window:
        times = np.array([item[0] for item in buf.items])
        targets = buf.next_start + self._offsets
        pick = _nearest(times, targets)
        for i in pick:
            _make_crop(buf.items[i])
        keypoints = [buf.items[i][3] for i in pick]
        window = Window(
            track_id=track_id,
            t_start=buf.next_start,
            t_end=buf.next_start + self.window_seconds,
            frames=np.stack([buf.items[i][1] for i in pick]),
            boxes=np.stack([buf.items[i][2] for i in pick]),
            timestamps=times[pick],
            padded=padded and bool(targets[-1] > times[-1]),
            keypoints=None if any(k is None for k in keypoints) else np.stack(keypoints),
        )
        buf.covered_until = window.t_end
        buf.next_start += self.hop_seconds
        # Keep the last frame before the next window's first target too: it may be the nearest to it.
        first_target = buf.next_start + self._offsets[0]
        while len(buf.items) > 1 and buf.items[1][0] <= first_target:
            buf.items.popleft()
        return window

    def _settle(self, buf: _TrackBuffer) -> None:
        """The frame before the newest now has both neighbours: make its crop if a window will pick it, else drop
        the function (and the image it holds)."""
        item = buf.items[-2]
        times = np.array([it[0] for it in list(buf.items)[-3:]])
        own = len(times) - 2
        # later windows' targets are past the newest frame
        if any(np.any(_nearest(times, targets) == own) for targets in self._targets_until(buf, times[-1])):
            _make_crop(item)
        else:
            item[1] = None

    def _targets_until(self, buf: _TrackBuffer, until: float):
        """The sampling times of the track's windows still to come, window by window, while a window's first one is
        at or before `until` (the same sums as `_emit`'s next_start)."""
        start = buf.next_start
        while start + self._offsets[0] <= until:
            yield start + self._offsets
            start += self.hop_seconds


def _make_crop(item: list) -> None:
    if callable(item[1]):
        item[1] = item[1]()


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the time nearest to each target (times ascending)."""
    right = np.clip(np.searchsorted(times, targets), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    return np.where(np.abs(times[left] - targets) <= np.abs(times[right] - targets), left, right)
