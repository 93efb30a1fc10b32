"""GPU utilisation and memory as Prometheus gauges, read from NVML (`nvidia-ml-py`) at scrape time.

Optional by design: without a GPU provider in the settings, without the `nvidia-ml-py` package, or without the NVIDIA
driver (no libnvidia-ml), `install_gpu_metrics` registers nothing and the service exports no `s2d_gpu_*` series.
It never fails start-up and never fails a scrape: an NVML error during collection drops that scrape's GPU samples.

One process serves one GPU (see service.metrics), so the collector reports exactly the GPU this process runs on:
the ONNX Runtime `device_id`, mapped through `CUDA_VISIBLE_DEVICES` to NVML's numbering (NVML ignores that
variable and enumerates every GPU of the host, or of the container).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")  # as in service.inference (no ORT import here)
_LABELS = ("gpu", "uuid", "name")


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU."""

    index: int  # NVML index
    uuid: str
    name: str
    utilization_ratio: float  # 0..1: share of the last sample period (1/6 s to 1 s) in which a kernel ran
    memory_used_bytes: int
    memory_total_bytes: int


def nvml_selector(device_id: int, visible: str | None) -> int | str:
    """The NVML index (int) or UUID (str) of CUDA device `device_id` under `CUDA_VISIBLE_DEVICES=visible`.

    `visible` lists indices ("2,3") or UUIDs ("GPU-8f1c...", MIG ids too); empty / None means every GPU in order.
    """
    if not visible or not visible.strip():
        return device_id
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if device_id >= len(entries):
        raise ValueError(f"device_id {device_id} is not visible: CUDA_VISIBLE_DEVICES={visible!r}")
    entry = entries[device_id]
    return int(entry) if entry.isdigit() else entry


class GpuCollector(Collector):
    """Reads one GPU through NVML on every scrape (an NVML query takes microseconds)."""

    def __init__(self, nvml: Any, handle: Any):
        self._nvml = nvml
        self._handle = handle
        self._lock = threading.Lock()  # scrapes may overlap; NVML handles are shared
        self._warned = False
        self.index = int(nvml.nvmlDeviceGetIndex(handle))
        self.uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        self.name = _text(nvml.nvmlDeviceGetName(handle))

    def read(self) -> GpuSample:
        with self._lock:
            utilization = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return GpuSample(self.index, self.uuid, self.name, utilization.gpu / 100.0, memory.used, memory.total)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            sample = self.read()
        except self._nvml.NVMLError as err:  # e.g. GPU lost: no GPU samples this scrape, the rest still served
            if not self._warned:
                log.warning("NVML read of GPU %d failed: %s (GPU metrics skipped while it fails)", self.index, err)
                self._warned = True
            return
        self._warned = False
        labels = [str(sample.index), sample.uuid, sample.name]
        for name, doc, value in (
            ("s2d_gpu_utilization_ratio", "Share of time a kernel ran (NVML, 0-1)", sample.utilization_ratio),
            ("s2d_gpu_memory_used_bytes", "GPU memory in use, all processes (NVML)", sample.memory_used_bytes),
            ("s2d_gpu_memory_total_bytes", "GPU memory installed (NVML)", sample.memory_total_bytes),
        ):
            family = GaugeMetricFamily(name, doc, labels=_LABELS)
            family.add_metric(labels, value)
            yield family

    def describe(self) -> list:
        return []  # read lazily: registering must not touch the GPU


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings return bytes


def open_gpu(device_id: int = 0, visible: str | None = None) -> GpuCollector | None:
    """A collector for CUDA device `device_id`, or None (with the reason logged) when NVML is not usable here."""
    try:
        import pynvml  # nvidia-ml-py: the [gpu] extra
    except ImportError:
        log.info("GPU metrics off: nvidia-ml-py is not installed (the [gpu] extra brings it)")
        return None
    try:
        pynvml.nvmlInit()
        selector = nvml_selector(device_id, os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible)
        if isinstance(selector, int):
            handle = pynvml.nvmlDeviceGetHandleByIndex(selector)
        else:
            handle = pynvml.nvmlDeviceGetHandleByUUID(selector)
        return GpuCollector(pynvml, handle)
    except (pynvml.NVMLError, ValueError) as err:  # no driver, no such GPU: the service runs, without GPU series
        log.info("GPU metrics off: NVML is not usable for CUDA device %d (%s)", device_id, err)
        return None


_installed: tuple[GpuCollector, CollectorRegistry] | None = None  # (collector, the registry holding it)


def install_gpu_metrics(
    providers: list[str], device_id: int = 0, registry: CollectorRegistry = REGISTRY
) -> GpuCollector | None:
    """Export the GPU this process runs on, once per process; nothing when no GPU provider is configured."""
    global _installed
    if _installed is not None:  # a second app in the same process (tests): keep one collector, the latest device
        _installed[1].unregister(_installed[0])
        _installed = None
    if not set(providers) & set(GPU_PROVIDERS):
        return None
    collector = open_gpu(device_id)
    if collector is not None:
        registry.register(collector)
        _installed = (collector, registry)
        log.info("GPU metrics on: GPU %d (%s, %s)", collector.index, collector.name, collector.uuid)
    return collector
