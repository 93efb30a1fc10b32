"""The inference engines' common interface, and ONNX Runtime sessions for the models of the store: providers checked
at start-up, IO binding on GPU, warm-up.

`Classifier.run(frames)` is synchronous (it is called from the batcher's worker thread):
uint8 [B, T, H, W, 3] RGB aligned face crops -> `ModelOutput(logits [B, C], probs [B, C])` as float32.
Engines: `OnnxClassifier` (ONNX Runtime in this process) and `service.triton_engine.TritonClassifier` (a Triton
Inference Server over gRPC); the batcher and the registry see only `Classifier`.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from s2d.card import ModelCard
from s2d.machine import cpu_name, isa_summary
from s2d.store import MIN_AGREEMENT, StoredModel

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# Timed batch-1 calls per candidate variant at warm-up: the median of 3 resists one disturbed call, and 3 calls of
# s2d_base int8 are a few seconds of start-up on 2 cores.
TRIAL_ROUNDS = 3
SWITCH_MARGIN = 0.1  # a variant other than fp32 serves only when at least this much faster (fastest_variant)


class ProviderUnavailableError(RuntimeError):
    """A requested execution provider is not in this ONNX Runtime build, or failed to start."""


@dataclass(frozen=True)
class ModelOutput:
    logits: np.ndarray  # float32 [B, C]
    probs: np.ndarray  # float32 [B, C], softmax of logits


def check_providers(requested: list[str]) -> list[str]:
    """Fail clearly when a requested provider is missing: asking for CUDA never silently runs on CPU."""
    available = ort.get_available_providers()
    missing = [p for p in requested if p not in available]
    if missing:
        hint = (
            " (install the [gpu] extra, onnxruntime-gpu, instead of [cpu])" if set(missing) & set(GPU_PROVIDERS) else ""
        )
        raise ProviderUnavailableError(
            f"ONNX Runtime provider(s) {missing} requested but not available{hint}; this build has {available}"
        )
    return list(requested)


def _provider_options(provider: str, device_id: int) -> dict[str, str]:
    return {"device_id": str(device_id)} if provider in GPU_PROVIDERS else {}


class Classifier(ABC):
    """One model variant behind one inference engine: what the batcher runs and the registry describes.

    Subclasses implement `_infer` (frames already checked against the card) and `engine`; the shape check and the
    warm-up are this class's, the same for every engine.
    """

    def __init__(self, model: StoredModel, variant: str, provider: str):
        self.stored = model
        self.card: ModelCard = model.card
        self.variant = variant
        self.provider = provider  # the ONNX Runtime provider that runs the graph, or "triton"
        self.frame_shape = (
            self.card.num_frames,
            self.card.input.height,
            self.card.input.width,
            self.card.input.channels,
        )

    @property
    def name(self) -> str:
        return self.stored.name

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the graph runs, for the log: a file, or a server and its model."""

    @abstractmethod
    def engine(self) -> dict[str, Any]:
        """What /v1/models shows of the engine: its `name` and how it is reached."""

    @abstractmethod
    def _infer(self, frames: np.ndarray, seconds_left: float | None) -> ModelOutput:
        """frames: C-contiguous uint8 [B, T, H, W, 3], checked against the card. `seconds_left`: how long the
        answer is still wanted (None: no deadline); an engine that can abandon a call (a remote one) stops then."""

    def close(self) -> None:  # noqa: B027 - an engine with nothing to release keeps this
        """Release what the engine holds (a connection); after the batcher has stopped."""

    @property
    def max_in_flight(self) -> int:
        """How many calls the batcher may have running at once: one for an in-process session, which uses every
        core it is given."""
        return 1

    def unready_reason(self) -> str | None:
        """Why the engine cannot serve now (for /readyz and the log), or None. An in-process session always can;
        a remote engine asks its server. May block for a short timeout: call it off the event loop."""
        return None

    def run(self, frames: np.ndarray, deadline: float | None = None) -> ModelOutput:
        """frames: uint8 [B, T, H, W, 3] -> logits, probs [B, C]. `deadline` (time.monotonic()): after it no clip
        of the batch is wanted."""
        if frames.dtype != np.uint8 or frames.shape[1:] != self.frame_shape:
            raise ValueError(
                f"expected uint8 [B, {', '.join(map(str, self.frame_shape))}], got {frames.dtype} {frames.shape}"
            )
        seconds_left = None if deadline is None else deadline - time.monotonic()
        return self._infer(np.ascontiguousarray(frames), seconds_left)

    def warmup(self, max_batch: int) -> float:
        """Run every batch size 1..max_batch once (engines allocate and tune per shape); returns seconds taken."""
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        for batch in range(1, max_batch + 1):
            self.run(rng.integers(0, 256, (batch, *self.frame_shape), dtype=np.uint8))
        seconds = time.perf_counter() - start
        log.info(
            "warmed up %s (%s, %s) at batch 1..%d in %.2f s", self.name, self.variant, self.provider, max_batch, seconds
        )
        return seconds


