"""Clip augmentation cost: ms per clip of the training and eval transforms on one CPU thread.

    python bench/bench_augment.py [--frames 16] [--size 224] [--input 224] [--repeats 200] [--clips 8]

The train transform is random (0-4 RandAugment ops per clip, geometric ones dearer than colour ones), so it is timed
over many clips with different seeds: the median is the typical clip, p90/max the expensive tail. Prints a table and
writes a JSON report under artifacts/bench/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2
import numpy as np
import torch

from s2d.harness.measure import machine, write_report
from s2d.training.data.augment import RandAugment, VideoTransform


def time_transform(transform: VideoTransform, clips: list[np.ndarray], repeats: int) -> dict:
    """ms per clip over `repeats` calls, each with its own seed, cycling through `clips` (after one warm-up)."""
    transform(clips[0], rng=0)
    times = []
    for i in range(repeats):
        clip = clips[i % len(clips)]
        start = time.perf_counter()
        transform(clip, rng=i)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p10_ms": times[int(0.1 * (len(times) - 1))],
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "min_ms": times[0],
        "max_ms": times[-1],
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="output size")
    parser.add_argument("--input", type=int, default=224, help="input frame side (frames are input x input)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--clips", type=int, default=8, help="distinct random input clips to cycle through")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (args.frames, args.input, args.input, 3), dtype=np.uint8) for _ in range(args.clips)]
    cases = {
        "train (bilinear RandAugment)": VideoTransform(train=True, size=args.size),
        "train (bicubic RandAugment)": VideoTransform(
            train=True, size=args.size, randaugment=RandAugment(interpolation="bicubic")
        ),
        "train (no RandAugment)": VideoTransform(train=True, size=args.size, randaugment=False),
        "eval (1 crop)": VideoTransform(train=False, size=args.size),
        "eval (2 crops)": VideoTransform(train=False, size=args.size, crops=2),
    }
    rows = []
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}  (repeats {args.repeats} clips per case after 1 warm-up)")
    print(f"{args.frames} frames {args.input}x{args.input} -> {args.size}, 1 thread, {args.repeats} clips per case")
    print(f"{'case':32s} {'median':>8s} {'p10':>8s} {'p90':>8s} {'max':>8s}  (ms per clip)")
    for name, transform in cases.items():
        timing = time_transform(transform, clips, args.repeats)
        rows.append({"case": name, "frames": args.frames, "input": args.input, "size": args.size, **timing})
        print(
            f"{name:32s} {timing['median_ms']:8.2f} {timing['p10_ms']:8.2f} {timing['p90_ms']:8.2f} "
            f"{timing['max_ms']:8.2f}"
        )
    print(f"report: {write_report('augment', rows)}")


if __name__ == "__main__":
    main()
