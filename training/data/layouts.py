"""Indexes of the facial-expression datasets in the exact on-disk layouts their users have.

Every loader turns a label file plus a frame/image tree into a `DatasetIndex`: samples with labels in one fixed class
order (the order S2D uses), plus `problems` (rows that were skipped, each as "<file>:<line>: <reason>") and `notes`
(conventions detected and documented exclusions). A long training run must not die on one bad row, yet nothing may be
dropped silently; `on_error="fail"` turns every problem into a `DatasetError` for strict checks.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
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


# ---------------------------------------------------------------------------------------------------------------------
# Frame folders


def frame_sort_key(name: str) -> tuple[int, int, str]:
    """Orders frames by the last integer in the file name, so 2.jpg precedes 10.jpg; names without digits go last."""
    digits = re.findall(r"\d+", Path(name).stem)
    return (0, int(digits[-1]), name) if digits else (1, 0, name)


def list_frames(folder: Path) -> tuple[Path, ...]:
    """Image files directly inside `folder`, in temporal (numeric) order; other files are ignored."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS]
    return tuple(folder / n for n in sorted(names, key=frame_sort_key))


# ---------------------------------------------------------------------------------------------------------------------
# Reporting and small parsers


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


# ---------------------------------------------------------------------------------------------------------------------
# Video datasets


def _dfew_label_base(values: list[int], path: Path, report: _Report) -> int:
    """DFEW's own lists use 1-7, S2D's copies 0-6; decided per file so mixed folders still load."""
    if 0 in values:
        report.notes.append(f"{path.name}: DFEW labels found as 0-6 (S2D's copies of the lists)")
        return 0
    if values and all(1 <= v <= 7 for v in values) and 7 in values:
        report.notes.append(f"{path.name}: DFEW labels found as 1-7 (dataset files); mapped to 0-6")
        return 1
    report.notes.append(
        f"{path.name}: DFEW label convention ambiguous (no 0 and no 7); assumed 1-7, the dataset's own; mapped to 0-6"
    )
    return 1


def _load_dfew(root: Path, split: str, fold: int | None, report: _Report) -> list[Sample]:
    _need_split("dfew", split, ("train", "test"))
    fold = _need_fold("dfew", fold)
    source = _need_file(root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"{split}_set_{fold}.csv")
    frames_root = _need_dir(root / "Clip" / "clip_224x224_16f", "DFEW frame folder")
    rows = []
    for line, row in _read_table(source, ("video_name", "label"), report):
        value = _parse_int(row["label"])
        if value is None:
            report.bad(source, line, f"label {row['label']!r} is not an integer")
        elif not row["video_name"]:
            report.bad(source, line, "empty video_name")
        else:
            rows.append((line, row["video_name"], value))
    base = _dfew_label_base([v for _, _, v in rows], source, report)
    samples = []
    for line, name, value in rows:
        if not 0 <= value - base < 7:
            report.bad(source, line, f"label {value} outside {base}-{base + 6}")
            continue
        vid = _video_id(name)
        sample = _clip_sample(report, source, line, vid, value - base, _clip_folder(frames_root, name, vid))
        if sample:
            samples.append(sample)
    return samples


def _load_ferv39k(root: Path, split: str, fold: int | None, report: _Report) -> list[Sample]:
    _need_split("ferv39k", split, ("train", "test"))
    source = _need_file(root / f"{split}.csv", root / "Annotation" / f"{split}.csv")
    frames_root = _need_dir(root / "2_ClipsforFaceCrop", "FERV39k frame folder")
    samples = []
    for line, row in _read_table(source, ("path", "id"), report):
        label = _parse_int(row["id"])
        if label is None or not 0 <= label < 7:
            report.bad(source, line, f"label {row['id']!r} is not an integer in 0-6")
            continue
        path = row["path"].strip("/")
        if not path:
            report.bad(source, line, "empty path")
            continue
        sample = _clip_sample(report, source, line, path, label, frames_root / path)
        if sample:
            samples.append(sample)
    return samples


