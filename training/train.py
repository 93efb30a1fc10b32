"""`s2d train CONFIG [overrides]`: the two-stage S2D recipe (static images, then video) in one driver.

Reads like MAE's main_finetune.py: build data, model, optimiser; resume if a checkpoint exists; run epochs; keep the
best model by validation UAR (validation carved from the training split); evaluate the test split once at the end.
Launch several processes with torchrun for DDP (NCCL on GPU, gloo on CPU).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from s2d.models import create_model
from s2d.models.checkpoint import load_checkpoint, load_init_checkpoint, load_mobilefacenet_checkpoint, save_checkpoint

from .config import TrainConfig
from .data.augment import Mixup
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .engine import StepSettings, evaluate, train_one_epoch
from .loaders import build_eval_loader, build_splits, build_train_loader
from .losses import SoftTargetCrossEntropy
from .metrics import summarize, write_report
from .optim import CosineSchedule, build_optimizer, scaled_lr
from .sdl import EmotionAnchors

log = logging.getLogger("s2d.train")
RESUME_FILE = "last.pt"
BEST_FILE = "best.safetensors"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int):
    """The image or video model, initialised from the configured checkpoints, with the right parameters trainable."""
    m = cfg.model
    if m.num_classes is not None and m.num_classes != num_classes:
        raise ValueError(f"the recipe says model.num_classes={m.num_classes}, the dataset has {num_classes} classes")
    image = cfg.stage == "image"
    overrides = {"num_classes": num_classes, "head_dropout": m.head_dropout}
    if not image:
        overrides["num_frames"] = m.num_frames
    if m.depth is not None:
        overrides["depth"] = m.depth
    model = create_model(m.name, image=image, img_size=cfg.data.img_size, **overrides)
    if m.init:
        ours = m.init.endswith(".safetensors")
        source = {"model": load_checkpoint(m.init)[0].s2d.state_dict()} if ours else m.init
        report = load_init_checkpoint(model.s2d, source)
        log.info("initialised from %s: %s (missing: %s)", m.init, report.summary(), report.missing[:8])
    if m.landmark:
        model.landmark.load_mobilefacenet_state_dict(load_mobilefacenet_checkpoint(m.landmark))
    else:
        log.warning("no landmark checkpoint configured: the landmark network keeps random (frozen) weights")
    if m.disable_tma:
        model.s2d.disable_temporal_modelling()
    if m.train_backbone:
        model.s2d.unfreeze_backbone()
    model.set_grad_checkpointing(m.grad_checkpointing)
    return model


def build_criterion(cfg: TrainConfig, mixup: Mixup | None) -> nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()  # mixup already produced smoothed soft targets
    return nn.CrossEntropyLoss(label_smoothing=cfg.augment.smoothing)


def build_mixup(cfg: TrainConfig, num_classes: int, rng: np.random.Generator) -> Mixup | None:
    a = cfg.augment
    if a.mixup <= 0 and a.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=a.mixup,
        cutmix_alpha=a.cutmix,
        switch_prob=a.switch_prob,
        label_smoothing=a.smoothing,
        num_classes=num_classes,
        rng=rng,
    )


class TrainingState:
    """Everything a resumed run needs, saved atomically at the end of every epoch (torch.save; read weights-only)."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, **parts) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(parts, tmp)
        tmp.replace(self.path)

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)


def rng_state(mix_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "mixup": mix_rng.bit_generator.state}


