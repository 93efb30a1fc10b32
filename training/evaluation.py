"""`s2d eval CHECKPOINT --data ...`: evaluate a saved model on any split, on demand (multi-view, UAR/WAR, report)."""

from __future__ import annotations

from pathlib import Path

from s2d.models import get_config
from s2d.models.checkpoint import load_any

from .config import DataSection, ModelSection, TrainConfig
from .distributed import cleanup, init_distributed
from .engine import StepSettings, evaluate
from .loaders import build_eval_loader, load_split
from .metrics import summarize, write_report


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: DataSection,
    split: str = "test",
    out_dir: str | Path | None = None,
    precision: str = "fp32",
    landmark: str | None = None,
    batch_size: int = 8,
) -> dict:
    dist = init_distributed()
    try:
        model = load_any(checkpoint, get_config("s2d_base"), landmark).to(dist.device)
        cfg = model.config
        train_cfg = TrainConfig(
            stage="video" if cfg.temporal else "image",
            model=ModelSection(name=cfg.name, num_classes=cfg.num_classes, num_frames=cfg.num_frames),
            data=data,
        )
        index = load_split(data, split)
        if len(index.classes) != cfg.num_classes:
            raise ValueError(f"{checkpoint} has {cfg.num_classes} classes but {data.dataset} has {len(index.classes)}")
        settings = StepSettings(dist.device, precision)
        matrix = evaluate(model, build_eval_loader(train_cfg, index, dist, batch_size), cfg.num_classes, settings)
        summary = summarize(matrix, list(index.classes))
        summary.update(checkpoint=str(checkpoint), split=split, data=data.model_dump(mode="json"))
        if out_dir is not None and dist.is_main:
            write_report(summary, out_dir, f"eval_{data.dataset}_{split}")
        return summary
    finally:
        cleanup()
