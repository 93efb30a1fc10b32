"""The Triton engine (settings.engine = "triton"): a model of the store served by a Triton Inference Server, called
over gRPC (KServe v2 protocol, `tritonclient.grpc`, the `[triton]` extra). This process keeps decoding, faces,
tracking, streams and its own batcher; each batch becomes one ModelInfer call.

The Triton model is the store's model of the same name, as `s2d models triton` (s2d.triton) writes it. At start-up
(`TritonClassifier.connect`) the server must be live and ready and the model ready, waiting up to
`triton_ready_timeout_s` for them (Triton loads its models after it starts listening); then the model's metadata must
match the card (one input, the card's name, UINT8 `[-1, T, H, W, 3]`; outputs `logits` and `probs` FP32 `[-1, C]`),
its config must batch at least `max_batch` clips, and the config's s2d parameters must name the card's version and a
variant of the card: the variant served is the repository's, never chosen here. Anything else fails start-up with
the URL and the model named.

At inference the gRPC status becomes one of the service's typed errors, for this batch's clips only (the batcher
goes on with the next batch): DEADLINE_EXCEEDED, and Triton's own queue timeout, 504 `timeout`; Triton's queue
rejection (`max_queue_size`: UNAVAILABLE "Exceeds maximum queue size") and RESOURCE_EXHAUSTED, 429 `busy` like this
process's own full queue; any other UNAVAILABLE, CANCELLED or NOT_FOUND (server down or restarting, model unloaded),
503 `inference_unavailable` with Retry-After; anything else (INTERNAL, INVALID_ARGUMENT, outputs unlike the card's),
502 `inference_failed`. The server's address and message go to the log, not to the client.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from s2d.card import ModelCard
from s2d.service.errors import (
    BusyError,
    DeadlineError,
    InferenceFailedError,
    InferenceUnavailableError,
    ServiceError,
)
from s2d.service.inference import Classifier, ModelOutput
from s2d.store import StoredModel
from s2d.triton import VARIANT_PARAMETER, VERSION_PARAMETER

log = logging.getLogger(__name__)

OUTPUTS = ("logits", "probs")
BUSY_RETRY_S = 1  # Triton's queue is full: it drains batch by batch, so soon
READY_POLL_S = 0.5  # between readiness checks at start-up
READY_CHECK_TIMEOUT_S = 2.0  # one /readyz check of the server: a probe's own timeout is a few seconds
# Triton's messages for its queue policy (core: scheduler_utils.cc), both sent with gRPC status UNAVAILABLE.
QUEUE_FULL = "Exceeds maximum queue size"
QUEUE_TIMEOUT = "Request timeout expired"


class TritonStartupError(RuntimeError):
    """The Triton server or model cannot serve this model of the store: the service does not start."""


def _tritonclient():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as err:
        raise TritonStartupError(
            "engine 'triton' needs tritonclient[grpc]: pip install 's2d[triton]' (the [triton] extra)"
        ) from err
    return grpcclient


def expected_tensors(card: ModelCard) -> dict[tuple[str, str], tuple[str, list[int]]]:
    """The card's contract as Triton's metadata states it: (input / output, tensor name) -> (datatype, shape with -1
    for the batch axis)."""
    frames = card.input
    return {
        ("input", frames.name): ("UINT8", [-1, card.num_frames, frames.height, frames.width, frames.channels]),
        **{("output", name): ("FP32", [-1, len(card.classes)]) for name in OUTPUTS},
    }


def metadata_mismatches(card: ModelCard, metadata: Any) -> list[str]:
    """What in a ModelMetadataResponse differs from the card (empty: it matches). Outputs beyond logits and probs
    may be there (they are never requested); inputs beyond the card's one may not (a request would lack them)."""
    found = {("input", t.name): (t.datatype, list(t.shape)) for t in metadata.inputs}
    found |= {("output", t.name): (t.datatype, list(t.shape)) for t in metadata.outputs}
    problems = [f"it has an input {t.name!r} the card does not" for t in metadata.inputs if t.name != card.input.name]
    for (kind, name), want in expected_tensors(card).items():
        have = found.get((kind, name))
        if have is None:
            problems.append(f"{kind} {name!r} is missing")
        elif have != want:
            problems.append(f"{kind} {name!r} is {_tensor(*have)}, the card needs {_tensor(*want)}")
    return problems


def _tensor(datatype: str, shape: list[int]) -> str:
    return f"{datatype} {shape}"