def _mafw_rows(source: Path, report: _Report) -> Iterator[tuple[int, str, int]]:
    """(line, video name, label) from the .csv (indices 0-10) or the .txt variant (`03747.mp4 anger`)."""
    names = {c.lower(): i for i, c in enumerate(DATASET_CLASSES["mafw"])}
    if source.suffix == ".csv":
        for line, row in _read_table(source, ("video_name", "labels"), report):
            label = _parse_int(row["labels"])
            if label is None or not 0 <= label < 11:
                report.bad(source, line, f"label {row['labels']!r} is not an integer in 0-10")
            else:
                yield line, row["video_name"], label
        return
    for line, fields in _text_rows(source):
        if len(fields) != 2:
            report.bad(source, line, f"expected '<video> <emotion>', found {' '.join(fields)!r}")
        elif fields[1].lower() not in names:
            report.bad(source, line, f"unknown emotion {fields[1]!r}")
        else:
            yield line, fields[0], names[fields[1].lower()]


def _load_mafw(root: Path, split: str, fold: int | None, report: _Report) -> list[Sample]:
    _need_split("mafw", split, ("train", "test"))
    fold = _need_fold("mafw", fold)
    folder = root / "anno" / "single" / "no_caption" / f"set_{fold}"
    source = _need_file(folder / f"{split}.csv", folder / f"{split}.txt")
    frames_root = _need_dir(root / "frames_crop_align_224", "MAFW frame folder")
    samples = []
    for line, name, label in _mafw_rows(source, report):
        vid = _video_id(name)
        sample = _clip_sample(report, source, line, vid, label, _clip_folder(frames_root, name, vid))
        if sample:
            samples.append(sample)
    return samples


# ---------------------------------------------------------------------------------------------------------------------
# Image datasets


def _load_rafdb(root: Path, split: str, fold: int | None, report: _Report) -> list[Sample]:
    _need_split("rafdb", split, ("train", "test"))
    source = _need_file(root / "basic" / "EmoLabel" / "list_patition_label.txt")
    images = root / "basic" / "Image" / "aligned"
    report.notes.append("RAF-DB labels 1-7 in the list file; mapped to 0-6")
    samples = []
    for line, fields in _text_rows(source):
        value = _parse_int(fields[1]) if len(fields) == 2 else None
        if value is None:
            report.bad(source, line, f"expected '<image> <label 1-7>', found {' '.join(fields)!r}")
            continue
        if not fields[0].startswith(f"{split}_"):
            continue  # the split is the file-name prefix
        if not 1 <= value <= 7:
            report.bad(source, line, f"label {value} outside 1-7")
            continue
        stem = Path(fields[0]).stem
        sample = _image_sample(report, source, line, stem, value - 1, images / f"{stem}_aligned.jpg")
        if sample:
            samples.append(sample)
    return samples


def _affectnet_box(row: dict[str, str]) -> tuple[int, int, int, int] | None:
    """The face box (x, y, w, h); None when the row leaves it blank. Raises ValueError for non-numbers."""
    values = [row[k] for k in ("face_x", "face_y", "face_width", "face_height")]
    if not any(values):
        return None
    x, y, w, h = (int(float(v)) for v in values)
    return (x, y, w, h) if w > 0 and h > 0 else None


def _load_affectnet(root: Path, split: str, report: _Report, num_classes: int) -> list[Sample]:
    _need_split(f"affectnet{num_classes}", split, ("train", "test", "val", "validation"))
    name = "training.csv" if split == "train" else "validation.csv"
    if split != "train":
        report.notes.append("AffectNet: validation.csv is the test set by convention")
    source = _need_file(root / name, root / "Manually_Annotated_file_lists" / name)
    images = root / "Manually_Annotated_Images"
    columns = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")
    samples, excluded, contempt = [], 0, 0
    for line, row in _read_table(source, columns, report):
        expression = _parse_int(row["expression"])
        if expression is None or not 0 <= expression <= 10:
            report.bad(source, line, f"expression {row['expression']!r} is not an integer in 0-10")
            continue
        if expression >= 8:
            excluded += 1
            continue
        if expression >= num_classes:
            contempt += 1
            continue
        try:
            box = _affectnet_box(row)
        except ValueError:
            report.bad(source, line, "face box (face_x, face_y, face_width, face_height) is not numeric")
            continue
        rel = row["subDirectory_filePath"]
        sample = _image_sample(report, source, line, rel, expression, images / rel, box=box)
        if sample:
            samples.append(sample)
    report.notes.append(f"AffectNet: excluded {excluded} rows with expression 8-10 (None, Uncertain, Non-Face)")
    if num_classes == 7:
        report.notes.append(f"AffectNet-7: excluded {contempt} Contempt rows (expression 7)")
    return samples


_FERPLUS_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
_FERPLUS_VOTES = (*DATASET_CLASSES["ferplus"], "unknown", "nf")


