"""Live streams: per-stream state and back-pressure for the WebSocket endpoint `/v1/stream`.

Protocol (version 1; the README's "Live streams" section has the same with examples)
-----------------------------------------------------------------------------------
Connect to `ws[s]://HOST/v1/stream`. With an API key configured, send it as `Authorization: Bearer KEY` or
`X-API-Key: KEY`, or (browsers cannot set headers on a WebSocket) offer the subprotocols `["s2d.v1", "bearer.KEY"]`;
the server then answers with subprotocol `s2d.v1`.

Client -> server
  1. text, first message: the hello, a JSON object (`StreamHello`):
     `{"type": "hello", "model": null, "mode": "faces", "fps": 15, "smoothing": "ema", "ema_alpha": 0.5,
       "hysteresis": 0.1, "window_seconds": null, "hop_seconds": null, "tracks_fps": 10, "stats_interval_s": 1}`
  2. binary: one video frame = a 16-byte header + a JPEG, PNG or WebP image:
       bytes 0-3   magic b"S2D1"
       bytes 4-11  float64 little-endian: client timestamp in milliseconds (any clock, strictly increasing;
                   e.g. `performance.timeOrigin + performance.now()`); it is echoed back in events
       bytes 12-15 uint32 little-endian: frame sequence number (echoed back)
     Stream time `t` (seconds, what windows are cut on) is (timestamp - first frame's timestamp) / 1000.
  3. text: `{"type": "end"}` (classify what is buffered, send the last results, an `end` event, close 1000) or
     `{"type": "ping"}` (answered with `pong`).

Server -> client: JSON text events, each with a `type`:
  `ready`    after the hello: model (name, version, variant, provider, demo), classes, window, the frames between
             full face detections (`detect_every_frames`, faces mode), effective limits.
  `tracks`   at most `tracks_fps` per second: the faces of the latest processed frame,
             `{seq, frame_ts, t, width, height, tracks: [{track_id, box: [x1, y1, x2, y2], score}]}`.
  `result`   as soon as a window is classified: `{track_id, t_start, t_end, label, confidence, probs: {class: p},
             smoothed: {label, confidence, probs} | null, box, seq, frame_ts, latency_ms: {server, queue,
             inference}}`; `frame_ts`/`seq` name the frame that completed the window, so the client measures
             end-to-end latency with its own clock; `latency_ms.server` is frame arrival -> result sent.
  `stats`    every `stats_interval_s`: frame and window counts, drops by reason, server latency p50/p95.
  `error`    `{code, message, fatal}`; a non-fatal error drops one message and the stream goes on.
  `pong`, `end` (final stats, then close 1000).

Back-pressure (memory per stream is bounded whatever the client does)
  - Frames: at most `stream_frame_buffer` wait for the face pipeline; when the stream falls behind the oldest
    waiting frame is dropped (reason `behind`). Frames closer than 0.5 / fps to the previous one are dropped
    (`rate`). Malformed, oversized and undecodable frames are dropped with an error event.
    Under load a frame also waits for a free pipeline thread; the thread then takes the newest frame of the
    stream and drops the older ones (`behind`), so it never decodes a frame that is already stale.
  - Windows: per track at most one window is in the batcher and one waits for it; a newer window replaces the
    waiting one (`superseded`). Streams together keep at most one batch of clips in the batcher
    (`Batcher.stream_admission`, granted in arrival order): under overload a track waits for its turn in the
    stream and then submits its newest window, so latency stays about one batch long instead of growing with the
    number of open tracks. Windows refused by a full batcher queue (`busy`) or past their deadline (`deadline`)
    are dropped. Every drop is counted in `stats`, in `end`, and in the Prometheus metrics.
  - Events: a bounded outbox; when the client reads too slowly, droppable events (tracks, stats) go first, then
    the oldest results; a single send blocked longer than `stream_send_timeout_s` closes the stream (1008).
  - Incoming messages: the WebSocket layer caps one message at `stream_max_frame_bytes` (close 1009) and stops
    reading the socket while a message waits for the stream (uvicorn's default protocol: TCP flow control then
    pushes back on a client that sends faster than the stream reads); no permessage-deflate (frames are already
    compressed); uvicorn's protocol pings every `stream_heartbeat_s` close dead peers.
  - Closed streams release their state at once (`LiveStream.release`); once no stream has been open for 2 s the
    server gives freed memory back to the OS (`service.memory`).

Close codes: 1000 end, 1001 idle timeout / server shutdown, 1002 protocol error (no valid hello), 1008 policy
(unauthorized, bad hello, unknown model, slow reader), 1009 message too big, 1011 internal error, 1013 try again
later (too many streams, models not ready).
"""

from s2d.service.streams.buffers import FrameBuffer, Outbox
from s2d.service.streams.hub import StreamHub
from s2d.service.streams.live import LiveStream, StreamConfig, StreamStats, drain_task
from s2d.service.streams.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    FRAME_DROP_REASONS,
    HEADER,
    MAGIC,
    SUBPROTOCOL,
    WINDOW_DROP_REASONS,
    Event,
    FrameMessage,
    StreamHello,
    decode_image,
    dumps,
    event_type,
    pack_frame,
    parse_frame,
)

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "FRAME_DROP_REASONS",
    "HEADER",
    "MAGIC",
    "SUBPROTOCOL",
    "WINDOW_DROP_REASONS",
    "Event",
    "FrameBuffer",
    "FrameMessage",
    "LiveStream",
    "Outbox",
    "StreamConfig",
    "StreamHello",
    "StreamHub",
    "StreamStats",
    "decode_image",
    "drain_task",
    "dumps",
    "event_type",
    "pack_frame",
    "parse_frame",
]
