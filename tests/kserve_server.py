"""A KServe v2 gRPC inference peer for tests. It is NOT Triton, and passing tests against it say nothing about
Triton itself: it is the other end of the protocol the service's Triton engine speaks, so that everything around
that engine can be tested here, where no Triton server runs (Triton needs its container).

It serves a model repository as `s2d.triton.write_triton_repository` writes it: each `<model>/config.pbtxt` is
parsed with Triton's own ModelConfig protobuf, each numbered version folder's `model.onnx` runs with ONNX Runtime,
and the answers follow the v2 protocol as `tritonclient.grpc` sends and reads it (ServerLive, ServerReady,
ModelReady, ModelMetadata built from the config as Triton builds it, ModelConfig, RepositoryIndex, ModelInfer with
raw tensor contents). Requests are checked against the config as Triton checks them (input names, datatypes,
shapes, batch size at most `max_batch_size`; requested outputs listed in the config), so a malformed request fails
here as it would there.

Faults are injected deterministically, per model, for the next N ModelInfer calls (`inject`):
- "unavailable": gRPC UNAVAILABLE, as from a server going away;
- "queue_full": UNAVAILABLE "Exceeds maximum queue size", Triton's answer when `max_queue_size` is reached;
- "queue_timeout": UNAVAILABLE "Request timeout expired", Triton's answer when a request waited in its queue past
  the queue policy's timeout (REJECT);
- "resource_exhausted": RESOURCE_EXHAUSTED;
- "internal": INTERNAL;
- "hold": the call is held until its client gives up (its deadline passes, or it is cancelled), whatever the
  client's timeout: a timeout forced on a machine of any speed; or until the test sets `release` (then answered).
`ready`, `live` and `model_unready` switch the health answers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceServicer, add_GRPCInferenceServiceServicer_to_server
from tritonclient.utils import triton_to_np_dtype

FAULTS = {
    "unavailable": (grpc.StatusCode.UNAVAILABLE, "injected: the server is going away"),
    "queue_full": (grpc.StatusCode.UNAVAILABLE, "injected: Exceeds maximum queue size"),
    "queue_timeout": (grpc.StatusCode.UNAVAILABLE, "Request timeout expired"),
    "resource_exhausted": (grpc.StatusCode.RESOURCE_EXHAUSTED, "injected: resources exhausted"),
    "internal": (grpc.StatusCode.INTERNAL, "injected: internal error"),
    "hold": None,
}
CPU = "CPUExecutionProvider"
HOLD_LIMIT_S = 120  # a held call is released after this even if its client never gives up (a test gone wrong)


def _datatype(data_type: int) -> str:
    """A ModelConfig DataType (TYPE_UINT8) as the v2 protocol names it (UINT8)."""
    return mc.DataType.Name(data_type).removeprefix("TYPE_")


@dataclass
class _Model:
    config: mc.ModelConfig
    sessions: dict[str, ort.InferenceSession]  # version -> session

    def tensors(self, specs) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        """Metadata of config inputs or outputs: a batching model's shapes start with -1, as Triton reports them."""
        batch = [-1] if self.config.max_batch_size > 0 else []
        return [pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=_datatype(s.data_type),
                                                        shape=batch + list(s.dims)) for s in specs]  # fmt: skip


class KServePeer(GRPCInferenceServiceServicer):
    """The servicer; `serving(repository)` runs it on a loopback port."""

    def __init__(self, repository: Path):
        self.repository = repository
        self.url = ""  # host:port, once served
        self.live = self.ready = True
        self.model_unready: set[str] = set()
        self.calls: dict[str, int] = defaultdict(int)  # ModelInfer calls per model, failed ones too
        self.held = threading.Event()  # set when a "hold" call has arrived
        self.release = threading.Event()  # set by a test: held calls go on and are answered
        self.abandoned: dict[str, int] = defaultdict(int)  # held calls per model whose client gave up on them
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.models: dict[str, _Model] = {}
        for path in sorted(self.repository.glob("*/config.pbtxt")):
            config = text_format.Parse(path.read_text(), mc.ModelConfig())
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # the service under test shares the machine's cores
            sessions = {}
            for graph in sorted(path.parent.glob("[0-9]*/model.onnx")):
                sessions[graph.parent.name] = ort.InferenceSession(
                    str(graph), options, providers=["CPUExecutionProvider"]
                )
            self.models[config.name] = _Model(config, sessions)

    def inject(self, model: str, fault: str, times: int = 1) -> None:
        """The next `times` ModelInfer calls for `model` fail with `fault` (one of FAULTS), in order."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {sorted(FAULTS)}")
        with self._lock:
            self._faults[model].extend([fault] * times)

    # ---- health and metadata ---------------------------------------------------------------------------------------
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.live)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.ready)

    def ModelReady(self, request, context):
        found = self._find(request.name, request.version)
        return pb.ModelReadyResponse(ready=found is not None and request.name not in self.model_unready)

    def ModelMetadata(self, request, context):
        model, _ = self._require(request.name, request.version, context)
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=sorted(model.sessions),
            platform=model.config.platform,
            inputs=model.tensors(model.config.input),
            outputs=model.tensors(model.config.output),
        )

    def ModelConfig(self, request, context):
        model, _ = self._require(request.name, request.version, context)
        return pb.ModelConfigResponse(config=model.config)

    def RepositoryIndex(self, request, context):
        index = pb.RepositoryIndexResponse()
        for name, model in self.models.items():
            state = "UNAVAILABLE" if name in self.model_unready else "READY"
            for version in model.sessions:
                index.models.add(name=name, version=version, state=state)
        return index

    # ---- inference -------------------------------------------------------------------------------------------------
    def ModelInfer(self, request, context):
        model, version = self._require(request.model_name, request.model_version, context)
        with self._lock:
            self.calls[request.model_name] += 1
            queue = self._faults[request.model_name]
            fault = queue.popleft() if queue else None
        if fault == "hold":
            ended = threading.Event()
            context.add_callback(ended.set)  # runs when the RPC ends: deadline passed, cancelled, or answered
            self.held.set()
            limit = time.monotonic() + HOLD_LIMIT_S
            while not (ended.is_set() or self.release.is_set()) and time.monotonic() < limit:
                ended.wait(0.02)
            if not context.is_active():
                with self._lock:
                    self.abandoned[request.model_name] += 1
                return pb.ModelInferResponse()  # nobody is there to read it
        elif fault is not None:
            context.abort(*FAULTS[fault])
        inputs = self._inputs(model, request, context)
        names = [o.name for o in request.outputs] or [o.name for o in model.config.output]
        declared = {o.name: o for o in model.config.output}
        unknown = [n for n in names if n not in declared]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected inference output(s) {unknown}")
        results = model.sessions[version].run(names, inputs)
        response = pb.ModelInferResponse(model_name=request.model_name, model_version=version, id=request.id)
        for name, array in zip(names, results, strict=True):
            expected = triton_to_np_dtype(_datatype(declared[name].data_type))
            array = np.ascontiguousarray(array.astype(expected, copy=False))
            response.outputs.add(name=name, datatype=_datatype(declared[name].data_type), shape=list(array.shape))
            response.raw_output_contents.append(array.tobytes())
        return response

    def _inputs(self, model: _Model, request, context) -> dict[str, np.ndarray]:
        """The request's tensors, checked against the config as Triton checks them."""

        def invalid(message: str) -> None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        declared = {i.name: i for i in model.config.input}
        given = [t.name for t in request.inputs]
        if sorted(given) != sorted(declared):
            invalid(f"expected inputs {sorted(declared)}, got {given}")
        if len(request.raw_input_contents) != len(request.inputs):
            invalid("inputs must be sent as raw_input_contents")
        limit = model.config.max_batch_size
        arrays = {}
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            spec, shape = declared[tensor.name], list(tensor.shape)
            if tensor.datatype != _datatype(spec.data_type):
                invalid(f"input {tensor.name!r}: datatype {tensor.datatype}, expected {_datatype(spec.data_type)}")
            if (shape[1:] if limit > 0 else shape) != list(spec.dims):
                invalid(f"input {tensor.name!r}: shape {shape} does not match dims {list(spec.dims)}")
            if limit > 0 and not 1 <= shape[0] <= limit:
                invalid(f"input {tensor.name!r}: batch size {shape[0]} exceeds max_batch_size {limit}")
            dtype = np.dtype(triton_to_np_dtype(tensor.datatype))
            if len(raw) != int(np.prod(shape)) * dtype.itemsize:
                invalid(f"input {tensor.name!r}: {len(raw)} bytes for shape {shape}")
            arrays[tensor.name] = np.frombuffer(raw, dtype).reshape(shape)
        return arrays

    def _find(self, name: str, version: str) -> tuple[_Model, str] | None:
        model = self.models.get(name)
        if model is None or not model.sessions or (version and version not in model.sessions):
            return None
        return model, version or max(model.sessions, key=int)  # Triton's default policy: the latest version

    def _require(self, name: str, version: str, context) -> tuple[_Model, str]:
        found = self._find(name, version)
        if found is None or name in self.model_unready:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' version {version!r}")
        return found


@contextlib.contextmanager
def serving(repository: Path) -> Iterator[KServePeer]:
    """A KServePeer for `repository` on a free loopback port (`peer.url`, host:port), stopped on exit."""
    peer = KServePeer(Path(repository))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="kserve-peer"),
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    add_GRPCInferenceServiceServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    peer.url = f"127.0.0.1:{port}"
    try:
        yield peer
    finally:
        server.stop(grace=None)
