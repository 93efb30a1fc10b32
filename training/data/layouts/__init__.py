"""Indexes of the facial-expression datasets in the exact on-disk layouts their users have.

Every loader turns a label file plus a frame/image tree into a `DatasetIndex`: samples with labels in one fixed class
order (the order S2D uses), plus `problems` (rows that were skipped, each as "<file>:<line>: <reason>") and `notes`
(conventions detected and documented exclusions). A long training run must not die on one bad row, yet nothing may be
dropped silently; `on_error="fail"` turns every problem into a `DatasetError` for strict checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .common import (
    DATASET_CLASSES,
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetIndex,
    Sample,
    _Report,
    frame_sort_key,
    list_frames,
)
from .folder import _load_folder
from .images import _load_affectnet, _load_ferplus, _load_rafdb
from .video import _load_dfew, _load_ferv39k, _load_mafw

__all__ = [
    "DATASETS",
    "DATASET_CLASSES",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetIndex",
    "Sample",
    "frame_sort_key",
    "list_frames",
    "load_index",
]


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
    """Index one split of `dataset` under `root` (the layouts: docs/datasets.md).

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
