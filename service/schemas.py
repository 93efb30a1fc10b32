"""Request options and response bodies of the REST API (pydantic v2; these are the OpenAPI schemas)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["faces", "aligned"]
Smoothing = Literal["none", "ema"]


class ClassifyOptions(BaseModel):
    """Query parameters of POST /v1/classify."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name (GET /v1/models); default: the service's default model")
    mode: Mode = Field(
        "faces",
        description="faces: detect, track and align every face; aligned: the video already shows one aligned face "
        "crop per frame (dataset clips), no detection (frames are resized to the model's 224x224 input)",
    )
    window_seconds: float | None = Field(
        None, gt=0, description="duration one window covers; default: the model card's (limits: see settings)"
    )
    hop_seconds: float | None = Field(None, gt=0, description="step between window starts; default: window_seconds / 2")
    smoothing: Smoothing = Field("none", description="ema: exponential moving average over each person's windows")
    ema_alpha: float = Field(0.5, gt=0, le=1, description="EMA weight of the newest window (1 = no smoothing)")
    hysteresis: float = Field(
        0.1, ge=0, le=1, description="with ema: the smoothed label changes only when a class leads it by this margin"
    )


class StreamOptions(BaseModel):
    """How a live stream is analysed: the hello of `/v1/stream` (with `type` and `model`) and the `options` of a
    server-side source (`POST /v1/sources`)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(
        "faces", description="faces: detect and track faces; aligned: every frame is one aligned face crop (track 0)"
    )
    fps: float = Field(15.0, gt=0, le=120, description="the frame rate frames are taken at (capped by the server)")
    window_seconds: float | None = Field(None, gt=0)
    hop_seconds: float | None = Field(None, gt=0)
    smoothing: Smoothing = "ema"
    ema_alpha: float = Field(0.5, gt=0, le=1, description="EMA weight of the newest window (1 = no smoothing)")
    hysteresis: float = Field(
        0.1, ge=0, le=1, description="the smoothed label changes only when a class leads it by this margin"
    )
    tracks_fps: float = Field(10.0, ge=0, le=60, description="most `tracks` events per second (0: none)")
    stats_interval_s: float = Field(1.0, ge=0.1, le=60)


class Prediction(BaseModel):
    label: str = Field(examples=["happy"])
    confidence: float = Field(ge=0, le=1, examples=[0.91])
    probs: dict[str, float] = Field(description="probability per class, in the model's class order")

    @classmethod
    def of(cls, classes: list[str], probs, label: int | None = None, digits: int | None = None) -> Prediction:
        """From probabilities [C] in class order; `label` overrides the argmax (a hysteresis label); `digits`
        rounds (live-stream events)."""
        best = int(np.argmax(probs)) if label is None else label

        def value(p) -> float:
            return float(p) if digits is None else round(float(p), digits)

        return cls(label=classes[best], confidence=value(probs[best]),
                   probs={c: value(p) for c, p in zip(classes, probs, strict=True)})  # fmt: skip


class FaceAtFrame(BaseModel):
    """Where the face was in one frame of the window."""

    t: float = Field(description="seconds from the start of the video: the window's middle sampled frame")
    box: list[float] = Field(description="face box, x1 y1 x2 y2 pixels")
    keypoints: list[list[float]] = Field(
        description="five keypoints [x, y] in pixels: image-left eye, image-right eye, nose, left and right mouth "
        "corner"
    )


class WindowResult(Prediction):
    t_start: float = Field(description="seconds from the start of the video", examples=[0.0])
    t_end: float = Field(examples=[2.0])
    box: list[float] | None = Field(None, description="median face box over the window, x1 y1 x2 y2 pixels")
    middle: FaceAtFrame | None = Field(None, description="the face at the window's middle frame (faces mode)")
    smoothed: Prediction | None = Field(
        None, description="after smoothing (when asked for); the raw result stays above"
    )


class PersonSummary(BaseModel):
    dominant: str = Field(description="class with the highest mean probability", examples=["happy"])
    mean_probs: dict[str, float]
    time_share: dict[str, float] = Field(
        description="share of the person's windows labelled with each class (the smoothed label when smoothing)"
    )
    num_windows: int
    t_first: float
    t_last: float


class Person(BaseModel):
    track_id: int
    windows: list[WindowResult]
    summary: PersonSummary


class VideoInfo(BaseModel):
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    codec: str | None = None
    rotation: int = 0
    frames_decoded: int = 0
    faces_detected: int = Field(
        0, description="faces found, summed over the frames (faces mode; 0 in aligned mode); 0: no persons, no error"
    )


class ModelRef(BaseModel):
    name: str
    version: str
    variant: str
    provider: str
    family: str = Field(description="s2d-video, frame-baseline or demo: what kind of model answered")
    family_description: str
    demo: bool


class WindowSpec(BaseModel):
    num_frames: int
    window_seconds: float
    hop_seconds: float


class Timings(BaseModel):
    """Seconds. decode and faces overlap with inference (the stages run concurrently)."""

    upload: float = 0.0
    decode: float = 0.0
    faces: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    total: float = 0.0


class ClassifyResponse(BaseModel):
    request_id: str | None = None
    model: ModelRef
    mode: Mode
    window: WindowSpec
    video: VideoInfo
    persons: list[Person]
    timings: Timings
    options: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(
        default_factory=list,
        description="what a client should know about an answer that is not an error, e.g. that no face was found",
        examples=[["no face was found in 24 frames"]],
    )


class ModelsResponse(BaseModel):
    default: str | None
    models: list[dict[str, Any]] = Field(description="per model: name, version, variant, provider, demo, card")


class HealthResponse(BaseModel):
    status: Literal["ok", "ready"]
    models: list[str] = []


# ---------------------------------------------------------------------------------------------------------------------
# Server-side sources (POST /v1/sources: RTSP / HLS / HTTP URLs the server pulls)

SourceState = Literal["connecting", "live", "reconnecting", "ended", "failed"]


class SourceOptions(StreamOptions):
    """How a source is analysed (the stream options; `fps` is the rate frames are taken at) and read."""

    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP over TCP (through firewalls) or UDP")
    realtime: bool | None = Field(
        None,
        description="read no faster than real time (an HLS playlist or a file over HTTP is served as fast as the "
        "network allows; a camera delivers in real time); default: on for http(s), off for rtsp(s)",
    )


class SourceRequest(BaseModel):
    """Body of POST /v1/sources."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048, description="rtsp://, rtsps://, http:// or https:// (HLS playlist or a progressive file)",
        examples=["rtsp://10.0.0.12:554/stream1"],
    )  # fmt: skip
    name: str | None = Field(None, max_length=100, description="a label for people; the id names the source")
    model: str | None = Field(None, description="model name; default: the service's default model")
    options: SourceOptions = Field(default_factory=SourceOptions)


