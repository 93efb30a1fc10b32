"""Your own data: class folders, or a `path,label` CSV per split, with an optional classes.txt."""

from __future__ import annotations

import os
from pathlib import Path

from .common import (
    IMAGE_EXTENSIONS,
    DatasetError,
    Sample,
    _clip_sample,
    _parse_int,
    _read_table,
    _Report,
    frame_sort_key,
)


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
