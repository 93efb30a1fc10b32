"""Real-face scenes for benchmarks and tests: photographs that registry packages ship (scikit-image's astronaut and
LFW faces, matplotlib's Grace Hopper), pasted on backdrops and moved; s2d.harness.video encodes them. `standard_clip`
is the load scripts' one-face clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from s2d.harness.video import write_video


def astronaut_face() -> np.ndarray:
    from skimage import data

    """The astronaut's head and shoulders (Eileen Collins, public domain): uint8 RGB [180, 150, 3], face ~85x110."""
    return np.ascontiguousarray(data.astronaut()[30:210, 150:300])


def lfw_patches() -> tuple[np.ndarray, np.ndarray]:
    """LFW subset in scikit-image: 100 real faces and 100 non-face patches, each grey 25x25, as RGB 180x180 images
    (the patch upscaled to 100 px inside a grey border, since the patches are tight crops)."""
    from skimage import data

    patches = data.lfw_subset()

    def show(p: np.ndarray) -> np.ndarray:
        grey = cv2.resize((p * 255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((180, 180), 128, np.uint8)
        canvas[40:140, 40:140] = grey
        return np.repeat(canvas[..., None], 3, axis=2)

    return np.stack([show(p) for p in patches[:100]]), np.stack([show(p) for p in patches[100:]])


def reference_photos() -> dict[str, np.ndarray]:
    """Real photographs that registry packages ship, by name, as uint8 RGB: scikit-image's astronaut (Eileen Collins,
    public domain), matplotlib's Grace Hopper (public domain) and the 100 LFW faces of `lfw_patches`. The frame
    baseline's crop is calibrated and checked on these (tests/fixtures/fer_baseline)."""
    from matplotlib import cbook
    from skimage import data

    hopper = cv2.cvtColor(
        cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))), cv2.COLOR_BGR2RGB
    )
    photos = {"astronaut": data.astronaut(), "grace_hopper": hopper}
    faces, _ = lfw_patches()
    photos.update({f"lfw_{i:03d}": face for i, face in enumerate(faces)})
    return photos


def paste(background: np.ndarray, patch: np.ndarray, x: int, y: int, height: int | None = None) -> np.ndarray:
    """Paste `patch` (resized to `height` rows, aspect kept) with its top-left at (x, y), clipped to the frame."""
    if height is not None:
        patch = cv2.resize(
            patch, (round(patch.shape[1] * height / patch.shape[0]), height), interpolation=cv2.INTER_AREA
        )
    out = background.copy()
    h, w = out.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + patch.shape[1], w), min(y + patch.shape[0], h)
    out[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def backdrop(width: int = 640, height: int = 360, seed: int = 0) -> np.ndarray:
    """A smooth, slightly textured non-face background."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def moving_faces(n: int, crossing: bool = False) -> list[np.ndarray]:
    """n 640x360 frames: the astronaut moving left to right; with `crossing`, a second (mirrored, re-tinted) face
    moving right to left below it, so the two cross."""
    a = astronaut_face()
    b = np.ascontiguousarray(a[:, ::-1, [1, 0, 2]])
    frames = []
    for i in range(n):
        f = i / (n - 1)
        frame = paste(backdrop(seed=1), a, int(20 + 420 * f), 30, 150)
        frames.append(paste(frame, b, int(440 - 420 * f), 180, 150) if crossing else frame)
    return frames


def standard_clip(path: Path, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (360, 640)) -> Path:
    """A `seconds` long single-face clip, `size` (h, w), h264 in mp4."""
    h, w = size
    face = _face_image(200)

    def frame(i: int) -> np.ndarray:
        image = np.full((h, w, 3), (70, 90, 110), np.uint8)
        x = 200 + int(30 * np.sin(i / 8))
        image[80 : 80 + face.shape[0], x : x + face.shape[1]] = face
        return image

    return write_video(path, (frame(i) for i in range(round(seconds * fps))), fps)


def _face_image(height: int) -> np.ndarray:
    try:
        from skimage import data, transform

        crop = data.astronaut()[20:220, 150:330]  # the astronaut's face, a public-domain photo
        return (transform.resize(crop, (height, int(height * 0.9))) * 255).astype(np.uint8)
    except ImportError:
        img = np.full((height, int(height * 0.8), 3), (70, 90, 110), np.uint8)
        cx, cy = img.shape[1] // 2, height // 2
        cv2.ellipse(img, (cx, cy), (int(height * 0.33), int(height * 0.45)), 0, 0, 360, (225, 190, 160), -1)
        for dx in (-0.13, 0.13):
            cv2.circle(img, (int(cx + dx * height), int(cy - 0.08 * height)), height // 25, (40, 30, 30), -1)
        cv2.ellipse(img, (cx, int(cy + 0.2 * height)), (height // 8, height // 30), 0, 0, 360, (120, 30, 40), -1)
        return img
