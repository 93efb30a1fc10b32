"""What every layout loader shares: the class orders, samples and the index, frame folders, the problem report
and the small parsers of label files."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "dfew": ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"),
    "ferv39k": ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"),
    "mafw": (
        "Anger",
        "Anxiety",
        "Contempt",
        "Disappointment",
        "Disgust",
        "Fear",
        "Happiness",
        "Helplessness",
        "Neutral",
        "Sadness",
        "Surprise",
    ),
    "rafdb": ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"),
    "affectnet8": ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"),
    "affectnet7": ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger"),
    "ferplus": ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
}


class DatasetError(ValueError):
    """A dataset cannot be read as laid out; the message names the path (and line) to fix."""


@dataclass(frozen=True)
class Sample:
    """One labelled item: a clip (frame files in temporal order), an image file, or FERPlus pixels."""

    id: str
    label: int
    frames: tuple[Path, ...] = ()
    image: Path | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, hash=False, repr=False)
    box: tuple[int, int, int, int] | None = None


@dataclass
class DatasetIndex:
    """The samples of one split, with what was skipped (`problems`) and what was assumed (`notes`)."""

    name: str
    classes: tuple[str, ...]
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> list[int]:
        """Samples per class, in class order (zeros included): what a model card and a sampler need."""
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes)).tolist()


def frame_sort_key(name: str) -> tuple[int, int, str]:
    """Orders frames by the last integer in the file name, so 2.jpg precedes 10.jpg; names without digits go last."""
    digits = re.findall(r"\d+", Path(name).stem)
    return (0, int(digits[-1]), name) if digits else (1, 0, name)


def list_frames(folder: Path) -> tuple[Path, ...]:
    """Image files directly inside `folder`, in temporal (numeric) order; other files are ignored."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS]
    return tuple(folder / n for n in sorted(names, key=frame_sort_key))


class _Report:
    """Collects problems (or raises them at once for on_error="fail") and notes while one index is built."""

    def __init__(self, on_error: str) -> None:
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', not {on_error!r}")
        self.fail = on_error == "fail"
        self.problems: list[str] = []
        self.notes: list[str] = []

    def bad(self, path: Path, line: int | None, reason: str) -> None:
        message = f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}"
        if self.fail:
            raise DatasetError(message)
        self.problems.append(message)


def _parse_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _need_file(*candidates: Path) -> Path:
    """The first candidate that exists; a missing label file is fatal because nothing could be loaded."""
    for path in candidates:
        if path.is_file():
            return path
    tried = " or ".join(str(p) for p in candidates)
    raise DatasetError(f"label file not found: expected {tried}")


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: expected directory {path}")
    return path


def _need_split(dataset: str, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise DatasetError(f"{dataset} has splits {', '.join(allowed)}; got {split!r}")


def _need_fold(dataset: str, fold: int | None) -> int:
    if fold is None or isinstance(fold, bool) or not isinstance(fold, int) or fold < 1:
        raise DatasetError(f"{dataset} is split into numbered folds (1-5 in the release); pass fold=<k>, got {fold!r}")
    return fold


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row, header included; the file is closed when the caller is done."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                yield reader.line_num, cells


def _table(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str] | None]]:
    """Rows of a headed CSV as {column: stripped text}, None for a row with too few fields.

    The header must name every column (case-insensitive); a missing column is fatal since no row could be read.
    """
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DatasetError(f"{path}: empty file; expected header {','.join(columns)}")
    names = [c.strip().lower() for c in first[1]]
    missing = [c for c in columns if c.lower() not in names]
    if missing:
        raise DatasetError(f"{path}:{first[0]}: header {','.join(first[1])!r} lacks column(s) {', '.join(missing)}")
    where = {c: names.index(c.lower()) for c in columns}
    for line, cells in rows:
        yield line, ({c: cells[i].strip() for c, i in where.items()} if len(cells) >= len(names) else None)


def _read_table(path: Path, columns: Sequence[str], report: _Report) -> Iterator[tuple[int, dict[str, str]]]:
    """`_table` with short rows reported and skipped."""
    for line, row in _table(path, columns):
        if row is None:
            report.bad(path, line, "too few fields")
        else:
            yield line, row


def _text_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of a text list; CRLF files (MAFW .txt) read the same."""
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            fields = text.split()
            if fields:
                yield number, fields


def _clip_sample(
    report: _Report, source: Path, line: int | None, sample_id: str, label: int, folder: Path
) -> Sample | None:
    """A clip sample, or None (reported) when its frame folder is missing or holds no frames."""
    if not folder.is_dir():
        report.bad(source, line, f"clip {sample_id}: frame folder {folder} not found")
        return None
    frames = list_frames(folder)
    if not frames:
        report.bad(source, line, f"clip {sample_id}: no frames ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
        return None
    return Sample(id=sample_id, label=label, frames=frames)


def _image_sample(report: _Report, source: Path, line: int, sample_id: str, label: int, image: Path, **extra):
    if not image.is_file():
        report.bad(source, line, f"image {image} not found")
        return None
    return Sample(id=sample_id, label=label, image=image, **extra)


def _video_id(name: str, width: int = 5) -> str:
    """DFEW/MAFW ids: "1", "00001" and "00001.mp4" all name folder 00001."""
    stem = name.strip()
    if Path(stem).suffix.lower() in {".mp4", ".avi", ".mov", ".mkv"}:
        stem = Path(stem).stem
    return stem.zfill(width) if stem.isdigit() else stem


def _clip_folder(frames_root: Path, name: str, padded: str) -> Path:
    """The padded-id folder, or the name as written when only that one exists."""
    folder = frames_root / padded
    if not folder.is_dir() and name and (frames_root / name).is_dir():
        return frames_root / name
    return folder
