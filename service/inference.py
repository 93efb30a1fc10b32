"""The inference engines' common interface, and ONNX Runtime sessions for the models of the store: providers checked
at start-up, IO binding on GPU, warm-up.

`Classifier.run(frames)` is synchronous (it is called from the batcher's worker thread):
uint8 [B, T, H, W, 3] RGB aligned face crops -> `ModelOutput(logits [B, C], probs [B, C])` as float32.
Engines: `OnnxClassifier` (ONNX Runtime in this process), `service.openvino_engine.OpenVinoClassifier` (OpenVINO in
this process, from the same ONNX file) and `service.triton_engine.TritonClassifier` (a Triton Inference Server over
gRPC); the batcher and the registry see only `Classifier`.

The warm-up choice (`trial_candidates`, `VariantChoice.judged`): every in-process candidate (engine x variant or
precision) runs the same warm-up clips, batch 1, interleaved; a candidate whose answers differ from the reference's
(ONNX Runtime fp32) beyond the agreement bar is refused, and the fastest of the others serves.
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
# On the warm-up clips a candidate's probabilities may differ from the reference's by at most this much (besides
# agreeing on the top-1 class): far above what bf16 or int8 rounding moves, far below what a broken graph does.
MAX_TRIAL_PROB_DIFF = 0.05


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
    def precision(self) -> str:
        """The precision the graph computes in: the card's for the variant; an engine that lowers it says so."""
        return self.card.variants[self.variant].precision

    @property
    def label(self) -> str:
        """The candidate this is at the warm-up choice: "<engine>/<variant>", e.g. onnxruntime/int8."""
        return f"{self.engine()['name']}/{self.variant}"

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
class Trial:
    """One candidate's warm-up run: the median seconds of its timed batch-1 calls, and its probabilities for every
    warm-up clip (the untimed first one included)."""

    seconds_per_clip: float
    probs: np.ndarray  # float32 [clips, C]


