"""One video through one model in a worker that holds the loaded models (`service.predict.VideoAnalyser`: the same
pipeline and probabilities as POST /v1/classify), returned as table rows. Every failure of a video becomes its
`failed` row: a worker never stops on a bad file."""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from s2d.batch.inputs import VideoInput
from s2d.batch.tables import KEY_COLUMNS, VIDEO_COLUMNS, window_rows
from s2d.service.errors import ServiceError
from s2d.service.predict import VideoAnalyser
from s2d.service.schemas import ClassifyOptions
from s2d.service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    video: VideoInput
    video_key: str  # the content's sha256, shortened
    size_bytes: int | None
    mtime_ns: int | None  # with the path and size: the file the content hash was taken of
    options: dict  # ClassifyOptions fields, the model's name included
    run_key: str  # the model and options, hashed: the second half of the part's name

    @property
    def part(self) -> str:
        return f"{self.video_key}-{self.run_key}"

    @property
    def model(self) -> str:
        return self.options["model"]


@dataclass
class Record:
    """What a worker hands back for one job: the row of `videos` and the rows of `windows`."""

    part: str
    video: dict
    windows: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.video["status"]


def failed_record(job: Job, code: str, message: str) -> Record:
    """The `videos` row of a job that produced nothing, written by the driver (a missing file, a lost worker)."""
    return Record(job.part, _video_row(job, {}) | {"status": "failed", "error_code": code, "error_message": message})


def _video_row(job: Job, model: dict) -> dict:
    return dict.fromkeys(VIDEO_COLUMNS) | {
        "video_key": job.video_key, "path": str(job.video.path), "model": model.get("name", job.model),
        "model_version": model.get("version"), "model_family": model.get("family"),
        "model_variant": model.get("variant"), "run_key": job.run_key, "size_bytes": job.size_bytes,
        "mtime_ns": job.mtime_ns,
        "worker": f"{socket.gethostname()}:{os.getpid()}", "node_id": None,
        "analysed_at": datetime.now(UTC).isoformat(timespec="seconds"), "options": json.dumps(job.options),
        **job.video.extra,
    }  # fmt: skip


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Worker:
    """Holds the models of `settings` loaded; `run(job)` analyses one video."""

    def __init__(self, settings: Settings, node_id: str | None = None):
        self.analyser = VideoAnalyser(settings)
        self.node_id = node_id

    def run(self, job: Job) -> Record:
        started = time.perf_counter()
        loaded = self.analyser.registry.models[job.model]
        # engine: the worker's engine and precision or variant (e.g. openvino/bf16), its start-up trial's choice
        row = _video_row(job, loaded.ref()) | {"node_id": self.node_id, "engine": loaded.choice.candidate}
        try:
            response = self.analyser.analyse(Path(job.video.path), ClassifyOptions(**job.options))
        except ServiceError as err:  # media errors included: the decoder's refusal, with its stable code
            return Record(job.part, row | _failure(err.code, err.message, started))
        except Exception as err:  # a bug or a library's surprise on this file: recorded, the batch goes on
            log.exception("%s failed", job.video.path)
            return Record(job.part, row | _failure("internal", f"{type(err).__name__}: {err}", started))
        windows = window_rows(response, {column: row[column] for column in KEY_COLUMNS})
        info = response.video
        row |= {
            "status": "ok" if response.persons else "no_face", "error_code": None, "error_message": None,
            "duration_s": info.duration_s, "fps": info.fps, "width": info.width, "height": info.height,
            "frames_decoded": info.frames_decoded, "faces_detected": info.faces_detected,
            "persons": len(response.persons), "windows": len(windows),
            "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib(),
        }  # fmt: skip
        return Record(job.part, row, windows)


def _failure(code: str, message: str, started: float) -> dict:
    return {"status": "failed", "error_code": code, "error_message": message,
            "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}  # fmt: skip