class SourceFrames(BaseModel):
    decoded: int = Field(0, description="frames FFmpeg decoded: every frame the camera sent")
    taken: int = Field(0, description="frames converted to RGB at the source's rate and handed to the face pipeline")
    replaced: int = Field(0, description="taken frames replaced by a newer one before the pipeline took them")


class SourceInfo(BaseModel):
    id: str
    name: str | None
    url: str = Field(description="the URL, without any password it held")
    model: str
    state: SourceState = Field(
        description="connecting (first attempt), live (frames arriving), reconnecting (dropped or refused; retrying "
        "with back-off), ended (the media ended or the source was stopped), failed (gave up: see last_error)"
    )
    state_since: float = Field(description="when the state began, Unix seconds")
    created_at: float
    attempts: int = Field(0, description="connection attempts failed in a row (0 while live)")
    reconnects: int = Field(0, description="connection attempts after the first, in all")
    last_error: str | None = None
    frames: SourceFrames = Field(default_factory=SourceFrames)
    stream: dict[str, Any] = Field(
        default_factory=dict, description="the live stream's counts: frames processed and dropped, windows, latency"
    )
    faces_detected: int = Field(0, description="faces found, summed over processed frames")
    results: int = Field(0, description="windows classified")
    options: SourceOptions
    notes: list[str] = Field(default_factory=list, examples=[["no face was found in 120 frames"]])


class SourceList(BaseModel):
    sources: list[SourceInfo]
    max_sources: int


class StreamResult(Prediction):
    """A `result` event of a stream or a source: one classified window of one person."""

    type: Literal["result"] = "result"
    track_id: int
    t_start: float = Field(description="seconds of stream time")
    t_end: float
    smoothed: Prediction | None = None
    box: list[float] | None = Field(None, description="the face box in the window's last frame, x1 y1 x2 y2 pixels")
    padded: bool = False
    seq: int | None = None
    frame_ts: float | None = Field(None, description="timestamp (ms) of the frame that completed the window")
    latency_ms: dict[str, float] = Field(default_factory=dict)


class TrackResults(BaseModel):
    track_id: int
    results: list[StreamResult] = Field(description="the newest last, at most the asked number")


class SourceResults(BaseModel):
    source: SourceInfo
    tracks: list[TrackResults]
