"""The insightface backend: SCRFD detection (5 keypoints) and optionally the 2d106 landmark model, from a local
model pack, run with ONNX Runtime (CUDA or CPU). The `insightface` pip package is not needed.

LICENCE: insightface's model packs (buffalo_l, buffalo_s, antelopev2) are for NON-COMMERCIAL RESEARCH ONLY. Selecting
this backend logs and warns that; the offline default (MTCNN) has no such restriction.

Packs are never downloaded here (not inside a request, not in tests). Layouts recognised, under a root folder
(the service's `insightface_root` setting, `S2D_INSIGHTFACE_ROOT`; else `~/.insightface/models`), as insightface's
own `FaceAnalysis(name=...)` unpacks them:

    buffalo_l/   det_10g.onnx  2d106det.onnx  1k3d68.onnx  genderage.onnx  w600k_r50.onnx
    buffalo_s/   det_500m.onnx 2d106det.onnx  1k3d68.onnx  genderage.onnx  w600k_mbf.onnx
    antelopev2/  scrfd_10g_bnkps.onnx 2d106det.onnx 1k3d68.onnx genderage.onnx glintr100.onnx
                 (the antelopev2 zip sometimes unpacks one level deeper: antelopev2/antelopev2/*.onnx; both work)

SCRFD outputs (one set per stride 8, 16, 32; two anchors per location): scores [N, 1], box distances [N, 4]
(left, top, right, bottom in stride units) and keypoint offsets [N, 10]; outputs are ordered all scores, then all
boxes, then all keypoints. Input: RGB, (x - 127.5) / 128, NCHW, the image letterboxed into 640x640 (top-left).
SCRFD misses faces that fill most of the frame; when nothing is found the image is padded to twice its size and
searched again.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .boxes import nms
from .mtcnn import DetectorWeightsError, _onnxruntime
from .types import Detection

log = logging.getLogger(__name__)

PACKS = ("buffalo_l", "buffalo_s", "antelopev2")
LICENCE_WARNING = (
    "insightface model packs (buffalo_l, buffalo_s, antelopev2) are licensed for non-commercial research only; "
    "do not use this backend in a commercial product (the default `mtcnn` backend has MIT-licensed weights)"
)
_DETECTOR_NAMES = ("det_10g.onnx", "det_500m.onnx", "det_2.5g.onnx", "scrfd_10g_bnkps.onnx")


class ModelPackError(DetectorWeightsError, FileNotFoundError):
    """The insightface model pack is not where we looked; the message says how to get it."""


@dataclass(frozen=True)
class ModelPack:
    name: str
    path: Path
    detector: Path  # the SCRFD .onnx
    landmark_106: Path | None  # 2d106det.onnx when present


def default_root() -> Path:
    """Where insightface itself unpacks its packs; the service passes its `insightface_root` setting instead."""
    return Path.home() / ".insightface" / "models"


def find_pack(name: str = "buffalo_l", root: str | os.PathLike | None = None) -> ModelPack:
    """Locate a model pack: `name` is a pack folder under `root`, or a path to a pack folder."""
    root = Path(root).expanduser() if root is not None else default_root()
    candidate = Path(name).expanduser()
    folder = candidate if candidate.is_dir() else root / name
    for where in (folder, folder / folder.name):  # antelopev2.zip unpacks to antelopev2/antelopev2
        detector = next((where / f for f in _DETECTOR_NAMES if (where / f).is_file()), None)
        if detector is None:
            detector = next(iter(sorted(where.glob("*scrfd*.onnx"))), None) if where.is_dir() else None
        if detector is not None:
            lm = where / "2d106det.onnx"
            return ModelPack(folder.name, where, detector, lm if lm.is_file() else None)
    raise ModelPackError(
        f"insightface model pack {name!r} not found (looked in {folder}"
        f"{' and ' + str(folder / folder.name) if folder.name else ''} for one of {', '.join(_DETECTOR_NAMES)}). "
        f"Get it yourself from the insightface model zoo (github.com/deepinsight/insightface, 'model_zoo': "
        f"{name}.zip), unzip it so that {root / name}/det_*.onnx exists, or set S2D_INSIGHTFACE_ROOT. "
        f"Nothing is downloaded automatically. {LICENCE_WARNING}."
    )


class InsightFaceDetector:
    name = "insightface"
    commercial_use = False
    licence = LICENCE_WARNING

    def __init__(
        self,
        pack: str = "buffalo_l",
        root: str | os.PathLike | None = None,
        providers: list[str] | None = None,
        input_size: int = 640,
        threshold: float = 0.5,
        min_face_size: float = 0.0,
        landmarks_106: bool = False,
    ):
        self.pack = find_pack(pack, root)
        warnings.warn(LICENCE_WARNING, UserWarning, stacklevel=2)
        log.warning("face detector: insightface pack %s (%s). %s", self.pack.name, self.pack.path, LICENCE_WARNING)
        ort = _onnxruntime()
        available = ort.get_available_providers()
        providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
        self.session = ort.InferenceSession(str(self.pack.detector), providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.input_size, self.threshold, self.min_face_size = input_size, threshold, min_face_size
        self.landmark_session = None
        if landmarks_106 and self.pack.landmark_106 is not None:
            self.landmark_session = ort.InferenceSession(str(self.pack.landmark_106), providers=providers)

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        dets = self._detect(image_rgb)
        if not dets:  # close-up: SCRFD misses faces filling the frame; search again with the image at half scale
            h, w = image_rgb.shape[:2]
            canvas = np.full((2 * h, 2 * w, 3), 127, np.uint8)
            canvas[h // 2 : h // 2 + h, w // 2 : w // 2 + w] = image_rgb
            shift = np.array([w // 2, h // 2], np.float32)
            dets = [Detection(d.box - np.tile(shift, 2), d.score, d.keypoints - shift) for d in self._detect(canvas)]
        dets = [d for d in dets if d.size >= self.min_face_size]
        if self.landmark_session is not None:
            for d in dets:
                d.landmarks = self._landmarks_106(image_rgb, d.box)
        return dets

    def _detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        scale = self.input_size / max(h, w)
        resized = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))
        blob = np.zeros((1, 3, self.input_size, self.input_size), np.float32)
        blob[0, :, : resized.shape[0], : resized.shape[1]] = ((resized.astype(np.float32) - 127.5) / 128).transpose(
            2, 0, 1
        )
        outputs = self.session.run(None, {self.input_name: blob})
        boxes, scores, kps = _decode_scrfd(outputs, self.input_size, self.threshold)
        if not len(boxes):
            return []
        keep = nms(boxes, scores, 0.4)
        return [Detection(boxes[i] / scale, float(scores[i]), kps[i] / scale) for i in keep]

    def _landmarks_106(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """2d106det: 192x192 crop around the box (1.5x its size), outputs in [-1, 1] -> pixels."""
        size = 192
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        s = size / (max(box[2] - box[0], box[3] - box[1]) * 1.5)
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
        crop = cv2.warpAffine(image, m, (size, size), borderValue=0)
        blob = crop.astype(np.float32).transpose(2, 0, 1)[None]  # the model normalises inside (mean 0, std 1)
        name = self.landmark_session.get_inputs()[0].name
        pts = self.landmark_session.run(None, {name: blob})[0].reshape(-1, 2)
        pts = (pts + 1) * (size / 2)
        return ((pts - m[:, 2]) / s).astype(np.float32)


def _decode_scrfd(outputs: list[np.ndarray], input_size: int, threshold: float):
    """SCRFD's 9 outputs -> boxes [N, 4], scores [N], keypoints [N, 5, 2] in input pixels."""
    strides, anchors = (8, 16, 32), 2
    boxes, scores, kps = [], [], []
    for i, stride in enumerate(strides):
        score = outputs[i].reshape(-1)
        dist = outputs[i + 3].reshape(-1, 4) * stride
        kdist = outputs[i + 6].reshape(-1, 10) * stride
        side = input_size // stride
        ys, xs = np.mgrid[:side, :side]
        centres = np.repeat(np.stack([xs, ys], -1).reshape(-1, 2) * stride, anchors, axis=0).astype(np.float32)
        keep = score >= threshold
        c, d = centres[keep], dist[keep]
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))
        scores.append(score[keep])
        kps.append(c[:, None, :] + kdist[keep].reshape(-1, 5, 2))
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps).astype(np.float32)
