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
- `frame_interval_s` (decode only what is used): a frame may come as a `DeferredImage`, decoded only when needed:
  on detection frames, and between them on the frames a window will likely pick (within half a frame interval of
  one of its sampling times), where ONet refines the tracked faces; on the other frames the tracks coast on their
  motion and no pixel is decoded. Should a window pick one of those after all (frames came late or were dropped),
  its crop decodes it then, aligned on the coasted keypoints.
- `detect_size_ratio`: while faces are tracked, a full detection looks only for faces at least this share of the
  smallest tracked face (MTCNN's image pyramid then skips its largest levels); every `full_detect_every`-th
  detection searches the whole size range, so a new small face is found within detect_every x full_detect_every
  frames. 0 turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from ..media import Frame
from .align import CROP_SIZE, align_face, align_faces
from .boxes import sizes
from .tracker import Track, Tracker, TrackerConfig
from .types import Detection, FaceDetector
from .windows import Window, WindowBuilder


class DeferredImage:
    """An encoded frame, decoded when first needed and at most once (a live stream's frames, of which most between
    detections are never needed whole)."""

    def __init__(self, decode: Callable[[], np.ndarray]):
        self._decode = decode
        self._image: np.ndarray | None = None

    def get(self) -> np.ndarray:
        if self._image is None:
            self._image = self._decode()
        return self._image

    @property
    def decoded(self) -> bool:
        return self._image is not None


def pixels(image: np.ndarray | DeferredImage) -> np.ndarray:
    return image.get() if isinstance(image, DeferredImage) else image


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
        frame_interval_s: float | None = None,
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
        self.frame_interval_s = frame_interval_s  # set: refine (and decode) only the frames a window may pick
        self.undecodable: list[tuple[int, Exception]] = []  # deferred frames a window picked that failed to decode
        self.tracker = Tracker(tracker)
        self.windows = WindowBuilder(num_frames, window_seconds, hop_seconds)
        self._frames = 0

    def push(self, frame: Frame) -> tuple[list[Track], list[Window]]:
        """Process one frame: returns the tracks visible in it and the windows it completed."""
        detections = self._detect(frame)
        tracks = self._coast(frame.t) if detections is None else self.tracker.update(detections, frame.t)
        self._frames += 1
        windows = [w for tr in self.tracker.ended for w in self.windows.end(tr.track_id)]
        for track, crop in zip(tracks, self._crops(frame, tracks), strict=True):
            windows += self.windows.push(track.track_id, frame.t, crop, track.box, track.keypoints)
        return tracks, windows

    def _crops(self, frame: Frame, tracks: list[Track]) -> list:
        """Each track's aligned crop, or (lazy_align) the function that makes it when a window picks the frame."""
        image = frame.image
        if isinstance(image, DeferredImage) and not image.decoded:
            return [partial(self._deferred_crop, image, tr.keypoints.copy(), frame.index) for tr in tracks]
        if self.lazy_align:
            return [partial(align_face, pixels(image), tr.keypoints.copy(), self.crop_size) for tr in tracks]
        if not tracks:
            return []
        return list(align_faces(pixels(image), np.stack([tr.keypoints for tr in tracks]), self.crop_size))

    def _deferred_crop(self, image: DeferredImage, keypoints: np.ndarray, index: int) -> np.ndarray:
        """A window picked a frame that was not decoded: decode it now. Should that fail (the header was sound, the
        data is not), the window gets a mid-grey crop in its place and `undecodable` says which frame."""
        try:
            return align_face(image.get(), keypoints, self.crop_size)
        except Exception as err:  # any decoder error: this one frame, never the stream
            self.undecodable.append((index, err))
            return np.full((self.crop_size, self.crop_size, 3), 128, np.uint8)

    def take_undecodable(self) -> list[tuple[int, Exception]]:
        """(frame index, error) of the deferred frames that failed to decode since the last call."""
        failed, self.undecodable = self.undecodable, []
        return failed

    def flush(self) -> list[Window]:
        """End of input: the windows of every track still open (short tracks padded; see `windows.py`)."""
        self.tracker.close()
        return self.windows.flush()

    def _detect(self, frame: Frame) -> list[Detection] | None:
        if self._frames % self.detect_every == 0:
            found = self._full_detection(pixels(frame.image))
        elif self.tracker.tracks and hasattr(self.detector, "refine") and self._may_be_used(frame.t):
            boxes = self.tracker.predicted_boxes(frame.t)
            found = [d for d in self.detector.refine(pixels(frame.image), boxes) if d]
        else:
            return None
        return [d for d in found if d.size >= self.min_face_size]

    def _may_be_used(self, t: float) -> bool:
        """Whether a frame between detections is worth refining (and decoding): always, unless `frame_interval_s`
        is set; then only where a window will likely pick it."""
        return self.frame_interval_s is None or self.windows.may_pick(t, self.frame_interval_s)

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
