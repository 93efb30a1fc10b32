"""Server-side sources: POST / GET / DELETE /v1/sources, and a source's results over REST and events over a WebSocket
or Server-Sent Events. The events are the live stream's (`ready`, `tracks`, `result`, `stats`, `end`; service.streams)
plus `source`: the source's state (service.schemas.SourceInfo), at once and on every change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, WebSocket
from fastapi.responses import StreamingResponse

from s2d.service.auth import require_scope
from s2d.service.deps import SettingsDep, ShutdownDep, SourceManagerDep, SourcesDep
from s2d.service.errors import ServiceError, error_responses
from s2d.service.routes.stream import refuse, send_events
from s2d.service.schemas import SourceInfo, SourceList, SourceRequest, SourceResults
from s2d.service.sources import Source
from s2d.service.streams import CLOSE_POLICY, Outbox, drain_task, dumps, event_type

router = APIRouter(prefix="/v1", tags=["sources"], dependencies=[Depends(require_scope("sources"))])
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet connection


@router.post(
    "/sources", status_code=201, response_model=SourceInfo,
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
    summary="Start analysing an RTSP, HLS or HTTP video URL (the server pulls it)",
)  # fmt: skip
async def create_source(body: SourceRequest, sources: SourcesDep, shutdown: ShutdownDep) -> SourceInfo:
    with shutdown.tracking():  # refused with 503 once the server shuts down
        return (await sources.create(body)).info()


@router.get("/sources", response_model=SourceList, responses=error_responses(401, 403), summary="Sources and state")
async def list_sources(sources: SourcesDep) -> SourceList:
    return SourceList(sources=[s.info() for s in sources.sources.values()], max_sources=sources.max_sources)


@router.get("/sources/{source_id}", response_model=SourceInfo, responses=error_responses(401, 403, 404),
            summary="One source: state, counters, last error")  # fmt: skip
async def get_source(source_id: str, sources: SourcesDep) -> SourceInfo:
    return sources.get(source_id).info()


@router.delete("/sources/{source_id}", response_model=SourceInfo, responses=error_responses(401, 403, 404),
               summary="Stop a source (its last windows are classified and sent) and forget it")  # fmt: skip
async def delete_source(source_id: str, sources: SourcesDep) -> SourceInfo:
    return (await sources.delete(source_id)).info()


@router.get("/sources/{source_id}/results", response_model=SourceResults, responses=error_responses(401, 403, 404),
            summary="The last results of each track (newest last)")  # fmt: skip
async def source_results(
    source_id: str, sources: SourcesDep, last: Annotated[int | None, Query(ge=1, le=10_000)] = None
) -> SourceResults:
    source = sources.get(source_id)
    return SourceResults(source=source.info(), tracks=source.results.last(last))


@router.get(
    "/sources/{source_id}/events", response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event: TYPE` / `data: JSON` per event"},
               **error_responses(401, 403, 404)},
    summary="The source's events as Server-Sent Events (the same path is a WebSocket too)",
)  # fmt: skip
async def source_events(source_id: str, sources: SourcesDep) -> StreamingResponse:
    source = sources.get(source_id)
    box = source.subscribe(sources.send_queue)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass events on as they come
    return StreamingResponse(_server_sent(source, box), media_type="text/event-stream", headers=headers)


async def _server_sent(source: Source, box: Outbox) -> AsyncIterator[str]:
    try:
        while True:
            try:
                event = await asyncio.wait_for(box.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            yield f"event: {event_type(event)}\ndata: {dumps(event)}\n\n"
    finally:  # also when the client goes away (the response is cancelled)
        source.unsubscribe(box)


@router.websocket("/sources/{source_id}/events")
async def source_events_socket(ws: WebSocket, source_id: str, sources: SourceManagerDep, settings: SettingsDep) -> None:
    await ws.accept()
    try:
        sources.check_enabled()  # refused over the socket, with its reason
        source = sources.get(source_id)
    except ServiceError as err:
        await refuse(ws, CLOSE_POLICY, err.message, err.code)
        return
    box = source.subscribe(sources.send_queue)
    tasks = [
        asyncio.create_task(send_events(ws, box, settings.stream_send_timeout_s), name="source-send"),
        asyncio.create_task(_until_gone(ws), name="source-receive"),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        source.unsubscribe(box)
        for task in tasks:
            await drain_task(task)


async def _until_gone(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass
