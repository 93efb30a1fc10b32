"""Procedural face clips written in the DFEW layout: data for tests, demos and smoke runs when no licensed set is here.

Two tasks:

- "expression": the 7 DFEW classes (happy, sad, neutral, angry, surprise, disgust, fear), each a distinct drawn
  expression (mouth curve and opening, brow angle and height, eye openness, wrinkles) that develops from neutral
  after a random onset frame. Per-clip jitter (skin, background, position, scale, rotation, motion, noise) keeps it a
  generalisation problem rather than a lookup.
- "temporal_order": 2 classes, "onset" (neutral -> expression) and "offset" (expression -> neutral). Every offset clip
  is an onset clip with its frames reversed (byte-identical files), so a model that pools frames without temporal
  modelling is exactly at chance; only the order carries the label.

Files: `Clip/clip_224x224_16f/<5-digit id>/<1..T>.jpg` and
`EmoLabel_DataSplit/{train,test}(single-labeled)/{train,test}_set_<k>.csv` (header video_name,label; labels
0-based + `label_base`), exactly like DFEW, so `load_index("dfew", root, split, fold=k)` reads both tasks. For
"temporal_order" the DFEW loader would name the classes happy/sad, so the root also holds the "folder" layout
files `classes.txt` (class names in index order), `train.csv` and `test.csv` (fold 1; header path,label with
0-based indices): `load_index("folder", root, split)` gives the right names. Both tasks write these folder files.
The returned `SyntheticSet.load(split, fold)` reads any fold with the right class names.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .layouts import DATASET_CLASSES, DatasetIndex, load_index

EXPRESSIONS = DATASET_CLASSES["dfew"]
TEMPORAL_CLASSES = ("onset", "offset")
_SHIFT = 3  # sub-pixel bits for OpenCV drawing: small per-frame motion stays smooth
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class _Expr:
    """Feature offsets at full intensity; intensity 0 is neutral."""

    curve: float = 0.0  # mouth corners up (+) / down (-)
    open: float = 0.0  # mouth opening
    width: float = 1.0  # mouth width factor
    brow_angle: float = 0.0  # inner brow ends up (+, sad/fear) or down (-, angry)
    brow_raise: float = 0.0  # whole brow up (+) / down (-)
    eye: float = 1.0  # eye openness factor
    asym: float = 0.0  # one mouth corner raised (disgust)
    frown: float = 0.0  # vertical lines between the brows (angry)
    nose: float = 0.0  # nose wrinkles (disgust)
    # Cartoon cues a drawn face uses where a real one has subtler ones (flushing, pallor, tears, showing teeth):
    # they give every class a colour signature as well as a shape, so a small model learns them in minutes.
    tint_r: float = 1.0  # skin colour factors
    tint_g: float = 1.0
    tint_b: float = 1.0
    blush: float = 0.0  # red cheeks
    tears: float = 0.0
    teeth: float = 0.0  # a white band inside an open mouth


_EXPRESSIONS: dict[str, _Expr] = {
    "neutral": _Expr(),
    "happy": _Expr(curve=1.0, open=0.35, width=1.3, brow_raise=0.15, eye=0.6, blush=1.0, teeth=1.0),
    "sad": _Expr(curve=-0.8, width=0.85, brow_angle=1.0, brow_raise=0.1, eye=0.7, tears=1.0, tint_r=0.93, tint_b=1.08),
    "angry": _Expr(
        curve=-0.3,
        open=0.05,
        width=0.8,
        brow_angle=-1.0,
        brow_raise=-0.6,
        eye=0.85,
        frown=1.0,
        tint_r=1.18,
        tint_g=0.82,
        tint_b=0.82,
    ),
    "surprise": _Expr(open=1.0, width=0.6, brow_raise=1.0, eye=1.5),
    "disgust": _Expr(
        curve=-0.4,
        open=0.15,
        width=0.9,
        brow_angle=-0.5,
        brow_raise=-0.4,
        eye=0.5,
        asym=1.0,
        nose=1.0,
        tint_r=0.88,
        tint_g=1.1,
        tint_b=0.82,
    ),
    "fear": _Expr(
        curve=-0.4,
        open=0.55,
        width=1.3,
        brow_angle=1.0,
        brow_raise=0.8,
        eye=1.45,
        tint_r=0.92,
        tint_g=0.97,
        tint_b=1.12,
    ),
}


def _blend(expression: str, intensity: float) -> _Expr:
    if expression not in _EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; known: {', '.join(_EXPRESSIONS)}")
    target, base = _EXPRESSIONS[expression], _EXPRESSIONS["neutral"]
    t = float(np.clip(intensity, 0.0, 1.0))
    names = [f.name for f in dataclasses.fields(_Expr)]
    return _Expr(**{n: getattr(base, n) + t * (getattr(target, n) - getattr(base, n)) for n in names})


@dataclass(frozen=True)
class FaceStyle:
    """What stays fixed within a clip: colours, geometry. Sizes are fractions of the frame."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    vertical_gradient: bool
    cx: float  # head centre, fraction of the frame
    cy: float
    scale: float  # head half-width, fraction of the frame
    angle: float  # degrees
    noise: int  # +- grey levels of pixel noise


