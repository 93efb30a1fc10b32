"""The batch driver: which videos still need which model (content hash + model + options), the pool that analyses
them (local processes or Ray tasks), and the one writer of the dataset: each finished video's parts, atomically."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from s2d.batch import tables
from s2d.batch.dispatch import sigint_stops
from s2d.batch.inputs import InputError, Span, VideoInput
from s2d.batch.progress import Progress
from s2d.batch.worker import Job, Record, failed_record
from s2d.files import sha256_of
from s2d.service.settings import Settings
from s2d.store import ModelStore

log = logging.getLogger(__name__)

DONE = ("ok", "no_face")  # a failed video is tried again by the next run


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)  # status -> videos written by this run
    skipped: int = 0  # already done by an earlier run
    left: int = 0  # not started (interrupted)

    @property
    def interrupted(self) -> bool:
        return self.left > 0


def run_key(settings: Settings, model: str, options: dict) -> str:
    """What decides a video's rows besides its content: the model (its card, which names every variant's sha256),
    how it runs, the face pipeline's settings and the options."""
    stored = ModelStore(settings.model_store).get(model)
    identity = {
        "card": sha256_of(stored.path / "card.json"), "variant": settings.variant, "providers": settings.providers,
        "detector": settings.detector, "detect_every": settings.detect_every, "options": options,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def plan(videos: list[VideoInput], options: list[dict], settings: Settings, out: Path) -> tuple[list, list, int]:
    """(jobs to run, records of inputs that cannot run: missing files, count already done), one job per video and
    model. The key must be known before a video is handed out: a file recorded before with the same path, size and
    modification time keeps its content hash (as make and rsync judge a file unchanged); any other is read and hashed
    here."""
    keys = [run_key(settings, o["model"], o) for o in options]
    rows = tables.recorded(out).items()
    done = {part for part, row in rows if row["status"] in DONE}
    known = {_file_id(row["path"], row["size_bytes"], row.get("mtime_ns")): row["video_key"] for _, row in rows}
    jobs, missing, skipped, seen = [], [], 0, {}
    for video in videos:
        if not video.path.is_file():
            key = hashlib.sha256(str(video.path).encode()).hexdigest()[:16]
            for o, k in zip(options, keys, strict=True):
                job = Job(video, key, None, None, o, k)
                missing.append(failed_record(job, "not_found", f"no such file: {video.path}"))
            continue
        stat = video.path.stat()
        key = known.get(_file_id(video.path, stat.st_size, stat.st_mtime_ns)) or sha256_of(video.path)[:16]
        if key in seen:  # the same bytes twice: their rows are the first path's
            log.warning("%s has the same content as %s: analysed once, under the first path", video.path, seen[key])
            continue
        seen[key] = video.path
        for o, k in zip(options, keys, strict=True):
            job = Job(video, key, stat.st_size, stat.st_mtime_ns, o, k)
            if job.part in done:
                skipped += 1
            else:
                jobs.append(job)
    return jobs, missing, skipped


def _file_id(path, size, mtime_ns) -> tuple | None:
    """(path, size, modification time) of a file; None where a row has none (a missing file, an older row)."""
    return None if pd.isna(size) or pd.isna(mtime_ns) else (str(path), int(size), int(mtime_ns))


def write_record(out: Path, record: Record, fmt: str) -> None:
    """Windows first, then the video's row: the row is the record that the video is done (see tables.py). A video
    without windows removes those an interrupted earlier write may have left under its name."""
    if record.windows:
        tables.write_part(out, tables.WINDOWS, record.part, record.windows, fmt)
    else:
        tables.part_path(out, tables.WINDOWS, record.part, fmt).unlink(missing_ok=True)
    tables.write_part(out, tables.VIDEOS, record.part, [record.video], fmt)


def run_batch(pool, videos: list[VideoInput], options: list[dict], settings: Settings, out: Path, fmt: str) -> Summary:
    """Analyse every video with every model's options in `pool` (local.LocalPool or ray_pool.RayPool)."""
    with sigint_stops() as stop:  # Ctrl-C while hashing, too, stops before any video
        out.mkdir(parents=True, exist_ok=True)
        tables.remove_leftovers(out)
        jobs, missing, skipped = plan(videos, options, settings, out)
        summary = Summary(skipped=skipped)
        progress = Progress(len(jobs) + len(missing), skipped)
        log.info("%d videos x %d model(s): %d to analyse, %d done before", len(videos), len(options), len(jobs),
                 skipped)  # fmt: skip
        for record in itertools.chain(missing, pool.run(jobs, stop)):  # each written as it arrives
            write_record(out, record, fmt)
            summary.counts[record.status] += 1
            progress.update(record)
        progress.close()
    summary.left = len(jobs) + len(missing) - sum(summary.counts.values())
    return summary


def check_manifest_columns(videos: list[VideoInput]) -> None:
    """A manifest column named like one of ours would be overwritten in `videos`: refused before any work."""
    clash = sorted({c for v in videos for c in v.extra} & set(tables.VIDEO_COLUMNS))
    if clash:
        raise InputError(f"the manifest's column(s) {', '.join(clash)} clash with the videos table's: rename them")


def check_labels(spans: list[Span], classes_by_model: dict[str, list[str]]) -> None:
    """Every span's label is a class of every model (see accuracy.match_label), before any work."""
    from s2d.batch.accuracy import match_label

    for model, classes in classes_by_model.items():
        for span in spans:
            match_label(span.label, classes, model)
