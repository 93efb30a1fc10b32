"""The face pipeline the REST endpoint, the WebSocket stream and `s2d predict` share: frames in, face windows out.

    pipeline = FacePipeline(create_detector(), num_frames=card.num_frames, window_seconds=card.window_seconds)
    for frame in iter_frames(path):
        tracks, windows = pipeline.push(frame)
        ...  # windows -> the expression model
    windows = pipeline.flush()

Detection runs on every `detect_every`-th frame. In between, a detector that can `refine` (MTCNN: one ONet pass on
each track's predicted box, ~1 ms) re-locates the tracked faces, so keypoints stay exact on every frame; other
detectors' tracks coast on their motion estimate.

Per-frame savings (live streams, issue 28; figures in BENCHMARKS.md):
- `lazy_align`: a face is aligned only in the frames a window picks (`windows.py`: exactly the same windows).
- `detect_size_ratio`: while faces are tracked, a full detection looks only for faces at least this share of the
  smallest tracked face (MTCNN's image pyramid then skips its largest levels); every `full_detect_every`-th
  detection searches the whole size range, so a new small face is found within detect_every x full_detect_every
  frames. 0 turns it off.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..media import Frame
from .align import CROP_SIZE, align_face, align_faces
from .boxes import sizes
from .tracker import Track, Tracker, TrackerConfig
from .types import Detection, FaceDetector
from .windows import Window, WindowBuilder


class FacePipeline:
    def __init__(
        self,
        detector: FaceDetector,
        num_frames: int,
        window_seconds: float,
        hop_seconds: float | None = None,
        detect_every: int = 1,
        min_face_size: float = 0.0,
        tracker: TrackerConfig | None = None,
        crop_size: int = CROP_SIZE,
        lazy_align: bool = True,
        detect_size_ratio: float = 0.0,
        full_detect_every: int = 1,
    ):
        if detect_every < 1 or full_detect_every < 1:
            raise ValueError(f"detect_every, full_detect_every must be >= 1, got {detect_every}, {full_detect_every}")
        if not 0 <= detect_size_ratio <= 1:
            raise ValueError(f"detect_size_ratio must be in [0, 1], got {detect_size_ratio}")
        self.detector = detector
        self.detect_every = detect_every
        self.min_face_size = min_face_size
        self.crop_size = crop_size
        self.lazy_align = lazy_align
        self.detect_size_ratio, self.full_detect_every = detect_size_ratio, full_detect_every
        self._detections = 0
        self.tracker = Tracker(tracker)
        self.windows = WindowBuilder(num_frames, window_seconds, hop_seconds)
        self._frames = 0

    def push(self, frame: Frame) -> tuple[list[Track], list[Window]]:
        """Process one frame: returns the tracks visible in it and the windows it completed."""
        detections = self._detect(frame)
        tracks = self._coast(frame.t) if detections is None else self.tracker.update(detections, frame.t)
        self._frames += 1
        windows = [w for tr in self.tracker.ended for w in self.windows.end(tr.track_id)]
        for track, crop in zip(tracks, self._crops(frame.image, tracks), strict=True):
            windows += self.windows.push(track.track_id, frame.t, crop, track.box, track.keypoints)
        return tracks, windows

    def _crops(self, image: np.ndarray, tracks: list[Track]) -> list:
        """Each track's aligned crop, or (lazy_align) the function that makes it when a window picks the frame."""
        if self.lazy_align:
            return [partial(align_face, image, tr.keypoints.copy(), self.crop_size) for tr in tracks]
        if not tracks:
            return []
        return list(align_faces(image, np.stack([tr.keypoints for tr in tracks]), self.crop_size))

    def flush(self) -> list[Window]:
        """End of input: the windows of every track still open (short tracks padded; see `windows.py`)."""
        self.tracker.close()
        return self.windows.flush()

    def _detect(self, frame: Frame) -> list[Detection] | None:
        if self._frames % self.detect_every == 0:
            found = self._full_detection(frame.image)
        elif self.tracker.tracks and hasattr(self.detector, "refine"):
            found = [d for d in self.detector.refine(frame.image, self.tracker.predicted_boxes(frame.t)) if d]
        else:
            return None
        return [d for d in found if d.size >= self.min_face_size]

    def _full_detection(self, image: np.ndarray) -> list[Detection]:
        """Detection on the whole frame: for faces near the tracked ones' sizes when it can, over every size on every
        `full_detect_every`-th detection and whenever nothing is tracked."""
        floor = self._size_floor()
        self._detections += 1
        if floor is None:
            return self.detector.detect(image)
        return self.detector.detect_larger(image, floor)

    def _size_floor(self) -> float | None:
        tracks = self.tracker.tracks
        if not (self.detect_size_ratio and tracks and hasattr(self.detector, "detect_larger")):
            return None
        if self._detections % self.full_detect_every == 0:
            return None
        return self.detect_size_ratio * float(sizes(np.stack([tr.box for tr in tracks])).min())

    def _coast(self, t: float) -> list[Track]:
        """No detector output for this frame: move visible tracks along their motion, keypoints with them."""
        self.tracker.ended = []
        visible = [tr for tr in self.tracker.tracks if tr.visible]
        for tr in visible:
            shift = tr.velocity * (t - tr.last_t)
            tr.box, tr.last_t = tr.box + shift, t
            tr.keypoints = tr.keypoints + shift[:2]
        return visible
