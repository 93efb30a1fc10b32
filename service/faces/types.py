"""The shapes every face component agrees on: a detection, and the detector protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# Keypoint order everywhere (the insightface / ArcFace convention): image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner. "Left" is the viewer's left (the person's right eye).
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


@dataclass
class Detection:
    box: np.ndarray  # float32 [4]: x1, y1, x2, y2 in pixels of the image given to `detect`
    score: float  # detector confidence in [0, 1]
    keypoints: np.ndarray  # float32 [5, 2]: x, y in pixels, order KEYPOINT_NAMES
    landmarks: np.ndarray | None = field(default=None)  # float32 [K, 2] dense landmarks when the backend has them

    @property
    def size(self) -> float:
        """Face size in pixels: the longer side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB image. Implementations are not thread-safe: one detector per worker."""

    name: str
    commercial_use: bool  # whether the weights' licence allows commercial use

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """image_rgb: uint8 [H, W, 3] RGB. Returns detections sorted by score, best first."""
        ...


@runtime_checkable
class RefiningDetector(FaceDetector, Protocol):
    """A detector that can re-locate known faces cheaply (used between full detections)."""

    def refine(self, image_rgb: np.ndarray, boxes: np.ndarray) -> list[Detection | None]:
        """boxes: float [N, 4] predicted boxes. One result per box: the face found there, or None."""
        ...
