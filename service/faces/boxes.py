"""Box arithmetic shared by the detectors and the tracker. Boxes are float [N, 4] x1, y1, x2, y2 in pixels."""

from __future__ import annotations

import cv2
import numpy as np


def area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def sizes(boxes: np.ndarray) -> np.ndarray:
    """The longer side of each box, as `Detection.size`."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def iou_matrix(a: np.ndarray, b: np.ndarray, mode: str = "union") -> np.ndarray:
    """[len(a), len(b)] overlap: intersection over union, or over the smaller box (mode="min")."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a, area_b = area(a)[:, None], area(b)[None, :]
    denom = np.minimum(area_a, area_b) if mode == "min" else area_a + area_b - inter
    return inter / np.maximum(denom, 1e-9)


_NMS_MATRIX_MAX = 1024  # boxes up to which NMS computes all overlaps at once (8 MB of float64)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) <= _NMS_MATRIX_MAX:
        return _nms_matrix(boxes, order, threshold, mode)
    return _nms_loop(boxes, order, threshold, mode)


def _nms_loop(boxes: np.ndarray, order: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """`nms` one kept box at a time: memory linear in the number of boxes."""
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        overlap = iou_matrix(boxes[i : i + 1], boxes[order[1:]], mode)[0]
        order = order[1:][overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _nms_matrix(boxes: np.ndarray, order: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """`nms` with every overlap computed in one call (the same values, element by element) and only the loop over
    kept boxes in Python: the proposal stage's NMS calls were a fifth of a detection's time."""
    ranked = np.asarray(boxes)[order]
    overlap = iou_matrix(ranked, ranked, mode)
    alive = np.ones(len(order), bool)
    keep: list[int] = []
    for i in range(len(order)):
        if alive[i]:
            keep.append(int(order[i]))
            alive[i + 1 :] &= overlap[i, i + 1 :] <= threshold
    return np.asarray(keep, dtype=np.int64)


def to_square(boxes: np.ndarray) -> np.ndarray:
    """The square with the same centre and the longer side."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Resample each box of `image` ([H, W, C]) to [size, size] (bilinear); outside the image is `fill`.

    Returns [N, size, size, C] of the image's dtype. One warpAffine per box: a scale and a shift, no intermediate crop.
    """
    out = np.empty((len(boxes), size, size, image.shape[2]), image.dtype)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        sx, sy = size / max(x2 - x1, 1e-3), size / max(y2 - y1, 1e-3)
        m = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]], np.float64)
        out[i] = cv2.warpAffine(
            image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4
        ).reshape(size, size, -1)
    return out
