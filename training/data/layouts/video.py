"""Video datasets: DFEW (5 folds), FERV39k, MAFW (5 folds), in the layouts their users have (docs/datasets.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .common import (
    DATASET_CLASSES,
    Sample,
    _clip_folder,
    _clip_sample,
    _need_dir,
    _need_file,
    _need_fold,
    _need_split,
    _parse_int,
    _read_table,
    _Report,
    _text_rows,
    _video_id,
)


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
