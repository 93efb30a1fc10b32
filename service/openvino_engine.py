"""The OpenVINO engine (settings.engine = "openvino", or a candidate of "auto"): the store's ONNX file compiled by
OpenVINO for this CPU, in this process (the `openvino` package of the `cpu` extra).

The ONNX file and the card stay the one contract: OpenVINO reads `model.onnx` (the fp32 variant) directly, and no
other format is kept in the store. It compiles it with the inference precision this CPU does best: bf16 where AMX
backs it, fp32 where the CPU has no bf16 unit, and where it has bf16 instructions without AMX (AVX-512 BF16) the
warm-up choice times both (`warmup_precisions`). The compiled model is cached on disk (OpenVINO's CACHE_DIR,
`settings.openvino_cache_dir`): a restart loads it instead of compiling again. One cached blob per model serves every
precision (OpenVINO applies the precision when it loads the blob).
"""

from __future__ import annotations

import logging
import os
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from s2d.files import user_cache_dir
from s2d.machine import isa_summary
from s2d.service.inference import Classifier, ModelOutput
from s2d.store import StoredModel

log = logging.getLogger(__name__)

DEVICE = "CPU"
PROVIDER = "openvino-cpu"  # what responses and metrics name as the provider
PRECISIONS = ("bf16", "fp32")
_HINTS = {"bf16": "bf16", "fp32": "f32"}  # our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # the instruction sets behind OpenVINO's native bf16 on x86
AMX_BF16 = BF16_FLAGS[0]  # the one of them with a matmul unit


class OpenVinoUnavailableError(ValueError):
    """OpenVINO is not installed, or cannot run the precision pinned on this CPU: a configuration the service does
    not start with (a ValueError: one `cannot start` line, service.app)."""


def _openvino():
    try:
        import openvino
    except ImportError as err:
        raise OpenVinoUnavailableError(
            "the OpenVINO engine needs the `openvino` package: install the project with the `cpu` extra"
        ) from err
    return openvino


def available() -> bool:
    """Whether OpenVINO can be imported here (the `auto` engine leaves it out when not)."""
    try:
        _openvino()
    except OpenVinoUnavailableError:
        return False
    return True