def _ferplus_label(votes: list[int]) -> int | None:
    """Majority (plurality) vote over the 8 emotions, first in class order on ties; None when unknown/NF wins."""
    emotions, others = votes[:8], votes[8:]
    best = max(emotions)
    if best == 0 or max(others) > best:
        return None
    return emotions.index(best)


def _ferplus_pixels(text: str) -> np.ndarray:
    values = np.array(text.split(), dtype=np.int64)
    if values.size != 48 * 48 or values.min() < 0 or values.max() > 255:
        raise ValueError(f"expected 2304 values in 0-255, found {values.size}")
    return values.astype(np.uint8).reshape(48, 48)


def _ferplus_row(votes: dict[str, str], pix: dict[str, str], where: str) -> tuple[int | None, np.ndarray | None]:
    """(label, pixels) of one paired row; label None = documented exclusion. Raises ValueError for bad rows."""
    counts = [_parse_int(votes[c]) for c in _FERPLUS_VOTES]
    if any(c is None or c < 0 for c in counts):
        raise ValueError("vote counts are not non-negative integers")
    label = _ferplus_label(counts)  # type: ignore[arg-type]
    if label is None or not votes["image name"]:
        return None, None
    try:
        return label, _ferplus_pixels(pix["pixels"])
    except ValueError as exc:
        raise ValueError(f"pixels at {where}: {exc}") from None


def _load_ferplus(root: Path, split: str, fold: int | None, report: _Report) -> list[Sample]:
    """fer2013new.csv row i holds the votes for fer2013.csv row i; the two files are read side by side."""
    _need_split("ferplus", split, tuple(_FERPLUS_SPLITS))
    report.notes.append("FERPlus splits: Training -> train, PublicTest -> val, PrivateTest -> test")
    votes_file = _need_file(root / "fer2013new.csv", root / "FERPlus" / "fer2013new.csv")
    pixels_file = _need_file(root / "fer2013.csv", root / "fer2013" / "fer2013.csv")
    pairs = zip_longest(
        _table(votes_file, ("usage", "image name", *_FERPLUS_VOTES)),
        _table(pixels_file, ("emotion", "pixels", "usage")),
    )
    samples, dropped = [], 0
    for vote_row, pixel_row in pairs:
        if vote_row is None or pixel_row is None:
            longer, (where, _) = (pixels_file, pixel_row) if vote_row is None else (votes_file, vote_row)
            report.bad(longer, where, "this file has more rows than its partner; the rest is unpaired and skipped")
            break
        (line, votes), (pline, pix) = vote_row, pixel_row
        if votes is None or pix is None:
            report.bad(votes_file if votes is None else pixels_file, line if votes is None else pline, "too few fields")
            continue
        if votes["usage"] != pix["usage"]:
            report.bad(votes_file, line, f"Usage {votes['usage']!r} differs from {pixels_file.name}:{pline}")
            continue
        if votes["usage"] != _FERPLUS_SPLITS[split]:
            continue
        try:
            label, pixels = _ferplus_row(votes, pix, f"{pixels_file.name}:{pline}")
        except ValueError as exc:
            report.bad(votes_file, line, str(exc))
            continue
        if label is None:
            dropped += 1
        else:
            samples.append(Sample(id=votes["image name"], label=label, pixels=pixels))
    report.notes.append(f"FERPlus {split}: dropped {dropped} rows where unknown/NF won the vote (or no face)")
    return samples


# ---------------------------------------------------------------------------------------------------------------------
# Your own data


def _read_classes_file(root: Path) -> tuple[str, ...] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    if len(set(names)) != len(names) or not names:
        raise DatasetError(f"{path}: needs one distinct class name per line")
    return names


def _folder_item(report: _Report, source: Path, line: int | None, sample_id: str, label: int, path: Path):
    """A clip when `path` is a folder of frames, an image sample when it is an image file."""
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return Sample(id=sample_id, label=label, image=path)
    if path.is_dir():
        return _clip_sample(report, source, line, sample_id, label, path)
    report.bad(source, line, f"{path} is neither a frame folder nor an image")
    return None


