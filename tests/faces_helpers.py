"""Real-face fixtures for the face-pipeline tests: the scenes and the encoder the benchmarks use (s2d/harness/scenes.py,
s2d/harness/video.py), under the names the tests import."""

from s2d.harness.scenes import astronaut_face, backdrop, lfw_patches, moving_faces, paste, reference_photos
from s2d.harness.video import write_video

__all__ = ["astronaut_face", "backdrop", "lfw_patches", "moving_faces", "paste", "reference_photos", "write_video"]
