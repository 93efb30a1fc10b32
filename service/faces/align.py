"""5-point similarity alignment to the canonical 224x224 face crop the expression models take.

Template (`TEMPLATE_224`): the ArcFace 5-point template (112x112: eyes (38.29, 51.70) (73.53, 51.50), nose
(56.03, 71.74), mouth corners (41.55, 92.37) (70.73, 92.20)) scaled by 1.56 about its centre (56, 56) and placed
at (112, 100) in a 224x224 crop. Eye distance is then 55 px (a quarter of the width), eyes sit at y = 93, the mouth at
y = 157: the whole face from forehead to chin fits with about 30 px of margin, like the DFEW / FERV39k / MAFW aligned
face crops the models are trained on (a loose face box, not ArcFace's tight recognition crop).

A similarity transform (rotation, uniform scale, translation: 4 degrees of freedom) is fitted by least squares
(Umeyama without reflection, closed form in 2-D), batched over faces with NumPy, and applied with cv2.warpAffine.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 224
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float64
)
TEMPLATE_SCALE = 1.56
TEMPLATE_CENTRE = (112.0, 100.0)
TEMPLATE_224 = ((_ARCFACE_112 - 56.0) * TEMPLATE_SCALE + np.array(TEMPLATE_CENTRE)).astype(np.float32)  # [5, 2]


def similarity_transforms(keypoints: np.ndarray, template: np.ndarray = TEMPLATE_224) -> np.ndarray:
    """Least-squares similarity maps from keypoints [N, 5, 2] (or [5, 2]) onto `template`: [N, 2, 3] affine matrices.

    For centred source points p and target points q the best map is q = [[a, -b], [b, a]] p with
    a = sum(p . q) / sum|p|^2 and b = sum(p x q) / sum|p|^2; the translation maps the centroids onto each other.
    """
    src = np.asarray(keypoints, np.float64).reshape(-1, 5, 2)
    dst = np.asarray(template, np.float64)[None]
    src_mean, dst_mean = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
    p, q = src - src_mean, dst - dst_mean
    norm = np.maximum((p**2).sum((1, 2)), 1e-12)
    a = (p * q).sum((1, 2)) / norm
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(1) / norm
    rot = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], 1)  # [N, 2, 2]
    t = dst_mean[:, 0] - np.einsum("nij,nj->ni", rot, src_mean[:, 0])
    return np.concatenate([rot, t[..., None]], 2)


def align_faces(image: np.ndarray, keypoints: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Aligned crops of every face: image uint8 RGB [H, W, 3], keypoints [N, 5, 2] -> uint8 [N, size, size, 3]."""
    matrices = similarity_transforms(keypoints, TEMPLATE_224 * (size / CROP_SIZE))
    out = np.empty((len(matrices), size, size, 3), np.uint8)
    for i, m in enumerate(matrices):
        # Border replicate: a face at the frame edge gets smeared edge pixels rather than a black wedge.
        out[i] = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """One face: keypoints [5, 2] -> uint8 [size, size, 3]."""
    return align_faces(image, np.asarray(keypoints)[None], size)[0]
