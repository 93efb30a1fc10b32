"""The face pipeline the REST endpoint, the WebSocket stream and `s2d predict` share: frames in, face windows out.

    pipeline = FacePipeline(create_detector(), num_frames=card.num_frames, window_seconds=card.window_seconds)
    for frame in iter_frames(path):
        tracks, windows = pipeline.push(frame)
        ...  # windows -> the expression model
    windows = pipeline.flush()

Detection runs on every `detect_every`-th frame. In between, a detector that can `refine` (MTCNN: one ONet pass on
each track's predicted box, ~1 ms) re-locates the tracked faces, so keypoints stay exact on every frame; other
detectors' tracks coast on their motion estimate.
"""

from __future__ import annotations

import numpy as np

from ..media import Frame
from .align import CROP_SIZE, align_faces
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
    ):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detector = detector
        self.detect_every = detect_every
        self.min_face_size = min_face_size
        self.crop_size = crop_size
        self.tracker = Tracker(tracker)
        self.windows = WindowBuilder(num_frames, window_seconds, hop_seconds)
        self._frames = 0

    def push(self, frame: Frame) -> tuple[list[Track], list[Window]]:
        """Process one frame: returns the tracks visible in it and the windows it completed."""
        detections = self._detect(frame)
        tracks = self._coast(frame.t) if detections is None else self.tracker.update(detections, frame.t)
        self._frames += 1
        windows = [w for tr in self.tracker.ended for w in self.windows.end(tr.track_id)]
        if tracks:
            crops = align_faces(frame.image, np.stack([tr.keypoints for tr in tracks]), self.crop_size)
            for track, crop in zip(tracks, crops, strict=True):
                windows += self.windows.push(track.track_id, frame.t, crop, track.box, track.keypoints)
        return tracks, windows

    def flush(self) -> list[Window]:
        """End of input: the windows of every track still open (short tracks padded; see `windows.py`)."""
        self.tracker.close()
        return self.windows.flush()

    def _detect(self, frame: Frame) -> list[Detection] | None:
        if self._frames % self.detect_every == 0:
            found = self.detector.detect(frame.image)
        elif self.tracker.tracks and hasattr(self.detector, "refine"):
            found = [d for d in self.detector.refine(frame.image, self.tracker.predicted_boxes(frame.t)) if d]
        else:
            return None
        return [d for d in found if d.size >= self.min_face_size]

    def _coast(self, t: float) -> list[Track]:
        """No detector output for this frame: move visible tracks along their motion, keypoints with them."""
        self.tracker.ended = []
        visible = [tr for tr in self.tracker.tracks if tr.visible]
        for tr in visible:
            shift = tr.velocity * (t - tr.last_t)
            tr.box, tr.last_t = tr.box + shift, t
            tr.keypoints = tr.keypoints + shift[:2]
        return visible
