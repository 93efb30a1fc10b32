"""Multi-face tracker: IoU matching against motion-predicted boxes, stable ids, coasting through short misses.

Each track keeps a constant-velocity estimate of its box (pixels per second, smoothed), so when two faces cross
the predictions stay apart and ids do not swap; a face hidden for up to `max_age_s` keeps its id when it reappears
near its predicted place. Tracks unseen for longer end. At most `max_tracks` tracks exist: new faces beyond that
are ignored (largest faces win when several are new at once).

When frames are dropped (an overloaded live stream) the gaps between updates grow, and a face that turned, stopped
or left and came back is no longer where its velocity says: the IoU gate misses it and it would get a new id. A
second pass therefore gives each still-unmatched track the nearest unmatched detection of a similar size whose
centre lies near the track's path (from where it was last seen to where it is predicted now), within a reach that
grows with the time since it was last seen: faces move a bounded number of face sizes per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .boxes import iou_matrix, sizes
from .types import Detection


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # float32 [4] x1, y1, x2, y2: last observed (or predicted, when not seen) box
    keypoints: np.ndarray  # float32 [5, 2]
    score: float
    first_t: float  # seconds
    last_t: float  # seconds of `box`: the last matched detection's, or of the prediction it coasted to
    hits: int = 1  # matched detections
    misses: int = 0  # consecutive updates without a match
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change, pixels / second
    visible: bool = True  # matched at the latest update
    # The last matched detection's box and time, which velocity is measured from: `box` and `last_t` move on with
    # the prediction on frames the pipeline does not refine (FacePipeline._coast).
    seen_box: np.ndarray | None = None
    seen_t: float | None = None

    def __post_init__(self):
        if self.seen_box is None:
            self.seen_box, self.seen_t = self.box.copy(), self.last_t

    def predict(self, t: float) -> np.ndarray:
        return self.box + self.velocity * (t - self.last_t)


@dataclass(frozen=True)
class TrackerConfig:
    iou_threshold: float = 0.2  # minimum IoU between a predicted box and a detection to match
    max_age_s: float = 1.0  # a track unseen this long ends
    max_tracks: int = 8
    min_hits: int = 1  # matches before a track is reported (1: at once)
    velocity_smoothing: float = 0.5  # weight of the newest velocity measurement
    # Second pass (centre distance, in face sizes): a detection is within reach of an unmatched track when its centre
    # is within `reach + reach_per_s * (seconds since the track was seen)` of the track's path; 0 and 0 turn it off.
    reach: float = 0.5
    reach_per_s: float = 4.0
    max_size_ratio: float = 1.5  # the second pass only pairs boxes whose sizes differ less than this factor


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
        matches += self._match_by_distance(matches, det_boxes, predicted, t)
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

    def _match_by_distance(
        self, matches: list[tuple[int, int]], det_boxes: np.ndarray, predicted: np.ndarray, t: float
    ) -> list[tuple[int, int]]:
        """Pairs (track, detection) among those `matches` left out, nearest (relative to the track's reach) first."""
        cfg = self.config
        tracks = [i for i in range(len(self.tracks)) if i not in {ti for ti, _ in matches}]
        dets = [i for i in range(len(det_boxes)) if i not in {di for _, di in matches}]
        if not tracks or not dets:
            return []
        seen = np.stack([self.tracks[i].box for i in tracks])
        gap = np.float32([t - self.tracks[i].last_t for i in tracks])
        size = sizes(seen)
        reach = (cfg.reach + cfg.reach_per_s * gap) * size
        distance = _distance_to_path(_centres(det_boxes[dets]), _centres(seen), _centres(predicted[tracks]))
        ratio = sizes(det_boxes[dets])[None, :] / size[:, None]
        near = (distance < reach[:, None]) & (ratio < cfg.max_size_ratio) & (ratio > 1 / cfg.max_size_ratio)
        near &= (gap <= cfg.max_age_s)[:, None]  # an expired track ends rather than coming back from afar
        closeness = np.where(near, 1 - distance / np.maximum(reach[:, None], 1e-9), -np.inf)
        return [(tracks[ti], dets[di]) for ti, di in _greedy_match(closeness, 0.0)]

    def _observe(self, track: Track, det: Detection, t: float) -> None:
        dt = t - track.seen_t
        if dt > 0:
            measured = (det.box - track.seen_box) / dt
            a = self.config.velocity_smoothing if track.hits > 1 else 1.0
            track.velocity = (a * measured + (1 - a) * track.velocity).astype(np.float32)
        track.box, track.keypoints, track.score = det.box.copy(), det.keypoints.copy(), det.score
        track.seen_box, track.seen_t = track.box.copy(), t
        track.last_t, track.hits, track.misses, track.visible = t, track.hits + 1, 0, True


def _greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (track, detection) by decreasing IoU (or any closeness), each used once; enough for the few faces of a
    video frame."""
    pairs = []
    if iou.size == 0:
        return pairs
    iou = iou.copy()
    while True:
        ti, di = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[ti, di] < threshold:
            return pairs
        pairs.append((int(ti), int(di)))
        iou[ti, :] = -np.inf
        iou[:, di] = -np.inf


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _distance_to_path(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """[tracks, points] distance from each point [P, 2] to each segment starts[T] -> ends[T]."""
    span = ends - starts
    length2 = np.maximum((span**2).sum(axis=1), 1e-9)
    along = ((points[None, :, :] - starts[:, None, :]) * span[:, None, :]).sum(axis=2) / length2[:, None]
    nearest = starts[:, None, :] + np.clip(along, 0, 1)[..., None] * span[:, None, :]
    return np.linalg.norm(points[None, :, :] - nearest, axis=2)
