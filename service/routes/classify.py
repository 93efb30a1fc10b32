"""POST /v1/classify: a video in, per-person emotion windows and summaries out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from s2d.service import metrics
from s2d.service.analysis import analyse_video
from s2d.service.auth import require_scope
from s2d.service.deps import StateDep
from s2d.service.errors import BusyError, DeadlineError, error_responses
from s2d.service.registry import LoadedModel
from s2d.service.schemas import ClassifyOptions, ClassifyResponse
from s2d.service.state import AppState
from s2d.service.uploads import Upload, UploadAborted, receive_upload

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["classification"], dependencies=[Depends(require_scope("classify"))])

_BODY = {
    "required": True,
    "description": "The video: multipart/form-data with a `file` field, or the raw bytes with a video content type.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": "mp4, webm, mov, ..."}},
            }
        },
        "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        "video/webm": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

_EXAMPLE = {
    "request_id": "3f2a9c1d0b7e4a55",
    "model": {"name": "fer-baseline", "version": "25.10.3", "variant": "fp32", "provider": "CPUExecutionProvider",
              "family": "frame-baseline", "demo": False,
              "family_description": "per-frame baseline: not S2D, no temporal model; frame probabilities averaged "
              "over the window"},
    "mode": "faces",
    "window": {"num_frames": 16, "window_seconds": 2.0, "hop_seconds": 1.0},
    "video": {"width": 640, "height": 360, "fps": 25.0, "duration_s": 4.0, "codec": "h264", "rotation": 0,
              "frames_decoded": 100, "faces_detected": 100},
    "persons": [{
        "track_id": 0,
        "windows": [{"t_start": 0.0, "t_end": 2.0, "label": "happy", "confidence": 0.93,
                     "probs": {"happy": 0.93, "sad": 0.01, "neutral": 0.06}, "box": [212.0, 40.0, 430.0, 300.0],
                     "smoothed": None}],
        "summary": {"dominant": "happy", "mean_probs": {"happy": 0.93, "sad": 0.01, "neutral": 0.06},
                    "time_share": {"happy": 1.0, "sad": 0.0, "neutral": 0.0}, "num_windows": 1,
                    "t_first": 0.0, "t_last": 2.0},
    }],
    "timings": {"upload": 0.01, "decode": 0.12, "faces": 0.3, "queue": 0.004, "inference": 0.2, "total": 0.55},
    "options": {"mode": "faces", "smoothing": "none", "ema_alpha": 0.5},
    "notes": [],
}  # fmt: skip


def _media_name(upload: Upload) -> str:
    """The name the decoder checks the suffix of: the client's file name, else one from the content type."""
    if upload.filename and PurePath(upload.filename).suffix:
        return upload.filename
    suffix = mimetypes.guess_extension(upload.content_type or "") or ""
    return "upload" + (suffix if suffix not in ("", ".bin") else ".mp4")


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body is fully read by then, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _check_room(state: AppState, model: LoadedModel) -> None:
    """429 busy when no request slot is free or the model's queue is full."""
    if state.requests.full or model.batcher.pending >= model.batcher.queue_size:
        metrics.REJECTED.labels("busy").inc()
        raise BusyError("the service is at capacity", retry_after=model.batcher.retry_after())


def _check_upload_room(state: AppState, model: LoadedModel) -> None:
    if state.uploads.full:
        metrics.REJECTED.labels("uploads_full").inc()
        raise BusyError(
            f"{state.uploads.cap} uploads are being received; try again later", retry_after=model.batcher.retry_after()
        )


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Classify the facial expressions of every person in a video",
    openapi_extra={"requestBody": _BODY},
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}},
               **error_responses(400, 401, 404, 408, 413, 415, 422, 429, 502, 503, 504)},
)  # fmt: skip
async def classify(request: Request, options: Annotated[ClassifyOptions, Query()], state: StateDep) -> ClassifyResponse:
    with state.shutdown.tracking():  # on SIGTERM: finished, or answered 503 past the grace
        return await _classify(request, options, state)


async def _classify(request: Request, options: ClassifyOptions, state: AppState) -> ClassifyResponse:
    settings = state.settings
    model = state.registry.get(options.model)  # 503 before ready, 404 for an unknown model
    _check_room(state, model)  # refused before reading the upload when there is no room for its work now
    _check_upload_room(state, model)
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as files:  # the spooled upload is deleted when the request is over
        with state.uploads.hold():
            upload = await files.enter_async_context(
                receive_upload(request, settings.max_upload_bytes, state.upload_pace, settings.upload_dir)
            )
        upload_s = time.perf_counter() - started
        _check_room(state, model)  # the request slot is taken only now: a slow upload holds none
        with state.requests.hold():
            result = await _analyse(request, state, model, options, upload)
    result.request_id = request.scope["state"].get("request_id")
    result.timings.upload = upload_s
    result.timings.total = time.perf_counter() - started
    return result


async def _analyse(
    request: Request, state: AppState, model: LoadedModel, options: ClassifyOptions, upload: Upload
) -> ClassifyResponse:
    """The spooled upload through the pipeline, within `request_timeout_s`; cancelled if the client disconnects."""
    timeout_s = state.settings.request_timeout_s
    analysis = asyncio.ensure_future(
        analyse_video(upload.path, model, options, state.limits, state.executor, _media_name(upload))
    )
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        async with asyncio.timeout(timeout_s):
            done, _ = await asyncio.wait({analysis, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if analysis not in done:  # the client went away: drop its queued clips, stop decoding
            analysis.cancel()
            log.info("client disconnected; request cancelled")
            raise UploadAborted()
        return analysis.result()
    except TimeoutError:
        analysis.cancel()
        raise DeadlineError(
            f"the request took longer than {timeout_s:g} s", details={"request_timeout_s": timeout_s}
        ) from None
    finally:  # (also when this request is cancelled: a shutdown past its grace)
        analysis.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await analysis