class TritonClassifier(Classifier):
    """A model of the store as a Triton server serves it; `connect` checks it and returns one."""

    def __init__(
        self,
        model: StoredModel,
        url: str,
        client: Any,
        version: str,
        config: Any,
        timeout_s: float,
        max_in_flight: int = 0,
    ):
        """(`connect` makes one: it checks the server first.) `max_in_flight` 0: twice the config's instances."""
        super().__init__(model, config.parameters[VARIANT_PARAMETER].string_value, "triton")
        self._grpc = _tritonclient()
        self.url, self.client, self.version, self.timeout_s = url, client, version, timeout_s
        self.max_batch_size = config.max_batch_size
        self.instances = [
            {"kind": self._grpc.model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind), "count": group.count}
            for group in config.instance_group
        ]
        # Triton gives an instance group without a count one instance per GPU, or one on CPU: at least one.
        self._in_flight = max_in_flight or 2 * max(1, sum(max(1, group["count"]) for group in self.instances))
        self._outputs = [self._grpc.InferRequestedOutput(name) for name in OUTPUTS]

    @classmethod
    def connect(
        cls,
        model: StoredModel,
        url: str,
        version: str = "",
        timeout_s: float = 30.0,
        ready_timeout_s: float = 60.0,
        max_batch: int = 1,
        max_in_flight: int = 0,
    ) -> TritonClassifier:
        """Wait for the server and the model to be ready, check the model against the card; raises
        TritonStartupError naming the URL and the model."""
        grpc = _tritonclient()
        where = f"Triton at {url}, model {model.name!r} (version {version or 'chosen by the server'})"
        client = grpc.InferenceServerClient(url)
        try:
            _wait_until_ready(client, grpc, model.name, version, timeout_s, ready_timeout_s, where)
            try:
                metadata = client.get_model_metadata(model.name, version, client_timeout=timeout_s)
                config = client.get_model_config(model.name, version, client_timeout=timeout_s).config
            except grpc.InferenceServerException as err:
                raise TritonStartupError(f"{where}: {_reason(err)}") from None
            _check_model(model.card, metadata, config, max_batch, where)
            return cls(model, url, client, version, config, timeout_s, max_in_flight)
        except BaseException:
            client.close()
            raise

    # ---- Classifier ------------------------------------------------------------------------------------------------
    @property
    def location(self) -> str:
        return f"{self.url} (Triton model {self.name!r}, version {self.version or 'chosen by the server'})"

    @property
    def max_in_flight(self) -> int:
        return self._in_flight

    def engine(self) -> dict[str, Any]:
        return {
            "name": "triton",
            "url": self.url,
            "model": self.name,
            "version": self.version or None,  # None: the server's version policy
            "max_batch_size": self.max_batch_size,
            "instances": self.instances,
            "timeout_s": self.timeout_s,
            "max_in_flight": self.max_in_flight,
        }

    def close(self) -> None:
        self.client.close()

    def unready_reason(self) -> str | None:
        """The server's and the model's readiness now: the server can restart or unload the model after start-up."""
        timeout = min(self.timeout_s, READY_CHECK_TIMEOUT_S)
        try:
            if not self.client.is_server_ready(client_timeout=timeout):
                return "the inference server is not ready"
            if not self.client.is_model_ready(self.name, self.version, client_timeout=timeout):
                return "the inference server does not have the model ready"
        except self._grpc.InferenceServerException as err:
            log.debug("Triton at %s: readiness check failed: %s", self.url, _reason(err))
            return "the inference server cannot be reached"
        return None

    def _infer(self, frames: np.ndarray, seconds_left: float | None) -> ModelOutput:
        # The call's deadline: the engine's, or sooner when every clip of the batch has one (live windows).
        timeout_s = self.timeout_s if seconds_left is None else min(self.timeout_s, seconds_left)
        if timeout_s <= 0:
            raise DeadlineError("the clips' deadline passed before the call", details={"triton_timeout_s": 0.0})
        batch = self._grpc.InferInput(self.card.input.name, list(frames.shape), "UINT8")
        batch.set_data_from_numpy(frames)
        try:
            result = self.client.infer(
                self.name,
                [batch],
                model_version=self.version,
                outputs=self._outputs,
                client_timeout=timeout_s,
                # Triton drops the request from its queue once the client has given up on it (allow_timeout_override).
                timeout=max(1, int(timeout_s * 1_000_000)),
            )
        except self._grpc.InferenceServerException as err:
            typed = self.typed_error(err, timeout_s)
            log.warning("Triton at %s, model %s, batch of %d: %s -> %s", self.url, self.name, len(frames),
                        _reason(err), typed.code)  # fmt: skip
            raise typed from err
        logits, probs = (result.as_numpy(name) for name in OUTPUTS)
        expected = (len(frames), len(self.classes))
        if logits is None or probs is None or logits.shape != expected or probs.shape != expected:
            shapes = [None if a is None else a.shape for a in (logits, probs)]
            log.warning("Triton at %s, model %s: outputs %s, not %s", self.url, self.name, shapes, expected)
            raise InferenceFailedError(f"the inference server's answer for model {self.name!r} is not the card's")
        return ModelOutput(logits.astype(np.float32, copy=False), probs.astype(np.float32, copy=False))

    def typed_error(self, err: Any, timeout_s: float | None = None) -> ServiceError:
        """The service's error for a failed ModelInfer (an InferenceServerException) made with `timeout_s`."""
        status, message = err.status() or "", err.message() or ""
        if status == "StatusCode.DEADLINE_EXCEEDED" or QUEUE_TIMEOUT in message:
            timeout_s = self.timeout_s if timeout_s is None else timeout_s
            return DeadlineError(
                f"the inference server did not answer within {timeout_s:g} s",
                details={"triton_timeout_s": round(timeout_s, 3)},
            )
        if status == "StatusCode.RESOURCE_EXHAUSTED" or QUEUE_FULL in message:
            return BusyError(f"the inference server's queue for model {self.name!r} is full", BUSY_RETRY_S)
        if status in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "StatusCode.NOT_FOUND"):
            return InferenceUnavailableError(f"the inference server does not serve model {self.name!r} now")
        return InferenceFailedError(f"the inference server failed model {self.name!r}; see the server log")