def random_style(rng: np.random.Generator) -> FaceStyle:
    """A random person and framing: head ~70% of the frame height (±10% scale), ±10% position, slight tilt."""
    t = rng.uniform()
    light, dark = np.array([236, 200, 172]), np.array([105, 72, 52])
    skin = np.clip(light + t * (dark - light) + rng.normal(0, 6, 3), 0, 255)
    colours = rng.integers(30, 226, size=(2, 3))
    return FaceStyle(
        skin=tuple(int(v) for v in skin),
        hair=tuple(int(v) for v in rng.integers(10, 90, 3)),
        iris=tuple(int(v) for v in rng.integers(20, 90, 3)),
        background=(tuple(int(v) for v in colours[0]), tuple(int(v) for v in colours[1])),
        vertical_gradient=bool(rng.integers(2)),
        cx=0.5 + rng.uniform(-0.05, 0.05),
        cy=0.52 + rng.uniform(-0.05, 0.05),
        scale=0.27 * rng.uniform(0.9, 1.1),
        angle=float(rng.uniform(-8, 8)),
        noise=int(rng.integers(2, 7)),
    )


def _background(style: FaceStyle, size: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    a, b = (np.array(c, dtype=np.float32) for c in style.background)
    line = a + ramp[:, None] * (b - a)  # [size, 3]
    grid = line[:, None, :] if style.vertical_gradient else line[None, :, :]
    return np.ascontiguousarray(np.broadcast_to(grid, (size, size, 3)).astype(np.uint8))


class _Canvas:
    """Draws in face coordinates (units of the head half-width, y down) mapped through scale, tilt and position."""

    def __init__(self, image: np.ndarray, style: FaceStyle, dx: float, dy: float, dangle: float) -> None:
        size = image.shape[0]
        self.image, self.unit = image, style.scale * size
        self.centre = np.array([(style.cx + dx) * size, (style.cy + dy) * size])
        self.angle = style.angle + dangle
        rad = math.radians(self.angle)
        self.rot = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])
        self.line = max(1, round(size / 100))

    def pts(self, uv: np.ndarray) -> np.ndarray:
        xy = self.centre + (np.asarray(uv, dtype=np.float64) @ self.rot.T) * self.unit
        return np.round(xy * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def ellipse(self, u: float, v: float, au: float, av: float, colour, thickness: int = -1) -> None:
        centre = tuple(int(c) for c in self.pts([[u, v]])[0, 0])
        axes = (max(1, round(au * self.unit * _ONE)), max(1, round(av * self.unit * _ONE)))
        cv2.ellipse(self.image, centre, axes, self.angle, 0, 360, colour, thickness, cv2.LINE_AA, _SHIFT)

    def poly(self, uv: np.ndarray, colour, thickness: float | None = None, closed: bool = False) -> None:
        width = self.line if thickness is None else max(1, round(thickness * self.unit))
        cv2.polylines(self.image, [self.pts(uv)], closed, colour, width, cv2.LINE_AA, _SHIFT)

    def fill(self, uv: np.ndarray, colour) -> None:
        cv2.fillPoly(self.image, [self.pts(uv)], colour, cv2.LINE_AA, _SHIFT)


def _shade(colour, factor: float, tint=(1.0, 1.0, 1.0)) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor * t, 0, 255)) for c, t in zip(colour, tint, strict=True))


def _skin(style: FaceStyle, e: _Expr) -> tuple[int, int, int]:
    return _shade(style.skin, 1.0, (e.tint_r, e.tint_g, e.tint_b))


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(round(x + t * (y - x)) for x, y in zip(a, b, strict=True))


