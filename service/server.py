"""Run the service with uvicorn (`s2d serve`, or `python -m service`). One process serves one device: scale out
with one process per GPU behind a load balancer (streams need sticky routing)."""

from __future__ import annotations

import logging
import sys

from s2d.service.settings import Settings, load_settings

# After the drain (service.shutdown) nothing is in flight; this bounds what uvicorn waits for then (a stream client
# that never answers the close, a response still being written).
UVICORN_GRACE_S = 5


def _draining_server(config, drain):
    """uvicorn.Server whose first SIGTERM / SIGINT runs `drain()` (an async callable) before uvicorn's own shutdown,
    which a second signal starts at once."""
    import asyncio

    import uvicorn

    class DrainingServer(uvicorn.Server):
        _signal: int | None = None
        _drain: asyncio.Task | None = None

        def handle_exit(self, sig, frame) -> None:
            if self._signal is None and not self.should_exit:
                self._signal = sig  # a signal handler does no asyncio work: on_tick starts the drain
                return
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if self._signal is not None and self._drain is None:
                self._drain = asyncio.create_task(drain(), name="drain")
            if self._drain is not None and self._drain.done() and not self.should_exit:
                super().handle_exit(self._signal, None)  # uvicorn's shutdown, and the signal re-raised after it
            return await super().on_tick(counter)

    return DrainingServer(config)


def _startup_failure_in_one_line(app):
    """The app as uvicorn runs it: when start-up fails for a reason the lifespan has logged in one line
    (`startup_error`: the configuration's, service.app), uvicorn is not handed the traceback to log as well."""

    async def asgi(scope, receive, send):
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)

        async def send_lifespan(message):
            if message["type"] == "lifespan.startup.failed" and getattr(app.state, "startup_error", None):
                message = {**message, "message": ""}
            await send(message)

        return await app(scope, receive, send_lifespan)

    return asgi


def serve(settings: Settings | None = None) -> None:
    import uvicorn
    from uvicorn.main import STARTUP_FAILURE

    from s2d.service.app import create_app, drain
    from s2d.service.inference import check_providers
    from s2d.service.logs import configure_logging

    settings = settings or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    if settings.engine in ("auto", "onnxruntime"):
        check_providers(settings.providers)  # a clear message before uvicorn starts, not a lifespan traceback
        engine = f"ONNX Runtime providers {settings.providers}"
        if settings.engine == "auto":
            engine += " or OpenVINO, the faster at warm-up"
    elif settings.engine == "openvino":
        engine = f"OpenVINO on the CPU at precision {settings.openvino_precision}"
    else:
        engine = f"the Triton server at {settings.triton_url} (gRPC)"
    logging.getLogger(__name__).info("starting on http://%s:%d with %s", settings.host, settings.port, engine)
    app = create_app(settings)
    config = uvicorn.Config(
        _startup_failure_in_one_line(app),
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON-lines handlers, configured above
        access_log=False,
        timeout_graceful_shutdown=UVICORN_GRACE_S,
        # Live streams: one WebSocket message is one frame (header + image); protocol pings find dead peers.
        ws_max_size=settings.stream_max_frame_bytes + 64,
        # Frames are JPEG/PNG/WebP, already compressed: permessage-deflate would only burn CPU on both ends.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.stream_heartbeat_s,
        ws_ping_timeout=settings.stream_heartbeat_s,
    )
    server = _draining_server(config, lambda: drain(app))
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run does: the lifespan failed (the reason is in the log)
