"""Run the service with uvicorn (`s2d serve`, or `python -m service`). One process serves one device: scale out
with one process per GPU behind a load balancer (streams need sticky routing)."""

from __future__ import annotations

import logging

from service.settings import Settings, load_settings


def serve(settings: Settings | None = None) -> None:
    import uvicorn

    from service.app import create_app
    from service.engine import check_providers
    from service.logs import configure_logging

    settings = settings or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    check_providers(settings.providers)  # a clear message before uvicorn starts, not a lifespan traceback
    logging.getLogger(__name__).info(
        "starting on http://%s:%d with providers %s", settings.host, settings.port, settings.providers
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON-lines handlers, configured above
        access_log=False,
        timeout_graceful_shutdown=10,
        # Live streams: one WebSocket message is one frame (header + image); protocol pings find dead peers.
        ws_max_size=settings.stream_max_frame_bytes + 64,
        # Frames are JPEG/PNG/WebP, already compressed: permessage-deflate would only burn CPU on both ends.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.stream_heartbeat_s,
        ws_ping_timeout=settings.stream_heartbeat_s,
    )
