"""Multi-face tracker: IoU matching against motion-predicted boxes, stable ids, coasting through short misses.

Each track keeps a constant-velocity estimate of its box (pixels per second, smoothed), so when two faces cross
the predictions stay apart and ids do not swap; a face hidden for up to `max_age_s` keeps its id when it reappears
near its predicted place. Tracks unseen for longer end. At most `max_tracks` tracks exist: new faces beyond that
are ignored (largest faces win when several are new at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .boxes import iou_matrix
from .types import Detection


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # float32 [4] x1, y1, x2, y2: last observed (or predicted, when not seen) box
    keypoints: np.ndarray  # float32 [5, 2]
    score: float
    first_t: float  # seconds
    last_t: float  # seconds of the last matched detection
    hits: int = 1  # matched detections
    misses: int = 0  # consecutive updates without a match
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change, pixels / second
    visible: bool = True  # matched at the latest update

    def predict(self, t: float) -> np.ndarray:
        return self.box + self.velocity * (t - self.last_t)


@dataclass(frozen=True)
class TrackerConfig:
    iou_threshold: float = 0.2  # minimum IoU between a predicted box and a detection to match
    max_age_s: float = 1.0  # a track unseen this long ends
    max_tracks: int = 8
    min_hits: int = 1  # matches before a track is reported (1: at once)
    velocity_smoothing: float = 0.5  # weight of the newest velocity measurement


class Tracker:
    def __init__(self, config: TrackerConfig | None = None, **options):
        self.config = config or TrackerConfig(**options)
        self.tracks: list[Track] = []
        self.ended: list[Track] = []  # tracks ended by the latest update (the pipeline flushes their windows)
        self._next_id = 1

    def predicted_boxes(self, t: float) -> np.ndarray:
        return np.stack([tr.predict(t) for tr in self.tracks]) if self.tracks else np.empty((0, 4), np.float32)

    def update(self, detections: list[Detection], t: float) -> list[Track]:
        """Match `detections` (found at time t, seconds) to tracks; returns the tracks visible at t."""
        cfg = self.config
        predicted = self.predicted_boxes(t)
        det_boxes = np.stack([d.box for d in detections]) if detections else np.empty((0, 4), np.float32)
        matches = _greedy_match(iou_matrix(predicted, det_boxes), cfg.iou_threshold)
        matched_tracks, matched_dets = set(), set()
        for ti, di in matches:
            self._observe(self.tracks[ti], detections[di], t)
            matched_tracks.add(ti)
            matched_dets.add(di)
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.misses += 1
                track.visible = False
        self.ended = [tr for tr in self.tracks if t - tr.last_t > cfg.max_age_s]
        self.tracks = [tr for tr in self.tracks if t - tr.last_t <= cfg.max_age_s]
        new = sorted((d for i, d in enumerate(detections) if i not in matched_dets), key=lambda d: -d.size)
        for det in new[: max(cfg.max_tracks - len(self.tracks), 0)]:
            self.tracks.append(Track(self._next_id, det.box.copy(), det.keypoints.copy(), det.score, t, t))
            self._next_id += 1
        return [tr for tr in self.tracks if tr.visible and tr.hits >= cfg.min_hits]

    def close(self) -> list[Track]:
        """End every track (end of the video); returns them."""
        self.ended, self.tracks = self.tracks, []
        return self.ended

    def _observe(self, track: Track, det: Detection, t: float) -> None:
        dt = t - track.last_t
        if dt > 0:
            measured = (det.box - track.box) / dt
            a = self.config.velocity_smoothing if track.hits > 1 else 1.0
            track.velocity = (a * measured + (1 - a) * track.velocity).astype(np.float32)
        track.box, track.keypoints, track.score = det.box.copy(), det.keypoints.copy(), det.score
        track.last_t, track.hits, track.misses, track.visible = t, track.hits + 1, 0, True


def _greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (track, detection) by decreasing IoU, each used once; enough for the few faces of a video frame."""
    pairs = []
    if iou.size == 0:
        return pairs
    iou = iou.copy()
    while True:
        ti, di = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[ti, di] < threshold:
            return pairs
        pairs.append((int(ti), int(di)))
        iou[ti, :] = -1
        iou[:, di] = -1
