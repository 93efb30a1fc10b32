"""Experiment configuration: YAML files under version control (configs/), each value overridable on the command line.

A file may name a `base:` file (relative to itself) whose values it extends, so the paper's 30-odd experiments are
small diffs of a few recipes. Overrides are `section.key=value` with YAML-typed values, e.g. `optim.lr=2e-5`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelSection:
    name: str = "s2d_base"
    num_classes: int = 7
    num_frames: int = 16
    depth: int | None = None  # fewer blocks than the variant (smoke runs, the demo model); None keeps the variant's
    head_dropout: float = 0.5
    init: str | None = None  # MAE / static-stage checkpoint (.pth) or our .safetensors
    landmark: str | None = None  # MobileFaceNet checkpoint; without it the landmark network keeps random weights
    train_backbone: bool = False  # static stage may fine-tune the whole ViT; the video stage keeps it frozen
    disable_tma: bool = False  # ablation: no TMAs and a zero, frozen temporal embedding (frames become a bag)
    grad_checkpointing: bool = False


@dataclass
class DataSection:
    dataset: str = "dfew"
    root: str = "data/DFEW"
    fold: int | None = 1
    val_fraction: float = 0.1  # carved from the training split (seeded, stratified); the test split never selects
    on_error: str = "skip"  # unreadable frames / bad rows: "skip" (counted, reported) or "fail"
    num_workers: int = 4
    test_views: int = 2  # temporal views: first and last window
    test_crops: int = 2
    oversample: bool = False  # class-balanced sampler ("with oversampling" results)
    img_size: int = 224


@dataclass
class AugmentSection:
    randaugment: bool = True
    erasing: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1


@dataclass
class OptimSection:
    lr: float = 1e-5  # for a total batch of 8; scaled by total batch / 8
    min_lr: float = 1e-8  # scaled by total batch / 256, as released
    warmup_lr: float = 1e-7  # scaled by total batch / 256, as released
    batch_size: int = 8  # per process
    accum_steps: int = 1
    epochs: int = 100
    warmup_epochs: int = 2
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None
    lr_scales: dict[str, float] = field(default_factory=dict)  # name fragment -> lr multiple, e.g. {head: 0.1}
    precision: str = "fp16"  # fp16 (CUDA, with loss scaling), bf16 or fp32


@dataclass
class SDLSection:
    enabled: bool = False
    mode: str = "fixed"
    size: int = 16
    top_k: int = 2
    start_epoch: int = 21
    update_freq: int = 40


@dataclass
class TrainConfig:
    experiment: str = "experiment"
    stage: str = "video"  # "video" (dynamic stage) or "image" (static stage)
    output_dir: str = "runs/experiment"
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1
    log_every: int = 20
    max_steps_per_epoch: int | None = None  # smoke runs
    stop_after_epoch: int | None = None  # end the process after this epoch (time-limited jobs); rerun to resume
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    sdl: SDLSection = field(default_factory=SDLSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    return _build(TrainConfig, values, "")


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(hints)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}{name} must be a mapping")
            kwargs[name] = _build(kind, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, where + name)
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """YAML reads '2e-5' as a string and '1' as an int: convert to the field's declared type, or say what is wrong."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"config key {key} cannot be empty")
    target = next(t for t in options if t is not type(None))
    try:
        if typing.get_origin(target) is tuple:
            return tuple(float(v) for v in value)
        if typing.get_origin(target) is dict:
            return {str(k): float(v) for k, v in value.items()}
        if target is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if target is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return target(value)
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"config key {key}: {value!r} is not a valid {getattr(target, '__name__', target)}") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    values = read_yaml_chain(path) if path else {}
    for text in overrides:
        values = _merge(values, parse_override(text))
    return from_dict(values)
