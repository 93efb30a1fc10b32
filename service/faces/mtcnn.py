"""MTCNN (Zhang et al., 2016): the offline default detector. Three small CNNs in a cascade, run with ONNX Runtime.

Weights: the `mtcnn` package on PyPI ships them (MIT licence, commercial use allowed) as three small files
(`mtcnn/assets/weights/{pnet,rnet,onet}.lz4`, joblib + lz4, 2 MB in all, Keras layouts). We read those files only:
importing the `mtcnn` package would import TensorFlow, which we do not need (the networks are rebuilt as ONNX graphs in
`onnx_graph.py` from the package's layer definitions).

Why MTCNN (README "Face pipeline" has the measurements): it is the only detector we found whose commercial-use
weights install from PyPI without conflicting with this project's dependencies; it outputs the five keypoints that
alignment needs; its image pyramid finds faces from `min_face_size` up to the whole frame (webcam close-ups); and its
last stage (ONet, 48x48 input) re-locates a tracked face in well under a millisecond, so detection every N frames
with ONet refinement in between keeps landmarks exact on every frame.

Stages: PNet (fully convolutional, 12x12 windows at stride 2 over an image pyramid with factor 0.709) proposes
boxes; RNet (24x24 patches) rejects and regresses them; ONet (48x48) scores, regresses and gives 5 landmarks.
Input normalisation: (RGB - 127.5) / 128.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .boxes import crop_patches, nms, to_square
from .onnx_graph import GraphBuilder
from .types import Detection


class DetectorWeightsError(RuntimeError):
    """The weights of a detector are missing or unreadable; the message says how to install them."""


@dataclass(frozen=True)
class MTCNNConfig:
    min_face_size: int = 40  # pixels; smaller faces are not searched for (and too small for a 224 crop anyway)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)  # PNet, RNet, ONet face probability
    scale_factor: float = 0.709  # image pyramid step
    max_candidates: int = 300  # PNet proposals passed to RNet (best first), bounds the worst case
    refine_threshold: float = 0.6  # ONet probability to keep a tracked face between full detections
    threads: int = 1  # ONNX Runtime intra-op threads per network: the service parallelises across streams instead
    # Each pyramid level resized from the one before rather than from the frame: area resizing at a fractional ratio
    # is the detector's costliest step after the networks, and the smaller the source the cheaper it is. The levels
    # then differ from direct resizing by a few grey levels (PNet proposes; RNet and ONet decide on frame pixels).
    chained_pyramid: bool = True


def _weights_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("mtcnn")
    except importlib.metadata.PackageNotFoundError as e:
        raise DetectorWeightsError(
            "the MTCNN weights come with the `mtcnn` package from PyPI: pip install 'mtcnn==1.0.0' "
            "(it is a dependency of this project; reinstall the project)"
        ) from e
    return Path(dist.locate_file("mtcnn/assets/weights"))


def _load(name: str) -> list[np.ndarray]:
    import joblib  # installed with mtcnn; the files are joblib pickles of float32 arrays

    path = _weights_dir() / f"{name}.lz4"
    if not path.is_file():
        raise DetectorWeightsError(f"MTCNN weights file missing: {path}; reinstall the `mtcnn` package")
    return [np.ascontiguousarray(w, dtype=np.float32) for w in joblib.load(path)]


def _conv(g: GraphBuilder, x: str, kernel: np.ndarray, bias: np.ndarray, slope: np.ndarray | None) -> str:
    """Keras conv [kh, kw, cin, cout] (+ PReLU with alphas [1, 1, C]) as ONNX Conv (+ PRelu) on NCHW."""
    (y,) = g.op("Conv", [x, g.const(kernel.transpose(3, 2, 0, 1)), g.const(bias)])
    return g.op("PRelu", [y, g.const(slope.reshape(-1, 1, 1))])[0] if slope is not None else y


def _dense(g: GraphBuilder, x: str, weight: np.ndarray, bias: np.ndarray, slope: np.ndarray | None = None) -> str:
    (y,) = g.op("Add", [*g.op("MatMul", [x, g.const(weight)]), g.const(bias)])
    return g.op("PRelu", [y, g.const(slope)])[0] if slope is not None else y


def _pool(g: GraphBuilder, x: str, size: int, same: bool) -> str:
    # TensorFlow "SAME" pads at the end when the padding is odd: ONNX SAME_UPPER. Padding never wins a max.
    pad = {"auto_pad": "SAME_UPPER"} if same else {}
    return g.op("MaxPool", [x], kernel_shape=[size, size], strides=[2, 2], **pad)[0]


def _pnet_graph(w: list[np.ndarray]) -> bytes:
    """NHWC [1, H, W, 3] -> prob logits [1, 2, H', W'], box regression [1, 4, H', W']."""
    g = GraphBuilder("pnet")
    (x,) = g.op("Transpose", ["image"], perm=[0, 3, 1, 2])
    x = _pool(g, _conv(g, x, w[0], w[1], w[2]), 2, same=True)
    x = _conv(g, _conv(g, x, w[3], w[4], w[5]), w[6], w[7], w[8])
    reg, logits = _conv(g, x, w[9], w[10], None), _conv(g, x, w[11], w[12], None)
    return g.build({"image": (1, "h", "w", 3)}, {"logits": logits, "reg": reg})


def _flatten_keras(g: GraphBuilder, x: str) -> str:
    # Keras Permute((2, 1, 3)) on NHWC then Flatten, i.e. the order (W, H, C): from NCHW transpose to NWHC.
    (x,) = g.op("Transpose", [x], perm=[0, 3, 2, 1])
    return g.op("Flatten", [x], axis=1)[0]


def _rnet_graph(w: list[np.ndarray]) -> bytes:
    """NHWC [N, 24, 24, 3] -> logits [N, 2], box regression [N, 4]."""
    g = GraphBuilder("rnet")
    (x,) = g.op("Transpose", ["image"], perm=[0, 3, 1, 2])
    x = _pool(g, _conv(g, x, w[0], w[1], w[2]), 3, same=True)
    x = _pool(g, _conv(g, x, w[3], w[4], w[5]), 3, same=False)
    x = _flatten_keras(g, _conv(g, x, w[6], w[7], w[8]))
    x = _dense(g, x, w[9], w[10], w[11])
    outputs = {"logits": _dense(g, x, w[14], w[15]), "reg": _dense(g, x, w[12], w[13])}
    return g.build({"image": ("n", 24, 24, 3)}, outputs)


def _onet_graph(w: list[np.ndarray]) -> bytes:
    """NHWC [N, 48, 48, 3] -> logits [N, 2], box regression [N, 4], landmarks [N, 10] (5 x then 5 y, in 0..1)."""
    g = GraphBuilder("onet")
    (x,) = g.op("Transpose", ["image"], perm=[0, 3, 1, 2])
    x = _pool(g, _conv(g, x, w[0], w[1], w[2]), 3, same=True)
    x = _pool(g, _conv(g, x, w[3], w[4], w[5]), 3, same=False)
    x = _pool(g, _conv(g, x, w[6], w[7], w[8]), 2, same=True)
    x = _flatten_keras(g, _conv(g, x, w[9], w[10], w[11]))
    x = _dense(g, x, w[12], w[13], w[14])
    outputs = {
        "logits": _dense(g, x, w[19], w[20]),
        "reg": _dense(g, x, w[15], w[16]),
        "lms": _dense(g, x, w[17], w[18]),
    }
    return g.build({"image": ("n", 48, 48, 3)}, outputs)


class _Net:
    """One ONNX Runtime session; returns the outputs as a dict of NumPy arrays."""

    def __init__(self, model: bytes, threads: int):
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(None, {"image": x}), strict=True))


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise DetectorWeightsError(
            "the face detectors run on ONNX Runtime: install the project with the `cpu` (onnxruntime) or `gpu` "
            "(onnxruntime-gpu) extra"
        ) from e
    return onnxruntime


def _face_prob(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax probability of class 1 (face) from two logits."""
    l0, l1 = np.take(logits, 0, axis=axis), np.take(logits, 1, axis=axis)
    return 1.0 / (1.0 + np.exp(l0 - l1))


