"""`create_detector(backend, **options)`: the one place that knows the backends."""

from __future__ import annotations

from .types import FaceDetector

DEFAULT_BACKEND = "mtcnn"
BACKENDS = ("mtcnn", "insightface")


def create_detector(backend: str = DEFAULT_BACKEND, **options) -> FaceDetector:
    """`mtcnn` (default; MIT weights from PyPI, CPU, options of `MTCNNConfig`) or `insightface` (SCRFD from a local
    model pack, non-commercial weights; options of `InsightFaceDetector`)."""
    if backend == "mtcnn":
        from .mtcnn import MTCNNDetector

        return MTCNNDetector(**options)
    if backend == "insightface":
        from .insightface import InsightFaceDetector

        return InsightFaceDetector(**options)
    raise ValueError(f"unknown face detector backend {backend!r}; known: {', '.join(BACKENDS)}")