def _draw_head(c: _Canvas, style: FaceStyle, e: _Expr) -> None:
    skin = _skin(style, e)
    c.fill(np.array([[-0.38, 1.0], [0.38, 1.0], [0.45, 2.2], [-0.45, 2.2]]), _shade(skin, 0.85))  # neck
    c.ellipse(0.0, -0.3, 1.08, 1.12, style.hair)  # hair behind the head shows above and beside it
    for side in (-1, 1):
        c.ellipse(side * 1.0, 0.05, 0.16, 0.27, _shade(skin, 0.92))  # ears
    c.ellipse(0.0, 0.0, 1.0, 1.3, skin)
    c.ellipse(0.0, -0.95, 0.85, 0.42, style.hair)  # fringe
    c.ellipse(0.0, -0.62, 0.8, 0.12, skin)  # forehead line under the fringe
    if e.blush > 0.05:
        for side in (-1, 1):
            c.ellipse(side * 0.52, 0.3, 0.2, 0.12, _mix(skin, (235, 80, 95), 0.75 * e.blush))
    if e.tears > 0.05:
        for side in (-1, 1):
            streak = np.array([[side * 0.4, 0.0], [side * 0.43, 0.18], [side * 0.42, 0.38]])
            c.poly(streak, _mix(skin, (80, 150, 255), e.tears), thickness=0.06)


def _draw_eyes(c: _Canvas, style: FaceStyle, e: _Expr) -> None:
    ry = 0.1 * e.eye
    for side in (-1, 1):
        u = side * 0.38
        c.ellipse(u, -0.12, 0.19, ry, (240, 240, 236))
        c.ellipse(u, -0.12, min(0.085, ry), min(0.085, ry), style.iris)
        c.ellipse(u, -0.12, 0.19, ry, _shade(style.skin, 0.45), c.line)  # lid outline
        # brow: inner end (towards the nose) moves with brow_angle, the whole brow with brow_raise
        v = -0.36 - 0.14 * e.brow_raise
        inner, outer = v - 0.1 * e.brow_angle, v + 0.04 * e.brow_angle
        xs = np.array([0.14, 0.36, 0.58]) * side
        c.poly(np.stack([xs, [inner, v - 0.04, outer]], axis=1), _shade(style.hair, 0.8), thickness=0.06)
    if e.frown > 0.05:
        for u in (-0.06, 0.06):
            c.poly(np.array([[u, -0.34], [u * 0.8, -0.2]]), _shade(style.skin, 1 - 0.35 * e.frown))


def _draw_nose(c: _Canvas, style: FaceStyle, e: _Expr) -> None:
    shadow = _shade(style.skin, 0.7)
    c.poly(np.array([[0.02, -0.08], [0.06, 0.22], [0.0, 0.27], [-0.1, 0.24]]), shadow)
    if e.nose > 0.05:
        for k in range(3):
            v = -0.02 + 0.06 * k
            c.poly(np.array([[-0.14, v], [-0.06, v - 0.02], [0.06, v - 0.02], [0.14, v]]),
                   _shade(style.skin, 1 - 0.3 * e.nose))  # fmt: skip


def _draw_mouth(c: _Canvas, style: FaceStyle, e: _Expr) -> None:
    half = 0.3 * e.width
    x = np.linspace(-half, half, 17)
    rel = x / half
    upper = 0.58 - e.curve * 0.13 * rel**2 + e.asym * 0.07 * rel - 0.03 * e.open
    lower = upper + e.open * 0.3 * (1 - rel**2) + 0.02 * (1 - rel**2)
    lips = _shade(style.skin, 0.8, (1.05, 0.6, 0.6))
    if e.open > 0.08:
        outline = np.concatenate([np.stack([x, upper], 1), np.stack([x[::-1], lower[::-1]], 1)])
        c.fill(outline, (60, 20, 25))
        if e.teeth > 0.05:
            band = upper + 0.45 * (lower - upper)
            c.fill(np.concatenate([np.stack([x, upper], 1), np.stack([x[::-1], band[::-1]], 1)]),
                   _mix((60, 20, 25), (245, 245, 238), e.teeth))  # fmt: skip
        c.poly(outline, lips, thickness=0.04, closed=True)
    else:
        c.poly(np.stack([x, upper], 1), lips, thickness=0.05)


def render_face(
    expression: str,
    intensity: float,
    style: FaceStyle,
    size: int = 224,
    *,
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0),
    noise_rng: np.random.Generator | None = None,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """One RGB uint8 [size, size, 3] frame of `style` showing `expression` at `intensity` in [0, 1].

    `offset` (dx, dy as frame fractions, dangle in degrees) is the per-frame head motion; `noise_rng` adds pixel
    noise; `background` reuses a precomputed backdrop (a clip draws it once).
    """
    image = (background if background is not None else _background(style, size)).copy()
    canvas = _Canvas(image, style, *offset)
    e = _blend(expression, intensity)
    _draw_head(canvas, style, e)
    _draw_eyes(canvas, style, e)
    _draw_nose(canvas, style, e)
    _draw_mouth(canvas, style, e)
    if noise_rng is not None and style.noise:
        noise = noise_rng.integers(-style.noise, style.noise + 1, size=image.shape, dtype=np.int16)
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return image


