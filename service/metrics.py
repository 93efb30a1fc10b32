"""Prometheus metrics of the service (prometheus-client, default registry, `s2d_` names, seconds as the unit).

One process serves one set of models on one device (scale out with one process per GPU), so the default
in-process registry is exact; no multiprocess mode is needed. Never run the app under several uvicorn / gunicorn
workers: each would hold its own registry and its own copy of the models, and a scrape would see one of them at random.
Each process is its own Prometheus target; dashboards sum over `instance` (docker/README.md).
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from s2d.service.schemas import SourceState

disable_created_metrics()  # no `*_created` series: Prometheus does not use them, they only double the series count

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)

HTTP_REQUESTS = Counter("s2d_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "s2d_http_request_duration_seconds",
    "HTTP request duration",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
ERRORS = Counter("s2d_errors_total", "Error responses by stable error code", ["code"])
# Per API key, by its name (never the key; service.auth): "-" for requests without a known key.
KEY_REQUESTS = Counter("s2d_key_requests_total", "HTTP requests by API key name and status", ["key", "status"])
KEY_STREAMS = Gauge("s2d_key_streams", "WebSockets open by API key name", ["key"])

QUEUE_WAIT = Histogram(
    "s2d_inference_queue_wait_seconds",
    "Time a clip waits in the batcher queue",
    ["model", "provider"],
    buckets=_LATENCY_BUCKETS,
)
COMPUTE = Histogram(
    "s2d_inference_compute_seconds",
    "Duration of one batched inference call",
    ["model", "provider"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "s2d_inference_batch_size", "Clips per inference call", ["model", "provider"], buckets=_BATCH_BUCKETS
)
QUEUE_DEPTH = Gauge("s2d_inference_queue_clips", "Clips waiting in the batcher queue", ["model"])
CLIPS = Counter("s2d_clips_total", "Clips (windows) classified", ["model"])
FRAMES = Counter("s2d_frames_total", "Video frames decoded", ["source"])
FACES = Counter("s2d_faces_total", "Faces detected", ["source"])
REJECTED = Counter("s2d_rejected_total", "Work refused because the service was busy", ["reason"])
ACTIVE_REQUESTS = Gauge("s2d_active_requests", "Classification requests being processed")
ACTIVE_UPLOADS = Gauge("s2d_active_uploads", "Uploads being received")
MODEL_INFO = Gauge(
    "s2d_model_info",
    "Loaded models (value 1)",
    ["model", "version", "variant", "precision", "provider", "demo", "family"],
)
READY = Gauge("s2d_ready", "1 when every model is loaded and warmed up")

# Live streams (WebSocket /v1/stream)
ACTIVE_STREAMS = Gauge("s2d_active_streams", "WebSocket streams open")
FRAMES_DROPPED = Counter("s2d_frames_dropped_total", "Stream frames dropped, by reason", ["reason"])
STREAM_WINDOWS_DROPPED = Counter("s2d_stream_windows_dropped_total", "Stream windows dropped, by reason", ["reason"])
STREAM_EVENTS_DROPPED = Counter("s2d_stream_events_dropped_total", "Stream events dropped for slow readers")
STREAM_RESULT_LATENCY = Histogram(
    "s2d_stream_result_latency_seconds",
    "Stream frame arrival to the result of the window it completed, sent",
    buckets=_LATENCY_BUCKETS,
)

# Server-side sources (POST /v1/sources); per-source series go when the source is deleted.
SOURCE_STATES = get_args(SourceState)
SOURCES = Gauge("s2d_sources", "Server-side sources by state", ["state"])
SOURCE_STATE = Gauge("s2d_source_state", "1 for the state a source is in, 0 for the others", ["source_id", "state"])
SOURCE_FRAMES = Counter(
    "s2d_source_frames_total",
    "Source frames: decoded (every frame FFmpeg decoded), taken (at the source's rate, for the face pipeline)",
    ["source_id", "stage"],
)
SOURCE_WINDOWS = Counter("s2d_source_windows_total", "Source windows classified", ["source_id"])
SOURCE_RECONNECTS = Counter("s2d_source_reconnects_total", "Source connection attempts after the first", ["source_id"])

# Known label values start at 0, so rates read 0 instead of "no data" before the first event (Prometheus' advice for
# labelled counters); values not listed get their series on first use. tests/test_prometheus.py keeps these lists
# in step with the reasons the code uses.
REJECT_REASONS = ("busy", "queue_full", "streams_full", "slow_reader", "uploads_full", "upload_timeout")
FRAME_DROP_REASONS = ("behind", "rate", "out_of_order", "malformed", "too_large", "undecodable")
WINDOW_DROP_REASONS = ("superseded", "busy", "deadline", "failed")
for _counter, _values in (
    (REJECTED, REJECT_REASONS),
    (FRAMES_DROPPED, FRAME_DROP_REASONS),
    (STREAM_WINDOWS_DROPPED, WINDOW_DROP_REASONS),
    (SOURCES, SOURCE_STATES),
):
    for _value in _values:
        _counter.labels(_value)
