"""What `s2d analyze` reads: the videos named on the command line, and the labels to score them against.

An input is a video file, a folder (searched recursively for video suffixes), a glob (`data/**/*.mp4`), or a
manifest: a `.csv` with a `path` column (its other columns travel into the `videos` table; a `label` column gives each
video's true class) or a `.txt` / `.lst` list, one path per line. Paths in a manifest are relative to its folder.
A labels CSV (`--labels`) gives `path,start,end,label` spans instead.
"""

from __future__ import annotations

import csv
import glob
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from s2d.service.media import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class VideoInput:
    path: Path  # absolute
    extra: dict[str, str] = field(default_factory=dict)  # a CSV manifest's other columns


@dataclass(frozen=True)
class Span:
    """A labelled stretch of one video: its windows whose centre lies in [start, end) are scored as one sample."""

    path: Path
    start: float
    end: float
    label: str


class InputError(ValueError):
    """The inputs cannot be read as given: said before any video is analysed."""


def expand_inputs(arguments: list[str]) -> list[VideoInput]:
    """Every video the arguments name, in order, each path once."""
    found: dict[Path, VideoInput] = {}
    for argument in arguments:
        for item in _expand(argument):
            if item.path in found:
                log.info("%s is named twice: analysed once", item.path)
            found.setdefault(item.path, item)
    if not found:
        raise InputError(
            f"no video found in {' '.join(arguments)} (video suffixes: {' '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return list(found.values())


def _expand(argument: str) -> list[VideoInput]:
    path = Path(argument).expanduser()
    if path.is_dir():
        return [VideoInput(p.resolve()) for p in sorted(path.rglob("*")) if _is_video(p)]
    if path.is_file() and path.suffix.lower() == ".csv":
        return _csv_manifest(path)
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return _list_manifest(path)
    if path.is_file():
        return [VideoInput(path.resolve())]  # whatever its suffix: the decoder decides, a refusal is recorded
    if glob.has_magic(argument):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        if not matches:
            raise InputError(f"the pattern {argument!r} matches nothing")
        return [VideoInput(p.resolve()) for p in matches if _is_video(p)]
    raise InputError(f"no such file, folder or pattern: {argument}")


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _csv_manifest(manifest: Path) -> list[VideoInput]:
    rows = _read_csv(manifest, required=("path",))
    return [
        VideoInput(_relative_to(manifest, row["path"]), {k: v for k, v in row.items() if k != "path"}) for row in rows
    ]


def _list_manifest(manifest: Path) -> list[VideoInput]:
    lines = (line.strip() for line in manifest.read_text().splitlines())
    return [VideoInput(_relative_to(manifest, line)) for line in lines if line and not line.startswith("#")]


def _relative_to(manifest: Path, name: str) -> Path:
    """A manifest's path, absolute (a missing file stays in the list: it is recorded as failed, never dropped)."""
    path = Path(name).expanduser()
    return (path if path.is_absolute() else manifest.parent / path).resolve()


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: needs the column(s) {', '.join(missing)}; it has {reader.fieldnames}")
        rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if not row.get("path"):
            raise InputError(f"{path}, line {number}: the path is empty")
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Labels


def manifest_spans(videos: list[VideoInput]) -> list[Span]:
    """A manifest's `label` column: one class for the whole video (rows with an empty label are not scored)."""
    return [Span(v.path, 0.0, math.inf, v.extra["label"].strip()) for v in videos if v.extra.get("label", "").strip()]


def read_spans(path: Path) -> list[Span]:
    """A labels CSV: `path,start,end,label` (seconds; an empty end: to the end of the video)."""
    spans = []
    for number, row in enumerate(_read_csv(path, required=("path", "start", "end", "label")), start=2):
        try:
            start, end = float(row["start"] or 0), float(row["end"]) if row["end"] else math.inf
        except ValueError as err:
            raise InputError(f"{path}, line {number}: start and end must be seconds ({err})") from err
        if not end > start:
            raise InputError(f"{path}, line {number}: end ({end:g}) must be after start ({start:g})")
        spans.append(Span(_relative_to(path, row["path"]), start, end, row["label"].strip()))
    return spans
