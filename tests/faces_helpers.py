"""Real-face fixtures for the face-pipeline tests: the scenes and the encoder the benchmarks use (bench/scenes.py,
bench/video.py), under the names the tests import."""

from bench.scenes import astronaut_face, backdrop, lfw_patches, moving_faces, paste, reference_photos
from bench.video import write_video

__all__ = ["astronaut_face", "backdrop", "lfw_patches", "moving_faces", "paste", "reference_photos", "write_video"]
