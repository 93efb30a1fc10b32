"""The model folder and the store: every variant written and measured, the card that describes them."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
from torch import nn

from s2d.card import CPU, ModelCard, SourceCheckpoint, VariantSpec, parse_card
from s2d.files import sha256_of
from s2d.machine import cpu_name, isa_summary
from s2d.models import S2DModel
from s2d.store import MIN_AGREEMENT, ModelStore, StoredModel
from s2d.training.export.fusion import fuse_attention
from s2d.training.export.graph import INPUT_NAME, OUTPUT_NAMES, export_onnx, onnx_parity
from s2d.training.export.measure import (
    EVAL_CLIPS,
    agreement,
    clips_per_second,
    onnx_session,
    ort_version,
    run_onnx,
    synthetic_clips,
    torch_logits,
)
from s2d.training.export.variants import (
    DEFAULT_VARIANTS,
    FUSE_ATTENTION,
    PLAIN_FILE,
    VARIANT_FILES,
    VARIANT_NOTES,
    VARIANT_PROVIDERS,
    convert_fp16,
    quantize_int8,
)

log = logging.getLogger(__name__)


def make_card(
    model: nn.Module,
    classes: list[str],
    variants: dict[str, VariantSpec],
    *,
    name: str,
    source: SourceCheckpoint,
    window_seconds: float = 2.0,
    version: str | None = None,
    licence: str = "unspecified: the licence of the checkpoint's weights and training data applies",
    demo: bool = False,
    **fields,
) -> ModelCard:
    """The card of an exported model; raises CardError if anything does not validate."""
    cfg = model.config
    if len(classes) != cfg.num_classes:
        raise ValueError(f"{len(classes)} class names for a {cfg.num_classes}-class model")
    card = {
        "name": name,
        "version": version or time.strftime("%Y.%m.%d"),
        "classes": list(classes),
        "num_frames": cfg.num_frames,
        "window_seconds": window_seconds,
        "input": {"name": INPUT_NAME, "height": cfg.img_size, "width": cfg.img_size},
        "outputs": list(OUTPUT_NAMES),
        "variants": variants,
        "demo": demo,
        "licence": licence,
        "source_checkpoint": source,
        "architecture": cfg.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
    }
    return parse_card(card, f"card of {name}")


def write_model_folder(
    model: nn.Module,
    folder: str | Path,
    classes: list[str],
    *,
    name: str,
    source: SourceCheckpoint,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    evaluation: np.ndarray | None = None,
    evaluation_name: str | None = None,
    calibration: np.ndarray | None = None,
    int8_method: str = "dynamic",
    timing: bool = True,
    **card_fields,
) -> ModelCard:
    """Export `model` into `folder`: one ONNX file per variant and card.json with each variant's measured figures.

    `evaluation`: uint8 clips [N, T, H, W, 3] on which every variant is compared with PyTorch fp32 (default: 32
    synthetic face clips), described in the card by `evaluation_name`; `calibration`: clips for static int8
    (default: 8 other synthetic clips).
    """
    unknown = set(variants) - set(VARIANT_FILES)
    if unknown or "fp32" not in variants:
        raise ValueError(f"variants must include fp32 and be among {sorted(VARIANT_FILES)}, got {list(variants)}")
    folder = Path(folder)
    cfg = model.config
    model = model.eval()
    # The exporter's graph; fp32 (and int8 from it) get fused attention when FUSE_ATTENTION is on, and fp16 converts
    # the plain graph (its converter does not know ONNX Runtime's contrib operators).
    plain_path = export_onnx(model, folder / PLAIN_FILE)
    fp32_path = folder / VARIANT_FILES["fp32"]
    if FUSE_ATTENTION:
        fuse_attention(plain_path, fp32_path)
    else:
        shutil.copyfile(plain_path, fp32_path)
    if evaluation is None:
        evaluation = synthetic_clips(EVAL_CLIPS, cfg.num_frames, cfg.img_size, seed=1)
        evaluation_name = f"{EVAL_CLIPS} synthetic face clips (training.export.synthetic_clips, seed 1)"
    evaluation_name = evaluation_name or f"{len(evaluation)} clips given by the caller"
    reference = torch_logits(model, evaluation)
    specs, measured_on = {}, f"{cpu_name()}, onnxruntime {ort_version()} CPUExecutionProvider, batch 1"
    for variant in variants:
        path = folder / VARIANT_FILES[variant]
        if variant == "fp16":
            convert_fp16(plain_path, path)
        elif variant == "int8":
            if calibration is None and int8_method == "static":
                calibration = synthetic_clips(8, cfg.num_frames, cfg.img_size, seed=2)
            quantize_int8(fp32_path, path, calibration, method=int8_method)
        session = onnx_session(path)  # fp16 runs on ORT CPU too (slowly): its agreement is measured here
        figures = agreement(reference, run_onnx(session, evaluation))
        if figures["top1_agreement"] < MIN_AGREEMENT:
            log.warning("%s variant agrees with fp32 on only %.1f%% of clips", variant, 100 * figures["top1_agreement"])
        timed = timing and CPU in VARIANT_PROVIDERS[variant]
        specs[variant] = VariantSpec(
            file=path.name,
            precision=variant,
            providers=VARIANT_PROVIDERS[variant],
            size_bytes=path.stat().st_size,
            sha256=sha256_of(path),
            clips_per_s=clips_per_second(session, evaluation[0]) if timed else None,
            measured_on=measured_on if timed else None,
            measured_isa=isa_summary() if timed else None,
            notes=VARIANT_NOTES.get(variant, "") + (f" int8 method: {int8_method}." if variant == "int8" else ""),
            **figures,
        )
    plain_path.unlink()
    parity = dict(card_fields.pop("parity", None) or {})
    parity["onnxruntime_cpu_fp32"] = onnx_parity(model, fp32_path)
    parity["variant_agreement_clips"] = evaluation_name
    card = make_card(model, classes, specs, name=name, source=source, parity=parity, **card_fields)
    card.save(folder / "card.json")
    return card


def load_for_export(checkpoint: str | Path, landmark: str | Path | None = None) -> tuple[S2DModel, dict]:
    """Our .safetensors checkpoint (metadata with class names) or an official .pth (+ MobileFaceNet weights)."""
    from s2d.models import get_config
    from s2d.models.checkpoint import load_any, load_checkpoint

    if str(checkpoint).endswith(".safetensors"):
        return load_checkpoint(checkpoint)
    return load_any(checkpoint, get_config("s2d_base"), landmark), {}


def export_to_store(
    model_or_checkpoint: nn.Module | str | Path,
    store_root: str | Path | None,
    name: str,
    classes: list[str] | None = None,
    *,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    demo: bool = False,
    window_seconds: float = 2.0,
    evaluation: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
    landmark: str | Path | None = None,
    source: SourceCheckpoint | None = None,
    **card_fields,
) -> StoredModel:
    """Export a model (or a checkpoint file) into `<store_root>/<name>/`, replacing any previous model of that name
    atomically. Class names default to the checkpoint's metadata. Extra keyword arguments go to the card
    (`licence`, `version`, `description`, `training`, `metrics`, ...) or to `write_model_folder` (`int8_method`,
    `timing`)."""
    if isinstance(model_or_checkpoint, nn.Module):
        model, meta = model_or_checkpoint, {}
        source = source or SourceCheckpoint(path="<in memory>", sha256=None)
    else:
        model, meta = load_for_export(model_or_checkpoint, landmark)
        path = Path(model_or_checkpoint)
        source = source or SourceCheckpoint(path=path.name, sha256=sha256_of(path))
    classes = list(classes or meta.get("classes") or [])
    if not classes:
        raise ValueError("the checkpoint does not name its classes: pass them (--classes a,b,c or --dataset NAME)")
    store = ModelStore(store_root)
    with store.staging(name) as folder:
        write_model_folder(
            model,
            folder,
            classes,
            name=name,
            source=source,
            variants=variants,
            evaluation=evaluation,
            calibration=calibration,
            demo=demo,
            window_seconds=window_seconds,
            **card_fields,
        )
    return store.get(name)
