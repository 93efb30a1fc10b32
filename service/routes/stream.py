"""WebSocket `/v1/stream`: live emotion per person (the protocol: service.streams)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from s2d.service import metrics
from s2d.service.analysis import resolve_window
from s2d.service.auth import require_scope
from s2d.service.deps import StateDep
from s2d.service.errors import NotReadyError, ServiceError, UnknownModelError
from s2d.service.state import SHUTTING_DOWN, AppState
from s2d.service.streams import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TRY_LATER,
    SUBPROTOCOL,
    LiveStream,
    Outbox,
    StreamHello,
    drain_task,
    dumps,
)

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_scope("stream"))])


async def refuse(ws: WebSocket, code: int, reason: str, error_code: str) -> None:
    """Send an error event, then close with `code` and `reason` (a close reason is at most 123 bytes)."""
    with contextlib.suppress(Exception):
        await ws.send_text(dumps({"type": "error", "code": error_code, "message": reason, "fatal": True}))
        await ws.close(code, reason.encode()[:123].decode(errors="ignore"))


@router.websocket("/v1/stream")
async def stream(ws: WebSocket, state: StateDep) -> None:
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    hub = state.streams
    if state.shutdown.started:
        await refuse(ws, CLOSE_GOING_AWAY, SHUTTING_DOWN, "shutting_down")
        return
    if hub.full:
        metrics.REJECTED.labels("streams_full").inc()
        await refuse(ws, CLOSE_TRY_LATER, f"too many streams ({hub.active} open); try again later", "busy")
        return
    hub.enter()
    try:
        live = await _start(ws, state)
        if live is not None:
            hub.open.add(live)
            try:
                await ws.send_text(dumps(live.ready_event()))
                await _run(ws, live, state.settings.stream_idle_timeout_s)
            finally:
                hub.open.discard(live)
                live.release()
    except WebSocketDisconnect as gone:
        # A client going away is normal, whenever it happens (before the hello, after it, mid-stream): one line.
        log.info("stream client disconnected (close code %s)", gone.code, extra={"close_code": gone.code})
    finally:
        hub.leave()


async def _start(ws: WebSocket, state: AppState) -> LiveStream | None:
    """Read the hello; answer `ready`, or refuse with a reason."""
    settings = state.settings
    try:
        message = await asyncio.wait_for(ws.receive(), settings.stream_idle_timeout_s)
    except TimeoutError:
        await refuse(ws, CLOSE_GOING_AWAY, "idle timeout: no hello", "idle_timeout")
        return None
    _raise_if_gone(message)
    text = message.get("text")
    try:
        if text is None:
            raise ValueError("the first message must be the JSON hello (text), not a binary frame")
        hello = StreamHello.model_validate_json(text)
    except (ValueError, ValidationError) as err:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()) if isinstance(
            err, ValidationError) else str(err)  # fmt: skip
        await refuse(ws, CLOSE_PROTOCOL, f"bad hello: {detail}", "bad_hello")
        return None
    try:
        model = state.registry.get(hello.model)
        window_s, hop_s = resolve_window(model.stored.card.window_seconds, hello, state.limits)
    except NotReadyError as err:
        await refuse(ws, CLOSE_TRY_LATER, err.message, err.code)
        return None
    except (UnknownModelError, ServiceError) as err:
        await refuse(ws, CLOSE_POLICY, err.message, err.code)
        return None
    return LiveStream(hello, model, window_s, hop_s, state.stream_config, state.executor)


def _raise_if_gone(message: dict) -> None:
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1005))


async def _run(ws: WebSocket, live: LiveStream, idle_timeout_s: float) -> None:
    tasks = [
        asyncio.create_task(_receive(ws, live, idle_timeout_s), name="stream-receive"),
        asyncio.create_task(live.process(), name="stream-process"),
        asyncio.create_task(send_events(ws, live.outbox, live.config.send_timeout_s), name="stream-send"),
        asyncio.create_task(live.tick(), name="stream-stats"),
    ]
    receiver, processor, sender, _ = tasks
    waiting = {receiver, processor, sender}
    try:
        # Over when the sender has closed the socket (end, idle, slow reader) or the client is gone (the receiver
        # or the sender raises WebSocketDisconnect, which the endpoint logs).
        while sender in waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
    except WebSocketDisconnect:
        raise
    except Exception:
        log.exception("stream failed")
        with contextlib.suppress(Exception):
            await ws.close(CLOSE_INTERNAL, "internal error")
    finally:
        live.cancel()
        for task in tasks:
            await drain_task(task)


async def _receive(ws: WebSocket, live: LiveStream, idle_timeout_s: float) -> None:
    """Read messages until end / idle timeout (then the sender closes); a disconnect raises WebSocketDisconnect."""
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), idle_timeout_s)
        except TimeoutError:
            live.error("idle_timeout", f"no message for {idle_timeout_s:g} s", fatal=True)
            live.outbox.close(CLOSE_GOING_AWAY, "idle timeout")
            return
        _raise_if_gone(message)
        if (data := message.get("bytes")) is not None:
            live.on_frame(data, time.monotonic())
            continue
        try:
            control = json.loads(message.get("text") or "")
            kind = control.get("type") if isinstance(control, dict) else None
        except ValueError:
            kind = None
        if kind == "end":
            live.frames.end()
            return
        if kind == "ping":
            live.outbox.put({"type": "pong", "t": control.get("t")})
        else:
            live.error("bad_message", "text messages are JSON objects with type 'end' or 'ping' (frames are binary)")


async def send_events(ws: WebSocket, outbox: Outbox, timeout: float) -> None:
    """Send the outbox's events in order; close when it asks. A client that does not read for `timeout` is closed
    (1008). Live streams and the event sockets of server-side sources (routes.sources) send this way."""
    try:
        while (event := await outbox.get()) is not None:
            await asyncio.wait_for(ws.send_text(dumps(event)), timeout)
        code, reason = outbox.closing
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except TimeoutError:  # (before OSError, its base class)
        metrics.REJECTED.labels("slow_reader").inc()
        log.warning("stream closed: the client did not read for %.0f s", timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(CLOSE_POLICY, "slow reader"), 1)
    except (WebSocketDisconnect, OSError) as gone:
        raise WebSocketDisconnect(getattr(gone, "code", 1006)) from None  # the client is gone
    except RuntimeError:
        return  # Starlette refuses to send once the socket is closed: it was closed on purpose already