def _reason(err: Any) -> str:
    return f"{err.status() or 'error'}: {err.message()}"


def _wait_until_ready(
    client: Any, grpc: Any, name: str, version: str, timeout_s: float, ready_timeout_s: float, where: str
) -> None:
    """Poll liveness, readiness and the model's readiness until all hold or `ready_timeout_s` passes."""
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            if not client.is_server_live(client_timeout=timeout_s):
                reason = "the server is not live"
            elif not client.is_server_ready(client_timeout=timeout_s):
                reason = "the server is not ready"
            elif not client.is_model_ready(name, version, client_timeout=timeout_s):
                reason = f"the model is not ready; the server's models: {_repository(client, timeout_s)}"
            else:
                return
        except grpc.InferenceServerException as err:
            reason = f"the server cannot be reached ({_reason(err)})"
        if time.monotonic() >= deadline:
            raise TritonStartupError(f"{where}: {reason} (waited {ready_timeout_s:g} s: S2D_TRITON_READY_TIMEOUT_S)")
        time.sleep(READY_POLL_S)


def _repository(client: Any, timeout_s: float) -> str:
    """The server's repository index in words, for the error: which models it has and in what state."""
    index = client.get_model_repository_index(client_timeout=timeout_s).models
    described = [f"{m.name} {m.version or '-'} {m.state or 'UNKNOWN'}{f' ({m.reason})' if m.reason else ''}"
                 for m in index]  # fmt: skip
    return ", ".join(described) or "none"


def _check_model(card: ModelCard, metadata: Any, config: Any, max_batch: int, where: str) -> None:
    problems = metadata_mismatches(card, metadata)
    if config.max_batch_size < max_batch:
        problems.append(
            f"its config batches at most {config.max_batch_size} clips (max_batch_size), S2D_MAX_BATCH is {max_batch}"
        )
    params = {key: config.parameters[key].string_value for key in (VERSION_PARAMETER, VARIANT_PARAMETER)
              if key in config.parameters}  # fmt: skip
    if len(params) < 2:
        problems.append(
            f"its config lacks the {VERSION_PARAMETER} / {VARIANT_PARAMETER} parameters: write the repository "
            "with `s2d models triton`"
        )
    else:
        if params[VERSION_PARAMETER] != card.version:
            problems.append(
                f"it serves version {params[VERSION_PARAMETER]!r}, the store's card is {card.version!r}: write "
                "the repository again from this store (`s2d models triton`)"
            )
        if params[VARIANT_PARAMETER] not in card.variants:
            problems.append(f"it serves variant {params[VARIANT_PARAMETER]!r}, which the card does not list")
    if problems:
        raise TritonStartupError(f"{where} does not match the model store's card: " + "; ".join(problems))
