"""Reading and writing weights: official S2D checkpoints, initialisation checkpoints, and our own format.

* Official S2D checkpoints are pickles ({'model', 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace}).
  They are read with torch's weights-only unpickler plus an allow-list (argparse.Namespace), so a file that would
  run other code is refused instead of executed.
* Initialisation checkpoints (MAE ViT, static-stage model) use 'model' or 'model_state_dict', call the final norm
  `norm.*`, and may carry landmark-network keys; they load non-strictly with a report of what was skipped.
* Our own checkpoints are one safetensors file: tensors of the whole S2DModel (`s2d.*`, `landmark.*`) and, in the
  header metadata, the JSON model config plus free-form JSON metadata (class names, provenance). No pickle.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import S2DConfig
from .s2d import S2DModel, S2DNet

# The only non-tensor Python objects official checkpoints need.
ALLOWED_GLOBALS = [argparse.Namespace]
FORMAT_KEY = "s2d_format"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason in words."""


@dataclass
class LoadReport:
    """What a non-strict load did: keys the model expected but did not get, keys the file had but were not used."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # removed on purpose before loading (landmark, fresh head, ...)

    def summary(self) -> str:
        return f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, dropped {len(self.dropped)}"


def read_pickle_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load without executing arbitrary code: tensors, containers, primitives and argparse.Namespace only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if not found:
            raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {err}") from None
        raise CheckpointError(
            f"refusing to load {path}: it needs the Python object {found.group(1)}, which is not on the allow-list "
            f"({', '.join(g.__module__ + '.' + g.__qualname__ for g in ALLOWED_GLOBALS)}). Loading it would run code "
            "from the file; re-save its state dict from a trusted environment instead."
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {err}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, expected a dict")
    return payload


def _state_dict_from(payload: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> dict[str, torch.Tensor]:
    for key in keys:
        if key in payload and isinstance(payload[key], dict):
            return payload[key]
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload  # a bare state dict
    raise CheckpointError(f"{path} has none of the keys {list(keys)} (found: {sorted(payload)[:10]})")


def load_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An official S2D checkpoint -> (the `model` state dict, its training args as a plain dict)."""
    payload = read_pickle_checkpoint(path)
    state_dict = _state_dict_from(payload, ("model",), path)
    args = payload.get("args")
    return state_dict, (vars(args) if isinstance(args, argparse.Namespace) else {})


def load_mobilefacenet_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The landmark network's original checkpoint ({'state_dict': ...}) -> its state dict."""
    return _state_dict_from(read_pickle_checkpoint(path), ("state_dict",), path)


def infer_config(state_dict: dict[str, torch.Tensor], base: S2DConfig) -> S2DConfig:
    """Classes, frames and width/depth read off an official-style state dict, the rest taken from `base`."""
    try:
        embed_dim = state_dict["cls_token"].shape[-1]
        num_classes = state_dict["head.fc_cls.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not an S2D state dict: no {err.args[0]!r}") from None
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    temporal = "temporal_embedding" in state_dict
    num_frames = state_dict["temporal_embedding"].shape[1] if temporal else 1
    return base.replace(
        embed_dim=embed_dim, depth=depth, num_classes=num_classes, temporal=temporal, num_frames=num_frames
    )


def model_from_official(
    path: str | Path, base: S2DConfig, landmark_state_dict: dict[str, torch.Tensor] | None = None
) -> tuple[S2DModel, dict[str, Any]]:
    """Build an S2DModel from an official checkpoint; the S2D weights load strictly, with no renaming."""
    state_dict, args = load_official_checkpoint(path)
    config = infer_config(state_dict, base)
    model = S2DModel(config)
    try:
        model.s2d.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match {config.name}: {err}") from None
    if landmark_state_dict is not None:
        model.landmark.load_mobilefacenet_state_dict(landmark_state_dict)
    model.s2d.freeze_backbone()
    return model.eval(), args


def load_init_checkpoint(net: S2DNet, source: str | Path | dict[str, Any], keep_head: bool = False) -> LoadReport:
    """Initialise from an MAE ViT or static-stage checkpoint (non-strict, reported).

    Renames `norm.*` to `ln_post.*`, drops landmark-network keys, and drops tensors whose shape does not fit this
    network. The head starts fresh unless `keep_head` (the video stage trains a new head on the static weights).
    """
    payload = read_pickle_checkpoint(source) if isinstance(source, (str, Path)) else source
    state_dict = dict(_state_dict_from(payload, ("model", "model_state_dict"), str(source)[:80]))
    report = LoadReport()
    for key in list(state_dict):
        if key.startswith("norm."):
            state_dict["ln_post." + key.removeprefix("norm.")] = state_dict.pop(key)
    own = net.state_dict()
    for key in list(state_dict):
        fresh_head = key.startswith("head.") and not keep_head
        misfit = key in own and own[key].shape != state_dict[key].shape
        if "landmark" in key or fresh_head or misfit:
            report.dropped.append(key)
            del state_dict[key]
    result = net.load_state_dict(state_dict, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    return report


def save_checkpoint(model: S2DModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the whole model (S2D + landmark network) and its config to one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    header = {
        FORMAT_KEY: FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "metadata": json.dumps(metadata or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint under the real name
    return path


def load_checkpoint(path: str | Path) -> tuple[S2DModel, dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint -> (model in eval mode, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read {path} as safetensors: {err}") from None
    if header.get(FORMAT_KEY) != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an S2D checkpoint (no {FORMAT_KEY}={FORMAT_VERSION} in its header)")
    model = S2DModel(S2DConfig.from_dict(json.loads(header["config"])))
    model.load_state_dict(tensors, strict=True)
    model.s2d.freeze_backbone()
    return model.eval(), json.loads(header.get("metadata", "{}"))


def load_any(path: str | Path, base: S2DConfig, landmark_path: str | Path | None = None) -> S2DModel:
    """Our safetensors checkpoint, or an official pickle checkpoint (plus optional landmark weights)."""
    if Path(path).suffix == ".safetensors":
        return load_checkpoint(path)[0]
    landmark = load_mobilefacenet_checkpoint(landmark_path) if landmark_path else None
    return model_from_official(path, base, landmark)[0]