@cache
def _core():
    """One OpenVINO Core per process: it holds the plugins, loaded once."""
    return _openvino().Core()


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively on this CPU (AMX or AVX-512 BF16)."""
    return "BF16" in _core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")


def warmup_precisions(isa: str | None = None, native: bool | None = None) -> dict[str, str]:
    """The precisions the warm-up choice times OpenVINO at on this CPU (or one with instruction sets `isa` and
    OpenVINO's native-bf16 report `native`), each with why; the first is the one served untimed (`best_precision`).

    bf16 alone where AMX backs it (about 3.6x OpenVINO's fp32 there); fp32 alone without a bf16 unit (bf16 would be
    emulated); both where the CPU has bf16 instructions but no AMX (AVX-512 BF16: AMD Zen 4, Intel Cooper Lake), fp32
    first: OpenVINO's bf16 kernels without AMX ran slower than its fp32 in an emulation of such a CPU, which is not a
    measure of one (BENCHMARKS.md, issue 28), so the warm-up measures."""
    isa = isa_summary() if isa is None else isa
    flags = isa.split()
    if not (native_bf16() if native is None else native):
        return {"fp32": f"fp32: no bf16 unit on this CPU ({isa}); bf16 would be emulated, slower than fp32"}
    if AMX_BF16 in flags:
        return {"bf16": f"bf16: this CPU has {AMX_BF16}, a bf16 matmul unit (BENCHMARKS.md: s2d_base 3.6x fp32)"}
    units = " and ".join(f for f in BF16_FLAGS if f in flags) or "native bf16"
    why = f"bf16 instructions ({units}) without AMX: bf16 is not surely faster than fp32, so the warm-up times both"
    return {"fp32": f"fp32: {why}", "bf16": f"bf16: {why}"}


def best_precision() -> tuple[str, str]:
    """The precision OpenVINO is served at untimed (engine pinned, precision auto), and why (for the log and
    /v1/models): the first of `warmup_precisions`."""
    return next(iter(warmup_precisions().items()))


def resolve_precision(requested: str) -> tuple[str, str]:
    """`auto` -> best_precision(); a pinned precision, checked against the CPU (bf16 needs native support)."""
    if requested == "auto":
        return best_precision()
    if requested not in PRECISIONS:
        raise OpenVinoUnavailableError(f"OpenVINO precision {requested!r} is not one of {PRECISIONS}")
    if requested == "bf16" and not native_bf16():
        raise OpenVinoUnavailableError(
            f"OpenVINO bf16 was pinned, but this CPU ({isa_summary()}) has no bf16 unit (AMX or AVX-512 BF16); "
            "pin fp32 or leave the precision to auto"
        )
    return requested, f"{requested}: pinned (S2D_OPENVINO_PRECISION)"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/s2d/openvino` (`~/.cache/s2d/openvino`): per user, since the store may be read-only."""
    return user_cache_dir("s2d", "openvino")


def usable_cache_dir(folder: Path) -> Path | None:
    """`folder`, created if need be, or None (with a warning) where it cannot be written, e.g. a read-only root
    file system: the model is then compiled at every start, which costs time, not correctness."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        log.warning("OpenVINO's compiled-model cache %s is not writable (%s): compiling at every start", folder, err)
        return None
    return folder


def with_batch(model, batch: int):
    """`model` (an openvino.Model) with its input's batch axis fixed at `batch`: OpenVINO's CPU plugin picks faster
    kernels for static shapes than for a dynamic batch (BENCHMARKS.md, issue 28)."""
    port = model.inputs[0]
    shape = port.get_partial_shape()
    shape[0] = batch
    model.reshape({port.get_any_name(): shape})
    return model


def compile_for_cpu(
    path, precision: str, threads: int = 0, cache_dir: Path | None = None, batch: int | None = None, **properties
):
    """OpenVINO's CompiledModel of the ONNX file `path` (or an openvino.Model) for the CPU at `precision` (bf16 or
    fp32), `threads` inference threads (0: OpenVINO's choice, one per core), cached in `cache_dir` (None: no cache),
    its batch fixed at `batch` (None: as the file has it), with further OpenVINO `properties` (the benchmark's int8
    options). The service's engine and the CPU benchmark compile alike through here."""
    if batch is not None:
        path = with_batch(_core().read_model(str(path)) if isinstance(path, str | Path) else path, batch)
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        # One call at a time (the batcher's worker), as fast as it can go: latency, not throughput streams.
        "PERFORMANCE_HINT": "LATENCY",
        # OpenVINO pins its threads to cores, every process alike: two processes with one thread each (`s2d
        # analyze`'s workers, replicas side by side) then share one core and each runs at half speed (BENCHMARKS.md,
        # issue 28). Unpinned, one process using every core ran as fast as pinned.
        "ENABLE_CPU_PINNING": False,
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return _core().compile_model(str(path) if isinstance(path, Path) else path, DEVICE, config | properties)


def outputs_by_name(results) -> dict[str, np.ndarray]:
    """An infer request's results as name -> array, copied (the request reuses its buffers at its next call). Every
    name of an output counts: OpenVINO may merge a graph output with the tensor it renames (an Identity node)."""
    out = {}
    for port, value in results.items():
        array = np.array(value)
        out |= dict.fromkeys(port.get_names(), array)
    return out


class OpenVinoClassifier(Classifier):
    """The model's fp32 ONNX file compiled by OpenVINO for the CPU at one inference precision, for one clip per call:
    a batch runs clip by clip. With its batch fixed at one, OpenVINO compiles faster kernels than for a dynamic
    batch, and a dynamic batch of 4 was no faster per clip than one (BENCHMARKS.md, issue 28); one compiled model
    also keeps one copy of the converted weights (a second, static one beside the dynamic one doubled the memory)."""

    SOURCE_VARIANT = "fp32"  # the store file OpenVINO reads; the precision is OpenVINO's, at compile time
    CLIPS_PER_CALL = 1

    def __init__(
        self,
        model: StoredModel,
        precision: str = "auto",
        intra_op_threads: int = 0,
        cache_dir: Path | None = None,
        why: str | None = None,
    ):
        """`precision`: auto, bf16 or fp32, checked against the CPU (`resolve_precision`); or, with `why`, a
        precision already chosen for this CPU (`warmup_precisions`) and the reason for it."""
        ov = _openvino()
        self.path = model.variant_path(self.SOURCE_VARIANT)
        self.inference_precision, self.precision_reason = (precision, why) if why else resolve_precision(precision)
        self.cache_dir = usable_cache_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir())
        start = time.perf_counter()
        self.compiled = compile_for_cpu(
            self.path, self.inference_precision, intra_op_threads, self.cache_dir, batch=self.CLIPS_PER_CALL
        )
        self.compile_s = time.perf_counter() - start
        self.loaded_from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.request = self.compiled.create_infer_request()
        self.version = ov.get_version()
        super().__init__(model, self.SOURCE_VARIANT, PROVIDER)
        self.input_name = self.card.input.name
        log.info(
            "OpenVINO compiled %s for %s at %s in %.2f s (%s, %d threads)",
            self.path,
            DEVICE,
            self.precision_reason,
            self.compile_s,
            self._cache_state(),
            self.threads,
        )

    @property
    def precision(self) -> str:
        return self.inference_precision

    def warmup(self, max_batch: int) -> float:
        """One clip: a batch of any size runs as calls of one clip, the only shape compiled (warming batch sizes
        up to `max_batch` would run the same call over and over)."""
        return super().warmup(min(max_batch, self.CLIPS_PER_CALL))

    def _cache_state(self) -> str:
        if self.cache_dir is None:
            return "no cache"
        return f"loaded from the cache {self.cache_dir}" if self.loaded_from_cache else f"cached in {self.cache_dir}"

    @property
    def label(self) -> str:
        return f"openvino/{self.inference_precision}"

    @property
    def location(self) -> str:
        return str(self.path)

    def engine(self) -> dict[str, Any]:
        return {
            "name": "openvino",
            "version": self.version,
            "device": DEVICE,
            "precision": self.inference_precision,
            "precision_reason": self.precision_reason,
            "threads": self.threads,
            "clips_per_call": self.CLIPS_PER_CALL,
            "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
            "loaded_from_cache": self.loaded_from_cache,
            "compile_s": round(self.compile_s, 3),
        }

    def _infer(self, frames: np.ndarray, seconds_left: float | None) -> ModelOutput:  # runs to the end, always
        calls = [outputs_by_name(self.request.infer({self.input_name: clip})) for clip in self._calls(frames)]
        logits, probs = (np.concatenate([c[name] for c in calls]).astype(np.float32, copy=False)
                         for name in ("logits", "probs"))  # fmt: skip
        return ModelOutput(logits, probs)

    def _calls(self, frames: np.ndarray):
        step = self.CLIPS_PER_CALL
        return (frames[i : i + step] for i in range(0, len(frames), step))
