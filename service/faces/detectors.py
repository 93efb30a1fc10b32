"""`create_detector(backend, **options)`: the one place that knows the backends; `thread_detector(backend)`: the
detector of the calling pipeline thread."""

from __future__ import annotations

import threading
from pathlib import Path

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


_local = threading.local()  # per pipeline thread: {backend: detector}


def thread_detector(backend: str | None = None, insightface_root: Path | None = None) -> FaceDetector:
    """The calling thread's detector for `backend` (default: DEFAULT_BACKEND), created on its first use and kept for
    the next videos and frames: detectors hold per-call buffers and are not thread-safe, and creating one loads its
    networks. REST uploads and live streams share the pipeline threads, so they share these. `insightface_root`: the
    folder of insightface model packs (the service's `insightface_root` setting)."""
    backend = backend or DEFAULT_BACKEND
    cache = _local.__dict__.setdefault("detectors", {})
    if backend not in cache:
        options = {"root": insightface_root} if backend == "insightface" and insightface_root is not None else {}
        cache[backend] = create_detector(backend, **options)
    return cache[backend]
