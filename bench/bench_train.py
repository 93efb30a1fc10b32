"""Training throughput: clips/s and peak memory of one training step at the official batch, with the real data
loader (synthetic DFEW-layout clips on disk, full augmentation) and without it (random tensors), so the input
pipeline's cost is visible.

    python bench/bench_train.py [--variant s2d_base] [--batch 8] [--steps 3] [--repeats 1] [--precision bf16]
                                [--workers 2] [--device cpu|cuda]

Each of `--repeats` timed epochs runs `--steps` steps after one warm-up step: clips/s is the median epoch's, with
the slowest and fastest beside it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from s2d.harness.measure import machine, write_report
from s2d.training.config import load_config
from s2d.training.data.synthetic import make_synthetic_dfew
from s2d.training.distributed import DistInfo
from s2d.training.engine import StepSettings, train_one_epoch
from s2d.training.loaders import build_splits, build_train_loader
from s2d.training.optim import CosineSchedule, build_optimizer
from s2d.training.train import build_criterion, build_mixup, build_model


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process's peak RSS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="s2d_base")
    parser.add_argument("--batch", type=int, default=8, help="per step (official: 8 per GPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed epochs of --steps steps each")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}  (repeats {args.repeats} epochs of {args.steps} steps, 1 warm-up step)")
    dist = DistInfo(device=device)
    with tempfile.TemporaryDirectory() as root:
        make_synthetic_dfew(root, clips_per_class=2 + args.batch * args.steps // 3, seed=0)  # ~5 of 7 train
        cfg = load_config(
            Path(__file__).resolve().parents[1] / "configs" / "base_video.yaml",
            [
                f"model.name={args.variant}", "model.init=null", "model.landmark=null", "data.dataset=dfew",
                f"data.root={root}", "data.fold=1", f"data.num_workers={args.workers}", "data.val_fraction=0.1",
                f"optim.batch_size={args.batch}", f"optim.precision={args.precision}",
            ],
        )  # fmt: skip
        splits = build_splits(cfg)
        model = build_model(cfg, len(splits.classes)).to(device)
        optimizer = build_optimizer(model, 1e-5, 0.05)
        schedule = CosineSchedule(optimizer, 100, 1, 1e-5, 1e-8, 1e-7)
        mixup = build_mixup(cfg, len(splits.classes), np.random.default_rng(0))
        criterion = build_criterion(cfg, mixup)
        warmup = StepSettings(device, args.precision, max_steps=1)
        settings = StepSettings(device, args.precision, max_steps=args.steps)
        loader, _ = build_train_loader(cfg, splits.train, dist)
        clip = torch.randn(args.batch, 3, 16, 224, 224)
        labels = torch.randint(0, len(splits.classes), (args.batch,))
        tensors = [(clip, labels)] * args.steps
        results = []
        for source, batches in (("synthetic tensors", tensors), ("data loader", loader)):
            train_one_epoch(model, batches, criterion, optimizer, schedule, 0, warmup, None, mixup)
            epochs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                stats = train_one_epoch(model, batches, criterion, optimizer, schedule, 0, settings, None, mixup)
                epochs.append({**stats, "seconds": time.perf_counter() - start})
            speeds = [e["clips_per_s"] for e in epochs]
            row = {
                "variant": args.variant,
                "device": device.type,
                "precision": args.precision,
                "batch": args.batch,
                "input": source,
                "steps": epochs[0]["steps"],
                "repeats": args.repeats,
                "clips_per_s": statistics.median(speeds),
                "clips_per_s_min": min(speeds),
                "clips_per_s_max": max(speeds),
                "data_wait_share": statistics.median(e["data_wait_share"] for e in epochs),
                "seconds": statistics.median(e["seconds"] for e in epochs),
                "peak_memory_mb": peak_memory_mb(device),
            }
            results.append(row)
            print(
                f"{args.variant} {device.type} {args.precision} batch {args.batch} [{source}]: "
                f"{row['clips_per_s']:.2f} clips/s [{row['clips_per_s_min']:.2f}..{row['clips_per_s_max']:.2f}] "
                f"x{args.repeats} epochs of {row['steps']} steps after 1 warm-up step, "
                f"data wait {100 * row['data_wait_share']:.0f}%, peak memory {row['peak_memory_mb']:.0f} MiB",
                flush=True,
            )
    print(f"report: {write_report('train', results)}")


if __name__ == "__main__":
    main()
