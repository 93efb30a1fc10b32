"""What every benchmark script shares: machine description, repeated timing, the measured matrix-multiply peak and
MFU, and a JSON report.

Figures are medians over repeats with their spread (min..max); absolute times drift on shared machines, so compare
ratios taken in the same run. Reports go to `$S2D_BENCH_OUT` (default `artifacts/bench/`), which is how
`bench/suite.py` collects them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from s2d.machine import cpu_name

OUT_ENV = "S2D_BENCH_OUT"


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def command() -> str:
    """The command line that produced a figure, as a user would retype it."""
    return " ".join([sys.executable, *sys.argv])


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None) -> dict:
    """Seconds per call: median, min, max over `repeats` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def spread(timing: dict) -> str:
    """'median [min..max] xN' of a `time_call` result, for printing."""
    return f"{timing['median_s']:.3f} [{timing['min_s']:.3f}..{timing['max_s']:.3f}] x{timing['repeats']}"


def matmul_peak(dtype: str = "fp32", device: str = "cpu", n: int | None = None, repeats: int = 5) -> dict:
    """Measured matrix-multiply peak: GFLOP/s of an n x n x n product (2n^3 FLOP) in `dtype` on `device`, the best
    of `torch.mm` and `F.linear` (on a CPU without bf16 instructions, bf16 `mm` takes a slow generic path while
    `linear`, which is what the model's layers call, takes oneDNN's: 1 vs 8 GFLOP/s here).

    This is the ceiling MFU is measured against; it is measured in the same run as the figure it divides because
    a shared machine's speed drifts. Without `n`, n doubles from 256 until one product takes 1/8 s (the next would
    take ~1 s) or n reaches 2048 (CPU) / 8192 (CUDA), for each op alone, so a slow path does not take minutes.
    """
    import torch
    import torch.nn.functional as F

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    sync = torch.cuda.synchronize if device == "cuda" else None

    def operands(side: int) -> tuple:
        generator = torch.Generator(device=device).manual_seed(0)
        a, b = (torch.randn(side, side, device=device, generator=generator) for _ in range(2))
        return a.to(dtypes[dtype]), b.to(dtypes[dtype])

    def peak(op: Callable, side: int | None) -> dict:
        if side is None:  # grow n for this op alone: bf16 `mm` at n=2048 would take minutes here
            side, largest = 256, 8192 if device == "cuda" else 2048
            while side < largest:
                pair = operands(side)
                if time_call(lambda pair=pair: op(*pair), 1, sync=sync)["median_s"] >= 0.125:
                    break
                side *= 2
        a, b = operands(side)
        timing = time_call(lambda: op(a, b), repeats, 2 if device == "cuda" else 1, sync)
        flop = 2 * side**3
        return {"n": side, "gflops": flop / timing["median_s"] / 1e9, "gflops_best": flop / timing["min_s"] / 1e9,
                **timing}  # fmt: skip

    by_op = {"mm": peak(torch.mm, n), "linear": peak(F.linear, n)}
    op, best = max(by_op.items(), key=lambda kv: kv[1]["gflops"])
    by_op_gflops = {k: v["gflops"] for k, v in by_op.items()}
    return {"dtype": dtype, "device": device, "op": op, **best, "gflops_by_op": by_op_gflops}


def mfu(flop_per_item: float, items_per_s: float, peak_gflops: float) -> dict:
    """Achieved GFLOP/s of `items_per_s` items of `flop_per_item` FLOP each, and its fraction of a measured peak."""
    achieved = flop_per_item * items_per_s / 1e9
    return {"achieved_gflops": achieved, "peak_gflops": peak_gflops, "mfu": achieved / peak_gflops}


def write_report(name: str, results: list[dict], out_dir: str | Path | None = None, **extra) -> Path:
    """Write {benchmark, command, machine, time, **extra, results} as JSON and return the path.

    `out_dir` defaults to `$S2D_BENCH_OUT`, else `artifacts/bench`.
    """
    out = Path(out_dir or os.environ.get(OUT_ENV) or "artifacts/bench")
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{name}-{stamp}.json"
    report = {"benchmark": name, "command": command(), "machine": machine(), "time": stamp, **extra}
    path.write_text(json.dumps({**report, "results": results}, indent=2))
    return path


def resident_bytes(client) -> float | None:
    """A running server's resident memory (its own /metrics: process_resident_memory_bytes), or None."""
    import re

    match = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else None


class PeakMemory:
    """Samples a server's resident memory in a thread while the block runs; `peak` is the largest sample (bytes)."""

    def __init__(self, client, interval_s: float = 0.5):
        import threading

        self.client, self.interval_s, self.peak = client, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes(self.client) or 0.0)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
