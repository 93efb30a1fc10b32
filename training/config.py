"""Experiment configuration: YAML files under version control (configs/), each value overridable on the command line.

A file may name a `base:` file (relative to itself) whose values it extends, so the paper's 30-odd experiments are
small diffs of a few recipes. Overrides are `section.key=value` with YAML-typed values, e.g. `optim.lr=2e-5`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from .sdl import SDLConfig


class _Section(BaseModel):
    # Unknown keys are refused: a typo in a recipe is an error, not a silently ignored value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    name: str = "s2d_base"
    num_classes: int | None = Field(None, ge=1)  # checked against the dataset's classes when given
    num_frames: int = Field(16, ge=1)
    depth: int | None = Field(None, ge=1)  # fewer blocks than the variant (smoke runs, the demo model)
    head_dropout: float = Field(0.5, ge=0, lt=1)
    init: str | None = None  # MAE / static-stage checkpoint (.pth) or our .safetensors
    landmark: str | None = None  # MobileFaceNet checkpoint; without it the landmark network keeps random weights
    train_backbone: StrictBool = False  # static stage may fine-tune the whole ViT; the video stage keeps it frozen
    disable_tma: StrictBool = False  # ablation: no TMAs and a zero, frozen temporal embedding (frames become a bag)
    grad_checkpointing: StrictBool = False


class DataSection(_Section):
    dataset: str = "dfew"
    root: str = "data/DFEW"
    fold: int | None = 1
    val_fraction: float = Field(0.1, ge=0, lt=1)  # carved from the training split (seeded, stratified)
    on_error: Literal["skip", "fail"] = "skip"  # unreadable frames / bad rows: skipped (counted, reported) or fatal
    num_workers: int = Field(4, ge=0)
    test_views: int = Field(2, ge=1)  # temporal views: first and last window
    test_crops: int = Field(2, ge=1)
    oversample: StrictBool = False  # class-balanced sampler ("with oversampling" results)
    img_size: int = Field(224, ge=16)


class AugmentSection(_Section):
    randaugment: StrictBool = True
    erasing: float = Field(0.25, ge=0, le=1)
    mixup: float = Field(0.8, ge=0)
    cutmix: float = Field(1.0, ge=0)
    switch_prob: float = Field(0.5, ge=0, le=1)
    smoothing: float = Field(0.1, ge=0, lt=1)


class OptimSection(_Section):
    lr: float = Field(1e-5, gt=0)  # for a total batch of 8; scaled by total batch / 8
    min_lr: float = Field(1e-8, ge=0)  # scaled by total batch / 256, as released
    warmup_lr: float = Field(1e-7, ge=0)  # scaled by total batch / 256, as released
    batch_size: int = Field(8, ge=1)  # per process
    accum_steps: int = Field(1, ge=1)
    epochs: int = Field(100, ge=1)
    warmup_epochs: int = Field(2, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = Field(None, gt=0)
    lr_scales: dict[str, float] = Field(default_factory=dict)  # name fragment -> lr multiple, e.g. {head: 0.1}
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"  # fp16: CUDA with loss scaling


class SDLSection(SDLConfig):
    """SDL's own settings (training.sdl.SDLConfig) and whether the recipe uses it."""

    enabled: StrictBool = False

    def sdl_config(self) -> SDLConfig:
        return SDLConfig(**self.model_dump(exclude={"enabled"}))


class TrainConfig(_Section):
    experiment: str = "experiment"
    stage: Literal["video", "image"] = "video"  # dynamic (video) or static (image) stage
    output_dir: str = "runs/experiment"
    seed: int = 0
    device: str = "auto"
    eval_every: int = Field(1, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # smoke runs
    stop_after_epoch: int | None = Field(None, ge=0)  # end the process after this epoch (time-limited jobs)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    sdl: SDLSection = Field(default_factory=SDLSection)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def read_yaml_chain(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = values.pop("base", None)
    return _merge(read_yaml_chain(path.parent / base), values) if base else values


def parse_override(text: str) -> dict:
    """'optim.lr=2e-5' -> {'optim': {'lr': 2e-05}}."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    value: Any = yaml.safe_load(raw) if raw else None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def from_dict(values: dict) -> TrainConfig:
    """Validate a recipe; the error names the first bad key (`section.key`) and why."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as err:
        raise ValueError(_describe(err)) from None


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<config>"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        section = TrainConfig
        for part in first["loc"][:-1]:
            section = section.model_fields[part].annotation
        return f"unknown config key {key}{more}; known: {', '.join(section.model_fields)}"
    return f"config key {key}: {first['msg']} (got {first.get('input')!r}){more}"


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    values = read_yaml_chain(path) if path else {}
    for text in overrides:
        values = _merge(values, parse_override(text))
    return from_dict(values)
