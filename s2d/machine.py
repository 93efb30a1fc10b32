"""Where a figure was measured: benchmark reports and model cards record the machine (torch-free)."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# The /proc/cpuinfo flags that decide which kernels ONNX Runtime and PyTorch run on x86, widest last: a speed figure
# measured with one set says little about a CPU with another (int8 runs other kernels on AVX2, VNNI and AMX).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def isa_summary(flags: set[str] | None = None) -> str:
    """The CPU's instruction sets that matter for inference, e.g. "avx2 fma avx512f avx512_vnni avx512_bf16";
    `platform.machine()` (e.g. "aarch64") where /proc/cpuinfo lists none of them."""
    if flags is None:
        flags = _cpu_flags()
    found = [f for f in ISA_FLAGS if f in flags]
    return " ".join(found) or platform.machine() or "unknown ISA"


@cache
def _cpu_flags() -> frozenset[str]:
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()
