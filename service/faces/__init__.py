"""Faces in video: detect (MTCNN by default, insightface SCRFD optional), track, align to 224x224, cut windows.

Never imports torch. See `pipeline.FacePipeline` for the composition the service uses.
"""

from .align import CROP_SIZE, TEMPLATE_224, align_face, align_faces, similarity_transforms
from .aligned import ALIGNED_TRACK, AlignedWindows, fit_crop
from .detectors import BACKENDS, DEFAULT_BACKEND, create_detector, thread_detector
from .insightface import LICENCE_WARNING, InsightFaceDetector, ModelPack, ModelPackError, find_pack
from .mtcnn import DetectorWeightsError, MTCNNConfig, MTCNNDetector
from .pipeline import DeferredImage, FacePipeline
from .tracker import Track, Tracker, TrackerConfig
from .types import KEYPOINT_NAMES, Detection, FaceDetector
from .windows import Window, WindowBuilder

__all__ = [
    "ALIGNED_TRACK",
    "BACKENDS",
    "CROP_SIZE",
    "DEFAULT_BACKEND",
    "KEYPOINT_NAMES",
    "LICENCE_WARNING",
    "TEMPLATE_224",
    "AlignedWindows",
    "DeferredImage",
    "Detection",
    "DetectorWeightsError",
    "FaceDetector",
    "FacePipeline",
    "InsightFaceDetector",
    "MTCNNConfig",
    "MTCNNDetector",
    "ModelPack",
    "ModelPackError",
    "Track",
    "Tracker",
    "TrackerConfig",
    "Window",
    "WindowBuilder",
    "align_face",
    "align_faces",
    "create_detector",
    "find_pack",
    "fit_crop",
    "similarity_transforms",
    "thread_detector",
]