def trial_candidates(classifiers: dict[str, Classifier], rounds: int = TRIAL_ROUNDS) -> dict[str, Trial]:
    """Run `rounds + 1` warm-up clips (seeded noise, a different clip each round) through every candidate, batch 1,
    interleaved clip by clip, so load from other processes on a shared machine falls on every candidate alike. The
    first call of each is untimed (allocations, weight prepacking); the probabilities of all calls are kept for
    the agreement check."""
    first = next(iter(classifiers.values()))
    clips = np.random.default_rng(0).integers(0, 256, (rounds + 1, 1, *first.frame_shape), dtype=np.uint8)
    times: dict[str, list[float]] = {name: [] for name in classifiers}
    probs: dict[str, list[np.ndarray]] = {name: [] for name in classifiers}
    for index, clip in enumerate(clips):
        for name, classifier in classifiers.items():
            start = time.perf_counter()
            probs[name].append(classifier.run(clip).probs)
            if index:
                times[name].append(time.perf_counter() - start)
    return {name: Trial(float(np.median(times[name])), np.concatenate(probs[name])) for name in classifiers}


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and the largest probability difference of `probs` against `reference` ([clips, C])."""
    return {
        "top1": float((reference.argmax(-1) == probs.argmax(-1)).mean()),
        "max_abs_prob_diff": float(np.abs(reference - probs).max()),
        "clips": len(reference),
    }


def refusal(figures: dict[str, float]) -> str | None:
    """Why a candidate with these agreement figures may not serve, or None when it meets the bar."""
    if figures["top1"] < MIN_AGREEMENT:
        return f"top-1 agreement {100 * figures['top1']:.0f}% < {100 * MIN_AGREEMENT:g}% on the warm-up clips"
    if figures["max_abs_prob_diff"] > MAX_TRIAL_PROB_DIFF:
        return f"max |dprob| {figures['max_abs_prob_diff']:.3f} > {MAX_TRIAL_PROB_DIFF} on the warm-up clips"
    return None


def engine_name(classifier: Classifier) -> str:
    return classifier.engine()["name"]


@dataclass(frozen=True)
class VariantChoice:
    """Which engine and variant serve, and why: what /v1/models, the log and the page show."""

    candidate: str  # "<engine>/<variant or precision>", e.g. onnxruntime/int8, openvino/bf16
    engine: str  # onnxruntime, openvino or triton
    variant: str  # the store variant (ONNX file) the engine runs
    precision: str  # what the engine computes in (OpenVINO may lower the fp32 file to bf16)
    how: str  # "pinned" (a setting), "measured" (timed at warm-up on this CPU), "card" (the card's figures) or
    # "triton" (the variant the Triton model repository serves, from its config)
    why: str  # one sentence for people
    seconds_per_clip: dict[str, float]  # batch-1 median per candidate timed at warm-up; empty unless "measured"
    agreement: dict[str, dict[str, float]]  # per candidate, against the reference on the warm-up clips
    refused: dict[str, str]  # candidates that failed the agreement bar, and how
    cpu: str
    isa: str  # this CPU's instruction sets (s2d.machine.isa_summary)
    min_agreement: float  # the top-1 agreement a candidate needed (the card's, and on the warm-up clips)

    @classmethod
    def of(cls, classifier: Classifier, how: str, why: str) -> VariantChoice:
        """The choice of `classifier`, made without timing (pinned, the card's, Triton's)."""
        return cls(
            classifier.label, engine_name(classifier), classifier.variant, classifier.precision, how, why,
            {}, {}, {}, cpu_name(), isa_summary(), MIN_AGREEMENT,
        )  # fmt: skip

    @classmethod
    def judged(
        cls, classifiers: dict[str, Classifier], trials: dict[str, Trial], failed: dict[str, str] | None = None
    ) -> VariantChoice:
        """The fastest candidate of `trials` that meets the agreement bar against the first (the reference,
        ONNX Runtime fp32, which always may serve): `fastest_variant` with its margin over the reference.
        `failed`: candidates that could not even start, and why (shown with the refused)."""
        reference = next(iter(trials))
        figures = {name: agreement(trials[reference].probs, trial.probs) for name, trial in trials.items()}
        refused = {name: why for name in trials if name != reference and (why := refusal(figures[name]))}
        refused |= failed or {}
        eligible = {name: trial.seconds_per_clip for name, trial in trials.items() if name not in refused}
        chosen = classifiers[fastest_variant(eligible)]
        seconds = {name: trial.seconds_per_clip for name, trial in trials.items()}
        if chosen.label == reference:
            why = f"the reference: no other candidate meeting the agreement bar is {100 * SWITCH_MARGIN:g}% faster"
        else:
            why = (
                f"the fastest meeting the agreement bar, {seconds[reference] / seconds[chosen.label]:.2f}x the "
                f"reference {reference}"
            )
        return cls(
            chosen.label, engine_name(chosen), chosen.variant, chosen.precision, "measured", why, seconds, figures,
            refused, cpu_name(), isa_summary(), MIN_AGREEMENT,
        )  # fmt: skip

    def describe(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the log: the candidate, how and why it was chosen, the timings and the refusals."""
        timed = ", ".join(f"{v} {t * 1000:.0f} ms" for v, t in self.seconds_per_clip.items())
        by = f" (batch-1 calls on {self.cpu}, {self.isa}: {timed})" if timed else ""
        refused = "".join(f"; refused {name}: {why}" for name, why in self.refused.items())
        return f"{self.candidate} ({self.precision}), {self.how}: {self.why}{by}{refused}"


def fastest_variant(seconds_per_clip: dict[str, float], margin: float = SWITCH_MARGIN) -> str:
    """The candidate with the least seconds per clip, if it beats the first named (the reference, fp32: candidates
    list it first) by at least `margin`; otherwise the reference. Timings a few percent apart on a busy machine
    would otherwise flip the choice from one start to the next, for no gain."""
    reference = next(iter(seconds_per_clip))
    best = min(seconds_per_clip, key=seconds_per_clip.__getitem__)
    return best if seconds_per_clip[best] <= (1 - margin) * seconds_per_clip[reference] else reference