def _csv_classes(root: Path, split_file: Path, report: _Report) -> tuple[str, ...]:
    """Without classes.txt: sorted class names over all split CSVs (so every split agrees), or indices 0..max."""
    values: set[str] = set()
    for path in {split_file, *(root / f"{s}.csv" for s in ("train", "val", "test"))}:
        if path.is_file():
            values.update(row["label"] for _, row in _read_table(path, ("path", "label"), _Report("skip")))
    values.discard("")
    if values and all(v.isdigit() for v in values):
        report.notes.append("folder: no classes.txt; labels are indices, class names are the indices")
        return tuple(str(i) for i in range(max(int(v) for v in values) + 1))
    report.notes.append("folder: no classes.txt; classes are the sorted label names of the split CSVs")
    return tuple(sorted(values))


def _folder_from_csv(root: Path, source: Path, report: _Report, classes: tuple[str, ...] | None):
    classes = classes or _csv_classes(root, source, report)
    lookup = {c: i for i, c in enumerate(classes)}
    samples = []
    for line, row in _read_table(source, ("path", "label"), report):
        label = lookup.get(row["label"], _parse_int(row["label"]))
        if label is None or not 0 <= label < len(classes):
            report.bad(source, line, f"unknown label {row['label']!r} (classes: {', '.join(classes)})")
            continue
        path = Path(row["path"])
        sample = _folder_item(report, source, line, row["path"], label, path if path.is_absolute() else root / path)
        if sample:
            samples.append(sample)
    return classes, samples


def _folder_from_tree(tree: Path, report: _Report, classes: tuple[str, ...] | None):
    found = sorted(e.name for e in os.scandir(tree) if e.is_dir() and not e.name.startswith("."))
    classes = classes or tuple(found)
    if not classes:
        raise DatasetError(f"{tree}: no class folders (expected <class>/<clip>/<frames> or <class>/<image>)")
    for name in sorted(set(found) - set(classes)):
        report.bad(tree / name, None, "folder is not a class listed in classes.txt; skipped")
    samples = []
    for label, name in enumerate(classes):
        folder = tree / name
        if not folder.is_dir():
            report.notes.append(f"folder: class {name!r} has no folder {folder}")
            continue
        for item in sorted(os.scandir(folder), key=lambda e: frame_sort_key(e.name)):
            if item.name.startswith(".") or (item.is_file() and Path(item.name).suffix.lower() not in IMAGE_EXTENSIONS):
                continue
            sample = _folder_item(report, folder, None, f"{name}/{item.name}", label, Path(item.path))
            if sample:
                samples.append(sample)
    return classes, samples


def _load_folder(root: Path, split: str, report: _Report) -> tuple[tuple[str, ...], list[Sample]]:
    """`root/<split>.csv` (path,label), else `root/<split>/<class>/...`, else `root/<class>/...` (split ignored)."""
    classes = _read_classes_file(root)
    if (root / f"{split}.csv").is_file():
        return _folder_from_csv(root, root / f"{split}.csv", report, classes)
    tree = root / split
    if not tree.is_dir():
        report.notes.append(f"folder: no {split}.csv and no {split}/ folder; the whole tree {root} is used")
        tree = root
    return _folder_from_tree(tree, report, classes)


# ---------------------------------------------------------------------------------------------------------------------

_Loader = Callable[[Path, str, "int | None", _Report], list[Sample]]
_LOADERS: dict[str, _Loader] = {
    "dfew": _load_dfew,
    "ferv39k": _load_ferv39k,
    "mafw": _load_mafw,
    "rafdb": _load_rafdb,
    "affectnet7": lambda root, split, fold, report: _load_affectnet(root, split, report, 7),
    "affectnet8": lambda root, split, fold, report: _load_affectnet(root, split, report, 8),
    "ferplus": _load_ferplus,
}
DATASETS = (*_LOADERS, "folder")


def load_index(
    dataset: str, root: str | Path, split: str, *, fold: int | None = None, on_error: str = "skip"
) -> DatasetIndex:
    """Index one split of `dataset` under `root` (layouts: docs in /work/shared/reference/datasets.md).

    `fold` picks the DFEW/MAFW split set (1-5). Bad rows are reported in `problems` and skipped
    (on_error="skip") or raise `DatasetError` (on_error="fail"); a missing root or label file always raises.
    """
    report = _Report(on_error)
    name = dataset.lower()
    root = Path(root)
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if not root.is_dir():
        raise DatasetError(f"{name} root not found: expected directory {root}")
    if name == "folder":
        classes, samples = _load_folder(root, split, report)
    else:
        classes, samples = DATASET_CLASSES[name], _LOADERS[name](root, split, fold, report)
    return DatasetIndex(name=name, classes=classes, samples=samples, problems=report.problems, notes=report.notes)