class MTCNNDetector:
    """`detect(image_rgb)` for whole frames; `refine(image_rgb, boxes)` re-locates known faces with ONet only."""

    name = "mtcnn"
    commercial_use = True
    licence = "MIT (weights and code of the `mtcnn` PyPI package; MTCNN by K. Zhang et al.)"

    def __init__(self, config: MTCNNConfig | None = None, **options):
        self.config = config or MTCNNConfig(**options)
        threads = self.config.threads
        self._pnet = _Net(_pnet_graph(_load("pnet")), threads)
        self._rnet = _Net(_rnet_graph(_load("rnet")), threads)
        self._onet = _Net(_onet_graph(_load("onet")), threads)

    # -- public -------------------------------------------------------------------------------------------------------

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        return self.detect_larger(image_rgb, self.config.min_face_size)

    def detect_larger(self, image_rgb: np.ndarray, min_face_size: float) -> list[Detection]:
        """`detect` for faces of at least `min_face_size` pixels (never below the configured one): the image pyramid
        starts there, so a larger bound skips its largest, costliest levels."""
        image = _check(image_rgb)
        min_face_size = max(float(min_face_size), self.config.min_face_size)
        boxes = self._propose(image, min_face_size)
        if len(boxes):
            boxes = self._refine_rnet(image, boxes)
        if not len(boxes):
            return []
        return self._output(image, boxes, self.config.thresholds[2], 0.7, min_face_size)

    def refine(self, image_rgb: np.ndarray, boxes: np.ndarray) -> list[Detection | None]:
        """One ONet pass per predicted box (squared); None where ONet no longer sees a face."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return []
        image = _check(image_rgb)
        out = self._onet(_patches(image, to_square(boxes), 48))
        prob, reg, lms = _face_prob(out["logits"]), out["reg"], out["lms"]
        found = self._to_detections(to_square(boxes), prob, reg, lms)
        return [d if d.score >= self.config.refine_threshold else None for d in found]

    # -- stages -------------------------------------------------------------------------------------------------------

    def _scales(self, h: int, w: int, min_face_size: float) -> list[float]:
        scale = 12.0 / min_face_size
        scales = []
        while min(h, w) * scale >= 12:
            scales.append(scale)
            scale *= self.config.scale_factor
        return scales

    def _propose(self, image: np.ndarray, min_face_size: float) -> np.ndarray:
        h, w = image.shape[:2]
        found = []
        level = image
        for scale in self._scales(h, w, min_face_size):
            size = (max(int(np.ceil(w * scale)), 12), max(int(np.ceil(h * scale)), 12))
            level = cv2.resize(level if self.config.chained_pyramid else image, size, interpolation=cv2.INTER_AREA)
            out = self._pnet(_normalise(level)[None])
            prob, reg = _face_prob(out["logits"][0], axis=0), out["reg"][0].transpose(1, 2, 0)  # [H', W'], [H', W', 4]
            ys, xs = np.nonzero(prob > self.config.thresholds[0])
            if not len(ys):
                continue
            # Each PNet output cell is a 12x12 window at stride 2 of the scaled image.
            x1, y1 = (2 * xs + 1) / scale, (2 * ys + 1) / scale
            x2, y2 = (2 * xs + 12) / scale, (2 * ys + 12) / scale
            d = reg[ys, xs]
            bw, bh = x2 - x1, y2 - y1
            boxes = np.stack([x1 + d[:, 0] * bw, y1 + d[:, 1] * bh, x2 + d[:, 2] * bw, y2 + d[:, 3] * bh], 1)
            scores = prob[ys, xs]
            keep = nms(boxes, scores, 0.5)
            found.append(np.concatenate([boxes[keep], scores[keep, None]], 1))
        if not found:
            return np.empty((0, 5))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)][: self.config.max_candidates]
        return to_square(cand[:, :4])

    def _refine_rnet(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = self._rnet(_patches(image, boxes, 24))
        prob, reg = _face_prob(out["logits"]), out["reg"]
        keep = prob > self.config.thresholds[1]
        boxes, prob, reg = boxes[keep], prob[keep], reg[keep]
        size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, 1)
        boxes = boxes + reg * size
        return to_square(boxes[nms(boxes, prob, 0.7)])

    def _output(
        self, image: np.ndarray, boxes: np.ndarray, threshold: float, nms_threshold: float, min_face_size: float
    ) -> list[Detection]:
        out = self._onet(_patches(image, boxes, 48))
        prob, reg, lms = _face_prob(out["logits"]), out["reg"], out["lms"]
        dets = [d for d in self._to_detections(boxes, prob, reg, lms) if d.score > threshold]
        if not dets:
            return []
        keep = nms(np.stack([d.box for d in dets]), np.array([d.score for d in dets]), nms_threshold, mode="min")
        h, w = image.shape[:2]
        out = [dets[i] for i in keep]
        return [d for d in out if d.size >= min_face_size * 0.8 and _inside(d.box, w, h)]

    @staticmethod
    def _to_detections(boxes: np.ndarray, prob: np.ndarray, reg: np.ndarray, lms: np.ndarray) -> list[Detection]:
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        kx = lms[:, :5] * w[:, None] + boxes[:, 0:1] - 1
        ky = lms[:, 5:] * h[:, None] + boxes[:, 1:2] - 1
        refined = boxes + reg * np.stack([w, h, w, h], 1)
        return [
            Detection(
                box=refined[i].astype(np.float32),
                score=float(prob[i]),
                keypoints=np.stack([kx[i], ky[i]], 1).astype(np.float32),
            )
            for i in np.argsort(-prob)
        ]


def _check(image_rgb: np.ndarray) -> np.ndarray:
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB [H, W, 3], got {image_rgb.dtype} {image_rgb.shape}")
    return image_rgb


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 (x - 127.5) / 128, the networks' input scale."""
    return (pixels.astype(np.float32) - 127.5) * (1.0 / 128.0)


def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Normalised [N, size, size, 3] patches of the uint8 image; outside the frame is mid-grey (0 once normalised)."""
    return _normalise(crop_patches(image, boxes, size, fill=127.5))


def _inside(box: np.ndarray, w: int, h: int) -> bool:
    """At least half of the box lies inside the image (drops hallucinations off the border)."""
    x1, y1, x2, y2 = box
    ix = max(0.0, min(x2, w) - max(x1, 0))
    iy = max(0.0, min(y2, h) - max(y1, 0))
    return ix * iy >= 0.5 * max((x2 - x1) * (y2 - y1), 1e-6)