class OnnxClassifier(Classifier):
    """One model variant in one ONNX Runtime session."""

    def __init__(
        self,
        model: StoredModel,
        variant: str,
        providers: list[str],
        device_id: int = 0,
        intra_op_threads: int = 0,
    ):
        self.path = model.variant_path(variant)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One inference call at a time per session (the batcher's worker): parallelism inside the operators only.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # No CPU memory arena: ORT's arena keeps its high-water mark for the process's life and fragments as batch
        # sizes vary; plain malloc gives it back when the service is idle (malloc_trim: service.memory), at no speed
        # cost measured (BENCHMARKS.md, "int8 recipes").
        options.enable_cpu_mem_arena = False
        # Idle intra-op threads sleep instead of spinning: the service shares its cores with decoding, face detection
        # and other processes, which spinning threads take away (BENCHMARKS.md, "CPU serving per machine").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.path),
            sess_options=options,
            providers=[(p, _provider_options(p, device_id)) for p in check_providers(providers)],
        )
        active = self.session.get_providers()
        # ORT falls back to CPU when the CUDA libraries fail to load; that must not pass unnoticed.
        if providers[0] not in active:
            raise ProviderUnavailableError(
                f"model {model.name!r}: ONNX Runtime could not start {providers[0]} (active: {active}); "
                "check the CUDA / cuDNN / TensorRT libraries"
            )
        super().__init__(model, variant, active[0])
        self.device_id = device_id
        self.input_name = self.card.input.name
        self._io_binding = self.provider in GPU_PROVIDERS

    @property
    def location(self) -> str:
        return str(self.path)

    def engine(self) -> dict[str, Any]:
        return {"name": "onnxruntime", "provider": self.provider, "device_id": self.device_id}

    def _infer(self, frames: np.ndarray, seconds_left: float | None) -> ModelOutput:  # runs to the end, always
        if self._io_binding:
            # IO binding: one host->device copy of the input, outputs copied back only for the two we read.
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, frames)
            binding.bind_output("logits")
            binding.bind_output("probs")
            self.session.run_with_iobinding(binding)
            logits, probs = binding.copy_outputs_to_cpu()
        else:
            logits, probs = self.session.run(["logits", "probs"], {self.input_name: frames})
        return ModelOutput(logits.astype(np.float32, copy=False), probs.astype(np.float32, copy=False))


def choose_variant(model: StoredModel, requested: str, providers: list[str]) -> str:
    """`requested` when it names a variant, else the store's choice for these providers (from the card)."""
    if requested == "auto":
        return model.choose_variant(providers)
    if requested not in model.card.variants:
        raise KeyError(f"model {model.name!r} has no variant {requested!r}; it has {sorted(model.card.variants)}")
    return requested


@dataclass(frozen=True)
class VariantChoice:
    """Which variant serves and why: what /v1/models and the log show."""

    variant: str
    how: str  # "pinned" (a setting), "measured" (timed at warm-up on this CPU), "card" (the card's figures) or
    # "triton" (the variant the Triton model repository serves, from its config)
    seconds_per_clip: dict[str, float]  # batch-1 median per candidate timed at warm-up; empty unless "measured"
    cpu: str
    isa: str  # this CPU's instruction sets (s2d.machine.isa_summary)
    min_agreement: float  # the card agreement a candidate needed

    @classmethod
    def of(cls, variant: str | None, how: str, seconds_per_clip: dict[str, float] | None = None) -> VariantChoice:
        """`variant`, or the fastest of `seconds_per_clip` when None, on this machine."""
        seconds = seconds_per_clip or {}
        chosen = variant or fastest_variant(seconds)
        return cls(chosen, how, seconds, cpu_name(), isa_summary(), MIN_AGREEMENT)

    def describe(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the log: the variant, how it was chosen, and the timings it was chosen by."""
        timed = ", ".join(f"{v} {t * 1000:.0f} ms" for v, t in self.seconds_per_clip.items())
        by = f" (batch-1 calls on {self.cpu}, {self.isa}: {timed})" if timed else ""
        return f"variant {self.variant}, {self.how}{by}"


def fastest_variant(seconds_per_clip: dict[str, float], margin: float = SWITCH_MARGIN) -> str:
    """The candidate with the least seconds per clip, if it beats the first named (the reference, fp32: candidates
    list it first) by at least `margin`; otherwise the reference. Timings a few percent apart on a busy machine
    would otherwise flip the choice from one start to the next, for no gain."""
    reference = next(iter(seconds_per_clip))
    best = min(seconds_per_clip, key=seconds_per_clip.__getitem__)
    return best if seconds_per_clip[best] <= (1 - margin) * seconds_per_clip[reference] else reference


def time_variants(classifiers: dict[str, OnnxClassifier], rounds: int = TRIAL_ROUNDS) -> dict[str, float]:
    """Median seconds of a batch-1 call per classifier, after one untimed call each. Calls are interleaved round by
    round, so load from other processes on a shared machine falls on every candidate alike."""
    first = next(iter(classifiers.values()))
    clip = np.random.default_rng(0).integers(0, 256, (1, *first.frame_shape), dtype=np.uint8)
    for classifier in classifiers.values():
        classifier.run(clip)  # allocations, weight prepacking
    times: dict[str, list[float]] = {name: [] for name in classifiers}
    for _ in range(rounds):
        for name, classifier in classifiers.items():
            start = time.perf_counter()
            classifier.run(clip)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}
