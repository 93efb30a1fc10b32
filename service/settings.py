"""Service settings: pydantic-settings, from `S2D_*` environment variables and an optional TOML or .env file.

Precedence (highest first): explicit keyword arguments, environment variables, the settings file named by
`S2D_SETTINGS_FILE` (or passed to `load_settings`), the defaults below. List values in the environment are JSON,
e.g. `S2D_PROVIDERS='["CUDAExecutionProvider", "CPUExecutionProvider"]'`; a comma-separated string works too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SETTINGS_FILE_ENV = "S2D_SETTINGS_FILE"

# Short names accepted for ONNX Runtime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def _default_store() -> Path:
    from s2d.store import default_store_dir

    return default_store_dir()


class Settings(BaseSettings):
    """Everything the service reads at start-up. Every field is `S2D_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="S2D_", extra="forbid", validate_default=True)

    # Models
    model_store: Path = Field(default_factory=_default_store, description="model store root (one folder per model)")
    models: Annotated[list[str] | None, NoDecode] = Field(
        None, description="models to load; default: every model in the store"
    )
    default_model: str | None = Field(None, description="model used when a request names none; default: the store's")
    variant: str = Field(
        "auto",
        description="ONNX variant (fp32, fp16, int8, ...) or auto: the store's choice (engine=triton: the "
        "repository's; a pinned one must be it)",
    )

    # Inference engine
    engine: Literal["auto", "onnxruntime", "openvino", "triton"] = Field(
        "auto",
        description="auto: the fastest in-process engine and variant that meets the agreement bar at warm-up "
        "(ONNX Runtime's variants, OpenVINO at openvino_precision; on GPU providers, ONNX Runtime); onnxruntime or "
        "openvino: that engine in this process; triton: the Triton Inference Server at triton_url (this process "
        "keeps decoding, faces, tracking and streams)",
    )
    openvino_precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="OpenVINO's inference precision; auto: bf16 where the CPU has AMX, fp32 without a bf16 unit, "
        "both timed at warm-up with AVX-512 BF16 but no AMX (fp32 when untimed); pinning it with engine=auto pins "
        "the OpenVINO engine",
    )
    openvino_cache_dir: Path | None = Field(
        None, description="OpenVINO's compiled-model cache (a restart loads it); default: ~/.cache/s2d/openvino"
    )
    triton_url: str | None = Field(None, description="Triton's gRPC endpoint, host:port (engine=triton)")
    triton_model_version: str = Field(
        "", pattern=r"^[0-9]*$", description="Triton model version; empty: the server's version policy picks"
    )
    triton_timeout_s: float = Field(30.0, gt=0, description="deadline for one inference call to Triton: 504 beyond")
    triton_ready_timeout_s: float = Field(
        60.0, ge=0, description="at start-up, how long to wait for Triton and each model to be ready (0: ask once)"
    )
    triton_max_in_flight: int = Field(
        0,
        ge=0,
        description="inference calls one model may have on Triton at once (0: twice the instances its config "
        "declares, so each instance has the next batch waiting while it runs one)",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        ["CPUExecutionProvider"], description="ONNX Runtime providers in priority order (cpu, cuda, tensorrt)"
    )
    device_id: int = Field(0, ge=0, description="GPU index for CUDA / TensorRT")
    intra_op_threads: int = Field(
        0, ge=0, description="inference threads per model on CPU (ONNX Runtime, OpenVINO); 0 = one per core"
    )
    max_batch: int = Field(8, ge=1, le=256, description="largest batch of clips one inference call takes")
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="how long the first clip of a batch waits for more")
    queue_size: int = Field(64, ge=1, description="clips waiting for inference per model; beyond it: 429")
    max_active_requests: int = Field(
        32, ge=1, description="requests worked on at once (their upload received); beyond it: 429"
    )
    request_timeout_s: float = Field(120.0, gt=0, description="deadline for one request, upload excluded: 504")
    warmup: bool = Field(True, description="run every batch size once at start-up before /readyz says ready")
    engine_trial: bool | None = Field(
        None,
        description="on CPU, time the in-process engine candidates (ONNX Runtime's variants, OpenVINO) at start-up "
        "and serve the fastest that agrees; off: the card's variant on ONNX Runtime; default: with warmup "
        "(`s2d analyze` turns it on without warmup)",
    )
    # 20 s: with uvicorn's last 5 s after it, inside the 30 s that compose (stop_grace_period) and Kubernetes
    # (terminationGracePeriodSeconds) wait before SIGKILL.
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="on SIGTERM, how long requests in flight may finish; then 503 shutting_down"
    )
    pipeline_threads: int = Field(2, ge=1, description="threads decoding video and finding faces")

    # Uploads and media limits
    max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1, description="largest upload (413 beyond)")
    max_video_seconds: float = Field(600.0, gt=0, description="longest video (413 beyond)")
    max_pixels: int = Field(3840 * 2160, ge=1, description="largest frame, width x height (413 beyond)")
    upload_dir: Path | None = Field(None, description="folder for temporary upload files; default: the system's")
    # Receiving uploads: a slow or stalled client is cut off (408) and never holds a request slot (uvicorn has no
    # body-read timeout of its own).
    max_active_uploads: int = Field(256, ge=1, description="uploads being received at once; beyond it: 429")
    upload_timeout_s: float = Field(600.0, gt=0, description="deadline for receiving one upload: 408")
    upload_min_bytes_per_s: float = Field(
        8192.0, ge=0, description="after upload_grace_s, the upload's average rate must stay above this (0: off): 408"
    )
    upload_grace_s: float = Field(10.0, ge=0, description="seconds an upload may take before the rate is checked")

    # Windows: clients may change the window and hop within these bounds
    min_hop_seconds: float = Field(0.25, gt=0, description="smallest hop between windows a client may ask for")
    window_scale_range: tuple[float, float] = Field(
        (0.5, 2.0), description="allowed window_seconds as a multiple of the model card's window_seconds"
    )

    # Faces
    detector: str | None = Field(None, description="face detector backend; default: the face pipeline's")
    detect_every: int = Field(5, ge=1, description="full face detection every n-th frame; tracked in between")
    insightface_root: Path | None = Field(
        None, description="folder of insightface model packs (detector=insightface); default: ~/.insightface/models"
    )

    # Live streams (WebSocket /v1/stream; protocol and back-pressure: service/streams.py)
    stream_max_streams: int = Field(64, ge=1, description="streams open at once; beyond it: close 1013")
    stream_detect_size_ratio: float = Field(
        0.7, ge=0, le=1, description="stream detections seek faces >= this share of the smallest tracked one; 0: all"
    )
    stream_full_detect_every: int = Field(3, ge=1, description="every n-th stream detection searches every face size")
    stream_detect_interval_s: float = Field(
        1.0, ge=0, description="seconds between a live stream's face detections, at its frame rate; 0: detect_every"
    )
    stream_decode_only_used: bool = Field(
        True, description="a live stream decodes and refines only the frames its detections and windows use"
    )
    stream_idle_timeout_s: float = Field(30.0, gt=0, description="close a stream silent for this long (1001)")
    stream_heartbeat_s: float = Field(10.0, gt=0, description="WebSocket ping interval; no pong in as long: closed")
    stream_max_frame_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="largest encoded frame (image bytes)")
    stream_max_pixels: int = Field(1920 * 1080, ge=1024, description="largest frame, width x height")
    stream_max_fps: float = Field(30.0, gt=0, le=120, description="frames per second a stream may send")
    stream_frame_buffer: int = Field(2, ge=1, le=64, description="frames waiting per stream; beyond: oldest dropped")
    stream_send_queue: int = Field(64, ge=4, description="events waiting to be sent per stream (bounded)")
    stream_send_timeout_s: float = Field(10.0, gt=0, description="a client not reading for this long is closed")
    stream_window_deadline_s: float = Field(5.0, gt=0, description="a window not classified by then is dropped")

    # Server-side sources (POST /v1/sources: the server opens RTSP / HLS / HTTP URLs; service/sources). Off until an
    # operator turns them on and names the networks they may reach: the service then makes outbound connections.
    sources_enabled: bool = Field(False, description="allow POST /v1/sources (the server opens URLs it is given)")
    sources_allow: Annotated[list[str], NoDecode] = Field(
        [], description="networks (CIDR), addresses and host names sources may open; every address a URL's host "
        "resolves to must be in one (a host name here stands for its addresses); empty: none",
    )  # fmt: skip
    sources_max: int = Field(8, ge=1, description="sources running at once; beyond: 409 too_many_sources")
    sources_max_pixels: int = Field(1920 * 1080, ge=1024, description="largest source frame, width x height")
    sources_max_fps: float = Field(15.0, gt=0, le=60, description="most frames per second a source takes")
    sources_open_timeout_s: float = Field(10.0, gt=0, description="connecting and reading a stream's headers")
    sources_read_timeout_s: float = Field(10.0, gt=0, description="no data for this long: the connection dropped")
    sources_backoff_s: tuple[float, float] = Field(
        (1.0, 30.0), description="wait before reconnecting: the first, doubling up to the second"
    )
    sources_max_attempts: int = Field(10, ge=1, description="failed connections in a row before a source fails")
    sources_results_per_track: int = Field(50, ge=1, le=10_000, description="results kept per track (REST)")
    sources_results_tracks: int = Field(32, ge=1, description="tracks whose results are kept, the most recent")

    # Fault injection, for tests and drills (0 = off): slowness forced deterministically, never hoped for.
    fault_inference_delay_ms: float = Field(0.0, ge=0, description="extra time every inference call takes")
    fault_frame_delay_ms: float = Field(0.0, ge=0, description="extra time every live-stream frame takes to process")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(None, description="when set, every route but /healthz and /readyz needs it")
    # Who may do what (issue 30): named API keys with scopes and limits (service/auth.py), and the resolver that
    # server-side sources' host names go to (service/sources/policy.py).
    api_keys_file: Path | None = Field(
        None, description="TOML file of named API keys (sha256 hashes, scopes, limits; `s2d keys add`); reloaded on "
        "SIGHUP and when it changes",
    )  # fmt: skip
    sources_dns_server: str | None = Field(
        None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$",
        description="DNS server (address:port) that resolves source host names; default: the system's resolver",
    )  # fmt: skip
    cors_origins: Annotated[list[str], NoDecode] = Field([], description="origins allowed by CORS; empty = CORS off")
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("providers", "cors_origins", "models", "sources_allow", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # JSON list or comma-separated string (the environment gives strings; NoDecode leaves them to us).
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one provider is needed")
        return [PROVIDER_ALIASES.get(p.lower(), p) for p in value]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        low, high = self.window_scale_range
        if not 0 < low <= 1 <= high:
            raise ValueError(f"window_scale_range must satisfy 0 < low <= 1 <= high, got {self.window_scale_range}")
        first, most = self.sources_backoff_s
        if not 0 < first <= most:
            raise ValueError(f"sources_backoff_s must satisfy 0 < first <= most, got {self.sources_backoff_s}")
        if self.engine == "triton" and not self.triton_url:
            raise ValueError("engine 'triton' needs triton_url (S2D_TRITON_URL=host:port, Triton's gRPC port)")
        if self.openvino_precision != "auto" and self.engine not in ("auto", "openvino"):
            raise ValueError(f"openvino_precision is pinned but engine is {self.engine!r}: pin engine openvino")
        if self.openvino_precision != "auto" and self.variant != "auto" and self.engine == "auto":
            raise ValueError("variant (ONNX Runtime's) and openvino_precision (OpenVINO's) both pinned: pin one")
        if self.engine == "openvino" and self.variant not in ("auto", "fp32"):
            raise ValueError(f"engine openvino reads the fp32 ONNX file, not variant {self.variant!r}: pin its "
                             "precision with openvino_precision instead")  # fmt: skip
        if self.triton_url and "://" in self.triton_url:
            raise ValueError(f"triton_url is host:port without a scheme (tritonclient's form), got {self.triton_url!r}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(SETTINGS_FILE_ENV)
        if path:
            sources.append(_file_source(settings_cls, Path(path)))
        return tuple(sources)


@dataclass(frozen=True)
class Limits:
    """What clients may ask for and how faces are found: the part of the settings that REST uploads, live streams,
    sources and `s2d predict` share. Built once from the settings (`AppState.start`, `VideoAnalyser`)."""

    max_video_seconds: float = 600.0
    max_pixels: int = 3840 * 2160
    min_hop_seconds: float = 0.25
    window_scale_range: tuple[float, float] = (0.5, 2.0)
    detector: str | None = None
    detect_every: int = 5
    insightface_root: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    from pydantic_settings import DotEnvSettingsSource

    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} (from {SETTINGS_FILE_ENV}) does not exist")
    if path.suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    return DotEnvSettingsSource(settings_cls, env_file=path, env_prefix="S2D_")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, `path` (a .toml file with plain field names, or a .env file with S2D_ names)
    and keyword overrides."""
    if path is None:
        return Settings(**overrides)
    previous = os.environ.get(SETTINGS_FILE_ENV)
    os.environ[SETTINGS_FILE_ENV] = str(path)
    try:
        return Settings(**overrides)
    finally:
        if previous is None:
            os.environ.pop(SETTINGS_FILE_ENV, None)
        else:
            os.environ[SETTINGS_FILE_ENV] = previous
