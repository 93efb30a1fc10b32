"""From a TrainConfig to datasets and DataLoaders: splits (validation carved from training), transforms, samplers.

Sampling is sharded by rank from one seeded permutation per epoch, so N processes with batch B see exactly the
clips one process with batch N*B would see in each step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from .config import DataSection, TrainConfig
from .data.augment import VideoTransform
from .data.datasets import ClipDataset, ImageDataset, class_balanced_weights, stratified_split
from .data.layouts import DatasetIndex, load_index
from .distributed import DistInfo

log = logging.getLogger("s2d.data")


@dataclass
class Splits:
    classes: list[str]
    train: DatasetIndex
    val: DatasetIndex
    test: DatasetIndex


def subset(index: DatasetIndex, positions) -> DatasetIndex:
    return dataclasses.replace(index, samples=[index.samples[i] for i in positions])


def load_split(data: DataSection, split: str) -> DatasetIndex:
    """One split of the configured dataset, with what the loader noticed written to the log."""
    index = load_index(data.dataset, data.root, split, fold=data.fold, on_error=data.on_error)
    for note in index.notes:
        log.info("%s %s: %s", index.name, split, note)
    if index.problems:
        log.warning("%s %s: %d rows skipped, e.g. %s", index.name, split, len(index.problems), index.problems[0])
    return index


def build_splits(cfg: TrainConfig) -> Splits:
    train, test = load_split(cfg.data, "train"), load_split(cfg.data, "test")
    train_pos, val_pos = stratified_split(train.labels, cfg.data.val_fraction, cfg.seed)
    return Splits(list(train.classes), subset(train, train_pos), subset(train, val_pos), test)


def make_dataset(cfg: TrainConfig, index: DatasetIndex, train: bool):
    a, d = cfg.augment, cfg.data
    transform = VideoTransform(
        train=train,
        size=d.img_size,
        randaugment=a.randaugment,
        erasing_prob=a.erasing,
        crops=1 if train or cfg.stage == "image" else d.test_crops,
    )
    if cfg.stage == "image":
        return ImageDataset(index, transform, on_error=d.on_error)
    return ClipDataset(
        index,
        transform,
        num_frames=cfg.model.num_frames,
        train=train,
        temporal_views=d.test_views,
        on_error=d.on_error,
        seed=cfg.seed,
    )


class ShardedSampler(Sampler[int]):
    """Seeded per-epoch order (shuffled, class-balanced with replacement, or sequential), sharded by rank."""

    def __init__(self, size: int, dist: DistInfo, seed: int, mode: str, weights: list[float] | None = None):
        self.size, self.dist, self.seed, self.mode, self.weights = size, dist, seed, mode, weights
        self.epoch = 0
        # Training drops the remainder so every rank takes the same number of steps; evaluation keeps every item.
        self.per_rank = (
            size // dist.world_size if mode != "sequential" else len(range(dist.rank, size, dist.world_size))
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.mode == "shuffle":
            order = torch.randperm(self.size, generator=gen)
        elif self.mode == "balanced":
            order = torch.multinomial(torch.tensor(self.weights, dtype=torch.double), self.size, True, generator=gen)
        else:
            order = torch.arange(self.size)
        mine = order[self.dist.rank :: self.dist.world_size][: self.per_rank]
        return iter(mine.tolist())

    def __len__(self) -> int:
        return self.per_rank


def build_train_loader(cfg: TrainConfig, index: DatasetIndex, dist: DistInfo) -> tuple[DataLoader, ShardedSampler]:
    dataset = make_dataset(cfg, index, train=True)
    balanced = cfg.data.oversample
    weights = class_balanced_weights(index.labels) if balanced else None
    sampler = ShardedSampler(len(dataset), dist, cfg.seed, "balanced" if balanced else "shuffle", weights)
    loader = DataLoader(
        dataset,
        batch_size=cfg.optim.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=dist.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    return loader, sampler


def build_eval_loader(
    cfg: TrainConfig, index: DatasetIndex, dist: DistInfo, batch_size: int | None = None
) -> DataLoader:
    """Every item once, sharded by rank; batches default to half the training batch (each item holds several views)."""
    dataset = make_dataset(cfg, index, train=False)
    sampler = ShardedSampler(len(dataset), dist, cfg.seed, "sequential")
    return DataLoader(
        dataset,
        batch_size=batch_size or max(1, cfg.optim.batch_size // 2),
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=dist.device.type == "cuda",
    )
