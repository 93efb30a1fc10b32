"""Server-side sources: RTSP / HLS / HTTP URLs the server pulls with PyAV and analyses like a live stream.

`POST /v1/sources {url, name?, model?, options}` starts one (service.routes.sources); its frames go through the same
`LiveStream` as `/v1/stream` (face pipeline, tracker, windows, batcher, smoothing), fed decoded frames instead of
JPEG messages, and its events reach subscribers over a WebSocket or Server-Sent Events, the last results per track
over REST. Off unless `sources_enabled`; the hosts a source may open are the operator's allow-list
(`sources_allow`, service.sources.policy). Reading, reconnecting and the states: service.sources.source.
"""

from s2d.service.sources.manager import SourceManager
from s2d.service.sources.policy import AllowList, parse_url, redact
from s2d.service.sources.source import Source, SourceConfig, ffmpeg_options

__all__ = ["AllowList", "Source", "SourceConfig", "SourceManager", "ffmpeg_options", "parse_url", "redact"]
