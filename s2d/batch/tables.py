"""The dataset `s2d analyze` writes, and `load` that reads it back as pandas DataFrames.

    OUT/windows/<part>.parquet   one row per (video, person track, window) of one video and model
    OUT/videos/<part>.parquet    one row per (video, model): status, error, sizes, counts, time taken
    OUT/metrics.json, OUT/confusion-<model>.png   with labels

A part is one video analysed by one model with one set of options (`<content hash>-<run key>`). Each file is written
under a hidden temporary name and renamed into place, windows first: a `videos` part is the record that its video is
done, so a `windows` part without one (a run stopped between the two renames) is never read back, and the next run
writes both again under the same names: nothing twice, nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa

from s2d.service.faces.types import KEYPOINT_NAMES

FORMATS = ("parquet", "csv")
WINDOWS, VIDEOS = "windows", "videos"
PROB_PREFIX = "p_"  # one column per class: p_happy, p_sad, ...

MODEL_COLUMNS = ["model", "model_version", "model_family", "model_variant"]
KEY_COLUMNS = ["video_key", "path", *MODEL_COLUMNS, "run_key"]  # run_key: the model and options, hashed
BOX_COLUMNS = ["box_x1", "box_y1", "box_x2", "box_y2"]
KEYPOINT_COLUMNS = [f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in "xy"]
# The windows table: these, then one p_<class> column per class. The videos table: these, then a manifest's columns.
WINDOW_COLUMNS = [*KEY_COLUMNS, "track_id", "t_start", "t_end", "label", "confidence", "smoothed_label", "frame_t",
                  *BOX_COLUMNS, *KEYPOINT_COLUMNS]  # fmt: skip
VIDEO_COLUMNS = [*KEY_COLUMNS, "status", "error_code", "error_message", "duration_s", "fps", "width",
                 "height", "frames_decoded", "faces_detected", "persons", "windows", "seconds", "peak_rss_mib",
                 "worker", "node_id", "engine", "size_bytes", "mtime_ns", "analysed_at", "options"]  # fmt: skip
COUNT_COLUMNS = ["track_id", "width", "height", "frames_decoded", "faces_detected", "persons", "windows", "size_bytes",
                 "mtime_ns"]  # fmt: skip


class Results(NamedTuple):
    windows: pd.DataFrame
    videos: pd.DataFrame


def window_rows(response, key: dict) -> list[dict]:
    """The `windows` rows of one `ClassifyResponse` (service.schemas): `key` holds the KEY_COLUMNS."""
    rows = []
    for person in response.persons:
        for w in person.windows:
            middle = w.middle
            row = {**key, "track_id": person.track_id, "t_start": w.t_start, "t_end": w.t_end, "label": w.label,
                   "confidence": w.confidence, "smoothed_label": w.smoothed.label if w.smoothed else None,
                   "frame_t": middle.t if middle else None}  # fmt: skip
            row |= dict(zip(BOX_COLUMNS, middle.box if middle else w.box or [None] * 4, strict=True))
            points = [v for point in middle.keypoints for v in point] if middle else [None] * len(KEYPOINT_COLUMNS)
            row |= dict(zip(KEYPOINT_COLUMNS, points, strict=True))
            row |= {PROB_PREFIX + c: p for c, p in w.probs.items()}
            rows.append(row)
    return rows


def part_path(out: Path, table: str, part: str, fmt: str) -> Path:
    return out / table / f"{part}.{fmt}"


def write_part(out: Path, table: str, part: str, rows: list[dict], fmt: str) -> Path:
    """Write one part atomically: a hidden temporary file, flushed to disk, then renamed into place."""
    final = part_path(out, table, part, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.tmp")
    data = pa.Table.from_pylist(rows)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(data, temporary)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(data, temporary)
    with open(temporary, "rb+") as file:
        os.fsync(file.fileno())
    os.replace(temporary, final)
    return final


def remove_leftovers(out: Path) -> None:
    """Temporary files of a run that was killed mid-write (never read: their names are hidden)."""
    for table in (WINDOWS, VIDEOS):
        for path in (out / table).glob(".*.tmp"):
            path.unlink(missing_ok=True)


def _parts(out: Path, table: str) -> dict[str, Path]:
    """Part name -> file, for the committed files of one table (either format)."""
    folder = Path(out) / table
    files = [p for fmt in FORMATS for p in folder.glob(f"*.{fmt}") if not p.name.startswith(".")]
    return {p.name.rsplit(".", 1)[0]: p for p in sorted(files)}


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def load(out: str | Path) -> Results:
    """`(windows, videos)` DataFrames of an `s2d analyze` output folder (Parquet or CSV parts)."""
    out = Path(out)
    if not (out / VIDEOS).is_dir():
        raise FileNotFoundError(f"{out} holds no `s2d analyze` output (no {VIDEOS}/ folder)")
    video_parts = _parts(out, VIDEOS)
    window_parts = {k: p for k, p in _parts(out, WINDOWS).items() if k in video_parts}  # committed videos only
    return Results(_concat(window_parts.values(), WINDOW_COLUMNS), _concat(video_parts.values(), VIDEO_COLUMNS))


def _concat(paths, columns: list[str]) -> pd.DataFrame:
    frames = [_read(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[[c for c in columns if c in frame] + [c for c in frame if c not in columns]]
    counts = [c for c in COUNT_COLUMNS if c in frame]
    return frame.astype(dict.fromkeys(counts, "Int64"))  # whole numbers, missing where a video failed


def recorded(out: Path) -> dict[str, dict]:
    """Part name -> its `videos` row, for every video already recorded in `out`."""
    return {part: _read(path).iloc[0].to_dict() for part, path in _parts(out, VIDEOS).items()}


def class_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(PROB_PREFIX)]
