"""Image datasets for the static stage: RAF-DB (basic), AffectNet-7/-8, FERPlus (docs/datasets.md)."""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

import numpy as np

from .common import (
    DATASET_CLASSES,
    Sample,
    _image_sample,
    _need_file,
    _need_split,
    _parse_int,
    _read_table,
    _Report,
    _table,
    _text_rows,
)


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