def restore_rng(state: dict, mix_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    mix_rng.bit_generator.state = state["mixup"]


def run(cfg: TrainConfig) -> dict:
    """Train, select on validation, test once. Returns the final summary (test metrics of the best model)."""
    dist = init_distributed(cfg.device)
    try:
        return _run(cfg, dist)
    finally:
        cleanup()


def _run(cfg: TrainConfig, dist: DistInfo) -> dict:
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    splits = build_splits(cfg)
    classes = splits.classes
    model = build_model(cfg, len(classes)).to(dist.device)
    net: nn.Module = model
    if dist.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)

    o = cfg.optim
    total_batch = o.batch_size * o.accum_steps * dist.world_size
    train_loader, sampler = build_train_loader(cfg, splits.train, dist)
    steps_per_epoch = len(train_loader) // o.accum_steps
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"the training split ({len(splits.train)} samples) is smaller than one batch of {total_batch}")
    optimizer = build_optimizer(model, scaled_lr(o.lr, total_batch), o.weight_decay, o.betas, o.lr_scales)
    schedule = CosineSchedule(
        optimizer,
        total_steps=o.epochs * steps_per_epoch,
        warmup_steps=o.warmup_epochs * steps_per_epoch,
        base_lr=scaled_lr(o.lr, total_batch),
        min_lr=o.min_lr * total_batch / 256,
        warmup_lr=o.warmup_lr * total_batch / 256,
    )
    use_scaler = o.precision == "fp16" and dist.device.type == "cuda"
    precision = o.precision if (o.precision != "fp16" or dist.device.type == "cuda") else "bf16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    settings = StepSettings(dist.device, precision, o.accum_steps, o.clip_grad, steps_per_epoch)
    mix_rng = np.random.default_rng(cfg.seed)
    mixup = build_mixup(cfg, len(classes), mix_rng)
    criterion = build_criterion(cfg, mixup)
    anchors = None
    if cfg.sdl.enabled:
        anchors = EmotionAnchors(len(classes), model.config.embed_dim, cfg.sdl.sdl_config()).to(dist.device)
    val_loader = build_eval_loader(cfg, splits.val, dist)

    state_file = TrainingState(out / RESUME_FILE)
    start_epoch, best = 0, {"uar": -1.0, "war": -1.0, "epoch": -1}
    saved = state_file.load()
    if saved is not None:
        model.s2d.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        if anchors is not None and saved.get("anchors"):
            anchors.load_state_dict(saved["anchors"])
        restore_rng(saved["rng"], mix_rng)
        start_epoch, best = saved["epoch"] + 1, saved["best"]
        log.info("resumed from %s at epoch %d", state_file.path, start_epoch)

    logger = MetricsLogger(out, dist.is_main)
    for epoch in range(start_epoch, o.epochs):
        sampler.set_epoch(epoch)
        train_loader.dataset.set_epoch(epoch)
        bar = logger.progress(steps_per_epoch * o.accum_steps, f"epoch {epoch}")
        stats = train_one_epoch(
            net, train_loader, criterion, optimizer, schedule, epoch, settings, scaler, mixup, anchors, bar
        )
        logger.close_progress()
        record = {"epoch": epoch, "train": stats}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == o.epochs:
            val = summarize(evaluate(net, val_loader, len(classes), settings), classes)
            record["val"] = {k: val[k] for k in ("uar", "war", "num_samples")}
            if (val["uar"], val["war"]) > (best["uar"], best["war"]):
                best = {"uar": val["uar"], "war": val["war"], "epoch": epoch}
                if dist.is_main:
                    save_checkpoint(model, out / BEST_FILE, checkpoint_metadata(cfg, classes, best))
        logger.write(record)
        if dist.is_main:
            state_file.save(
                model=model.s2d.state_dict(),
                optimizer=optimizer.state_dict(),
                schedule=schedule.state_dict(),
                scaler=scaler.state_dict() if scaler is not None else {},
                anchors=anchors.state_dict() if anchors is not None else {},
                rng=rng_state(mix_rng),
                epoch=epoch,
                best=best,
            )
        barrier()
        if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch and epoch + 1 < o.epochs:
            logger.close()
            log.info("stopping after epoch %d as configured; run again to resume", epoch)
            return {"stopped_after_epoch": epoch, "validation": best}
    logger.close()
    return final_test(cfg, splits, dist, settings, best)


def checkpoint_metadata(cfg: TrainConfig, classes: list[str], best: dict) -> dict:
    return {
        "classes": list(classes),
        "stage": cfg.stage,
        "dataset": cfg.data.dataset,
        "fold": cfg.data.fold,
        "num_frames": cfg.model.num_frames if cfg.stage == "video" else 1,
        "selected_on": "validation split carved from the training data",
        "validation": best,
        "experiment": cfg.experiment,
    }


def final_test(cfg: TrainConfig, splits, dist: DistInfo, settings: StepSettings, best: dict) -> dict:
    """Evaluate the selected (best-on-validation) model once on the test split and write the report."""
    best_path = Path(cfg.output_dir) / BEST_FILE
    if not best_path.is_file():
        raise FileNotFoundError(f"no best checkpoint at {best_path}: was any validation run?")
    model, _ = load_checkpoint(best_path)
    model.to(dist.device)
    summary = summarize(
        evaluate(model, build_eval_loader(cfg, splits.test, dist), len(splits.classes), settings), splits.classes
    )
    summary["selected_epoch"] = best["epoch"]
    summary["validation"] = best
    if dist.is_main:
        write_report(summary, cfg.output_dir, "test")
    return summary


class MetricsLogger:
    """JSONL metrics log, TensorBoard scalars and progress bars, on the main process only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.tb = None
        if enabled:
            self.jsonl = (out / "metrics.jsonl").open("a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                log.warning("tensorboard is not installed: no TensorBoard scalars")

    def progress(self, total: int, description: str):
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)

        def update(values: dict) -> None:
            self.bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}")
            self.bar.update(1)

        return update

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        line = f"epoch {record['epoch']}: loss {record['train']['loss']:.4f}"
        line += (
            f", {record['train']['clips_per_s']:.1f} clips/s, data wait {100 * record['train']['data_wait_share']:.0f}%"
        )
        if "val" in record:
            line += f", val UAR {record['val']['uar']:.2f} WAR {record['val']['war']:.2f}"
        log.info(line)
        if self.tb is not None:
            for section in ("train", "val"):
                for key, value in record.get(section, {}).items():
                    if isinstance(value, (int, float)):
                        self.tb.add_scalar(f"{section}/{key}", value, record["epoch"])

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