def face_keypoints(style: FaceStyle, expression: str, intensity: float, size: int = 224, *,
                   offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:  # fmt: skip
    """The 5 keypoints a face detector reports for `render_face(...)` with the same arguments: float [5, 2] pixels,
    in the service's order (image-left eye, image-right eye, nose tip, image-left mouth corner, right corner).

    Mouth corners follow the expression (a smile widens the mouth), as a detector's would.
    """
    canvas = _Canvas(np.empty((size, size, 3), np.uint8), style, *offset)
    e = _blend(expression, intensity)
    half = 0.3 * e.width
    corner_v = 0.58 - e.curve * 0.13 - 0.03 * e.open
    tilt = e.asym * 0.07  # disgust raises one corner
    uv = np.array([[-0.38, -0.12], [0.38, -0.12], [0.0, 0.24], [-half, corner_v - tilt], [half, corner_v + tilt]])
    return (canvas.pts(uv).reshape(5, 2) / _ONE).astype(np.float32)


def draw_face(expression: str, intensity: float, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A random person showing `expression` (a DFEW class name) at `intensity`: uint8 RGB [size, size, 3]."""
    return render_face(expression, intensity, random_style(rng), size, noise_rng=rng)


# ---------------------------------------------------------------------------------------------------------------------
# Clips


def intensity_curve(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Neutral until a random onset, a smooth rise over a few frames, then held at a random peak."""
    onset = int(rng.integers(1, max(2, num_frames // 3) + 1))
    rise = int(rng.integers(max(2, num_frames // 6), max(3, num_frames // 3) + 1))
    t = np.clip((np.arange(num_frames) - onset) / rise, 0.0, 1.0)
    return rng.uniform(0.75, 1.0) * t * t * (3 - 2 * t)


def render_clip(expression: str, num_frames: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A clip of one random person moving slightly while `expression` develops from neutral."""
    style = random_style(rng)
    backdrop = _background(style, size)
    steps = rng.normal(0.0, [0.004, 0.004, 0.6], size=(num_frames, 3))
    motion = np.cumsum(steps, axis=0)
    return [
        render_face(expression, a, style, size, offset=tuple(m), noise_rng=rng, background=backdrop)
        for a, m in zip(intensity_curve(num_frames, rng), motion, strict=True)
    ]


def render_aligned_clip(
    expression: str, num_frames: int, rng: np.random.Generator, *, canvas: int = 256, keypoint_noise: float = 1.5
) -> list[np.ndarray]:
    """A clip as the service sees it: the face drawn in a `canvas`-sized frame, then cut out by the service's own
    5-point alignment (`service.faces.align`) to the canonical 224x224 crop. The keypoints are the drawn ones plus
    Gaussian noise of `keypoint_noise` pixels, standing in for a detector's error.
    """
    from s2d.service.faces.align import align_face  # numpy + OpenCV only: the crops the served model will be given

    style = random_style(rng)
    backdrop = _background(style, canvas)
    motion = np.cumsum(rng.normal(0.0, [0.004, 0.004, 0.6], size=(num_frames, 3)), axis=0)
    frames = []
    for a, m in zip(intensity_curve(num_frames, rng), motion, strict=True):
        offset = tuple(m)
        image = render_face(expression, a, style, canvas, offset=offset, noise_rng=rng, background=backdrop)
        points = face_keypoints(style, expression, a, canvas, offset=offset)
        frames.append(align_face(image, points + rng.normal(0.0, keypoint_noise, points.shape)))
    return frames


def _encode(frames: list[np.ndarray]) -> list[bytes]:
    out = []
    for frame in frames:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out.append(data.tobytes())
    return out


def _write_clip(folder: Path, jpegs: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, data in enumerate(jpegs, start=1):
        (folder / f"{number}.jpg").write_bytes(data)


# ---------------------------------------------------------------------------------------------------------------------
# The data set


@dataclass
class SyntheticSet:
    """What `make_synthetic_dfew` wrote: class names, labels per clip id and the train/test ids of every fold."""

    root: Path
    task: str
    classes: tuple[str, ...]
    labels: dict[str, int]  # clip id -> 0-based label
    folds: list[tuple[list[str], list[str]]]  # (train ids, test ids) per fold, fold k at [k - 1]
    pairs: list[tuple[str, str]] = field(default_factory=list)  # temporal_order: (onset id, offset id)

    def load(self, split: str, fold: int = 1, *, on_error: str = "skip") -> DatasetIndex:
        """`load_index("dfew", ...)` of this root with this set's class names (right for both tasks)."""
        index = load_index("dfew", self.root, split, fold=fold, on_error=on_error)
        return dataclasses.replace(index, name=f"synthetic-{self.task}", classes=self.classes)


def _assign_groups(keys_by_class: list[list[int]], groups: int, rng: np.random.Generator) -> dict[int, int]:
    """Round-robin over a shuffled list per class: every group (test fold) is class-balanced."""
    out = {}
    for keys in keys_by_class:
        for position, key in enumerate(rng.permutation(keys).tolist()):
            out[key] = position % groups
    return out


def _write_lists(root: Path, fs: SyntheticSet, label_base: int) -> None:
    split_dir = root / "EmoLabel_DataSplit"
    for k, (train_ids, test_ids) in enumerate(fs.folds, start=1):
        for split, ids in (("train", train_ids), ("test", test_ids)):
            rows = [(i, fs.labels[i] + label_base) for i in ids]
            _write_csv(split_dir / f"{split}(single-labeled)" / f"{split}_set_{k}.csv", ("video_name", "label"), rows)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in fs.classes), encoding="utf-8")
    train_ids, test_ids = fs.folds[0]
    for split, ids in (("train", train_ids), ("test", test_ids)):
        rows = [(f"Clip/clip_224x224_16f/{i}", fs.labels[i]) for i in ids]
        _write_csv(root / f"{split}.csv", ("path", "label"), rows)


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(sorted(rows))


def make_synthetic_dfew(
    root: str | Path,
    *,
    clips_per_class: int = 20,
    num_frames: int = 16,
    size: int = 224,
    task: str = "expression",
    seed: int = 0,
    folds: int = 1,
    label_base: int = 1,
) -> SyntheticSet:
    """Write a synthetic data set in the DFEW layout under `root` (see the module docstring) and describe it.

    `folds` label-list sets are written; with folds >= 2 each clip is in exactly one fold's test set (as in DFEW),
    with folds=1 a class-balanced fifth is the test set. `label_base` 1 writes DFEW's own 1-based labels, 0 the
    0-based copies. Clip geometry, labels and ids depend only on `seed` (each clip has its own seeded stream).
    """
    if task not in ("expression", "temporal_order"):
        raise ValueError(f"task must be 'expression' or 'temporal_order', not {task!r}")
    if clips_per_class < 1 or folds < 1 or label_base not in (0, 1):
        raise ValueError("need clips_per_class >= 1, folds >= 1 and label_base 0 or 1")
    root = Path(root)
    clip_dir = root / "Clip" / "clip_224x224_16f"
    classes = EXPRESSIONS if task == "expression" else TEMPORAL_CLASSES
    per_clip = len(classes) if task == "expression" else 1  # temporal_order: one rendered clip -> a pair
    plan_rng = np.random.default_rng([seed, 0])
    count = clips_per_class * per_clip
    numbers = (plan_rng.permutation(count * (1 if task == "expression" else 2)) + 1).tolist()
    labels: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    groups_of: dict[str, int] = {}
    keys = [[k for k in range(count) if k % per_clip == c] for c in range(per_clip)]
    group = _assign_groups(keys, folds if folds >= 2 else 5, plan_rng)
    for k in range(count):
        rng = np.random.default_rng([seed, 1, k])
        if task == "expression":
            vid = f"{numbers[k]:05d}"
            _write_clip(clip_dir / vid, _encode(render_clip(classes[k % per_clip], num_frames, size, rng)))
            labels[vid], groups_of[vid] = k % per_clip, group[k]
            continue
        expression = EXPRESSIONS[[0, 1, 3, 4, 5, 6][int(rng.integers(6))]]  # any but neutral
        jpegs = _encode(render_clip(expression, num_frames, size, rng))
        on, off = f"{numbers[2 * k]:05d}", f"{numbers[2 * k + 1]:05d}"
        _write_clip(clip_dir / on, jpegs)
        _write_clip(clip_dir / off, jpegs[::-1])
        labels.update({on: 0, off: 1})
        groups_of.update({on: group[k], off: group[k]})
        pairs.append((on, off))
    fold_lists = [
        (sorted(i for i, g in groups_of.items() if g != f), sorted(i for i, g in groups_of.items() if g == f))
        for f in range(folds)
    ]
    result = SyntheticSet(root=root, task=task, classes=classes, labels=labels, folds=fold_lists, pairs=pairs)
    _write_lists(root, result, label_base)
    return result
