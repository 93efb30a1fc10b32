"""Windows of video whose frames are already aligned face crops of one person (`mode=aligned`): no detection, each
frame brought to the model's crop size by one resize rule, then cut into windows as face tracks are. The REST upload
path and the live stream both use it, so the same frames give the same windows and probabilities on either."""

from __future__ import annotations

import cv2
import numpy as np

from ..media import Frame
from .align import CROP_SIZE
from .windows import Window, WindowBuilder

ALIGNED_TRACK = 0  # the one person of an aligned video


def fit_crop(image: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """`image` resized to size x size: area averaging when shrinking (no aliasing), bilinear when enlarging (area
    averaging degenerates to blocky nearest-neighbour there)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if h > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


class AlignedWindows:
    """`push` one frame (its whole image is the face), get the windows it completed; `flush` at the end of input.
    The face box of every frame is the whole frame."""

    def __init__(self, num_frames: int, window_seconds: float, hop_seconds: float | None = None, size: int = CROP_SIZE):
        self.size = size
        self.windows = WindowBuilder(num_frames, window_seconds, hop_seconds)

    def push(self, frame: Frame) -> list[Window]:
        h, w = frame.image.shape[:2]
        box = np.array([0, 0, w, h], np.float32)
        return self.windows.push(ALIGNED_TRACK, frame.t, fit_crop(frame.image, self.size), box)

    def flush(self) -> list[Window]:
        return self.windows.flush()
