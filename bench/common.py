"""What every benchmark script shares: machine description, repeated timing, and a JSON report.

Figures are medians over repeats with their spread (min..max); absolute times drift on shared machines, so compare
ratios taken in the same run.
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


def write_report(name: str, results: list[dict], out_dir: str | Path = "artifacts/bench") -> Path:
    """Write {machine, command, results} as JSON and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {"benchmark": name, "command": " ".join([sys.executable, *sys.argv]), "machine": machine()}
    path.write_text(json.dumps({**report, "results": results}, indent=2))
    return path
