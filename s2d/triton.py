"""A Triton Inference Server model repository from the model store: one Triton model per store model. Torch-free.

```
<out>/<model>/config.pbtxt   # ONNX Runtime backend, dynamic batching, bounded queue, CPU or GPU instances
<out>/<model>/labels.txt     # the card's classes, one a line, in output order (Triton's classification extension)
<out>/<model>/1/model.onnx   # a copy of the chosen variant (fp32 / int8 on CPU, fp16 on GPU)
```

The graph's contract is the card's: input `frames` uint8 `[B, T, H, W, 3]`, outputs `logits` and `probs` float32
`[B, C]` (the `features` output stays unlisted: Triton serves the outputs a config names). The batch axis of the
exported graph is dynamic; `max_batch_size` bounds it here. Batching and queue settings follow the service's
defaults (S2D_MAX_BATCH, S2D_MAX_WAIT_MS, S2D_QUEUE_SIZE), so a Triton deployment behaves like `s2d serve` under
load: batches form within 10 ms, and past 64 queued requests new ones are refused at once rather than left waiting.
`config.pbtxt` is protobuf text of Triton's `ModelConfig` (model_config.proto), written by hand to stay free of
protobuf here; the tests parse it with Triton's own `model_config_pb2`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from s2d.card import CPU, CUDA, ModelCard
from s2d.files import sha256_of
from s2d.store import ModelStore, StoredModel

DEFAULT_MAX_BATCH = 8  # S2D_MAX_BATCH's default: the card does not bound the batch (the graph's axis is dynamic)
MAX_QUEUE_DELAY_US = 10_000  # S2D_MAX_WAIT_MS's default (10 ms): how long a batch waits to fill after its first clip
MAX_QUEUE_SIZE = 64  # S2D_QUEUE_SIZE's default: requests waiting per model before new ones are rejected
QUEUE_TIMEOUT_US = 120_000_000  # S2D_REQUEST_TIMEOUT_S's default: a request queued longer is useless (REJECT);
# a client with a shorter deadline (a live stream's window: 5 s) sets its own per request (allow_timeout_override).
BACKENDS = {"onnxruntime": "onnxruntime_onnx"}  # backend -> its platform name
KINDS = {"cpu": ("KIND_CPU", CPU), "gpu": ("KIND_GPU", CUDA)}  # instance kind, and the provider picking the variant
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.txt"
VERSION = "1"  # Triton versions are integers; the card's version string is kept in the config's parameters
# Parameters of the config that the service (engine=triton) reads back: the card version and the variant served.
VERSION_PARAMETER = "s2d_version"
VARIANT_PARAMETER = "s2d_variant"


def write_triton_repository(
    store: ModelStore | str | Path,
    out_dir: str | Path,
    models: Iterable[str] | None = None,
    backend: str = "onnxruntime",
    kind: str = "cpu",
    max_batch_size: int | None = None,
    instances: int = 1,
) -> list[Path]:
    """Write a Triton model folder for each of `models` (default: every model of the store); their paths.

    `kind` "cpu" serves the variant the store picks for ONNX Runtime's CPU provider (int8 when measured faster and
    agreeing with fp32, else fp32) on KIND_CPU instances; "gpu" the fp16 variant when the card has a usable one
    (else fp32) on KIND_GPU. An existing model folder of the same name is replaced. Each folder is staged beside its
    final place as a hidden `.<model>.*.staging` folder: write the repository before Triton starts, or with Triton
    in explicit model-control mode, so it never polls a half-written folder.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: only {sorted(BACKENDS)} (the store holds ONNX graphs)")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {sorted(KINDS)}")
    store = store if isinstance(store, ModelStore) else ModelStore(store)
    chosen = [store.get(name) for name in models] if models is not None else store.list()
    if not chosen:
        raise KeyError(f"the model store {store.root} holds no model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [_write_model(model, out, backend, kind, max_batch_size or DEFAULT_MAX_BATCH, instances) for model in chosen]


def _write_model(model: StoredModel, out: Path, backend: str, kind: str, max_batch: int, instances: int) -> Path:
    """One model folder, written beside its final place and moved in when complete."""
    variant = model.choose_variant([KINDS[kind][1]])
    source = model.variant_path(variant)
    expected = model.card.variants[variant].sha256
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", suffix=".staging", dir=out))
    try:
        (staging / VERSION).mkdir()
        shutil.copyfile(source, staging / VERSION / MODEL_FILE)
        if expected is not None and sha256_of(staging / VERSION / MODEL_FILE) != expected:
            raise OSError(f"{source}: the copy does not match the card's sha256 of variant {variant!r}")
        (staging / LABELS_FILE).write_text("".join(f"{label}\n" for label in model.card.classes))
        config = model_config(model.name, model.card, variant, backend, kind, max_batch, instances)
        (staging / "config.pbtxt").write_text(config)
        final = out / model.name
        if final.exists():  # a reader in between sees no model, never half of one
            shutil.rmtree(final)
        staging.replace(final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def model_config(
    name: str, card: ModelCard, variant: str, backend: str, kind: str, max_batch: int, instances: int
) -> str:
    """config.pbtxt: Triton's ModelConfig as protobuf text (a repeated field is the field written again)."""
    frames, classes = card.input, len(card.classes)
    parameters = {
        VERSION_PARAMETER: card.version,
        VARIANT_PARAMETER: variant,
        "s2d_precision": card.variants[variant].precision,
        "s2d_window_seconds": f"{card.window_seconds:g}",
        "s2d_family": card.family,
    }
    lines = [
        f"name: {_quote(name)}",
        f"backend: {_quote(backend)}",
        f"platform: {_quote(BACKENDS[backend])}",
        f"max_batch_size: {max_batch}",
        *_block("input", [f"name: {_quote(frames.name)}", "data_type: TYPE_UINT8",
                          f"dims: {_list([card.num_frames, frames.height, frames.width, frames.channels])}"]),
        *_block("output", [f"name: {_quote('logits')}", "data_type: TYPE_FP32", f"dims: {_list([classes])}"]),
        *_block("output", [f"name: {_quote('probs')}", "data_type: TYPE_FP32", f"dims: {_list([classes])}",
                           f"label_filename: {_quote(LABELS_FILE)}"]),
        *_block("dynamic_batching", [
            f"preferred_batch_size: {_list(_preferred(max_batch))}",
            f"max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}",
            *_block("default_queue_policy", [
                "timeout_action: REJECT", f"default_timeout_microseconds: {QUEUE_TIMEOUT_US}",
                "allow_timeout_override: true", f"max_queue_size: {MAX_QUEUE_SIZE}"]),
        ]),
        *_block("instance_group", [f"kind: {KINDS[kind][0]}", f"count: {instances}"]),
    ]  # fmt: skip
    for key, value in parameters.items():
        lines += _block("parameters", [f"key: {_quote(key)}", f"value {{ string_value: {_quote(value)} }}"])
    header = f"# Triton model config for {name} {card.version} (variant {variant}), written by s2d.triton.\n"
    return header + "\n".join(lines) + "\n"


def _preferred(max_batch: int) -> list[int]:
    """Batch sizes worth waiting for: the two powers of two below the bound, and the bound (e.g. 2, 4, 8)."""
    return [*[b for b in (2, 4, 8, 16, 32, 64, 128) if b < max_batch][-2:], max_batch]


def _block(field: str, body: list[str]) -> list[str]:
    return [f"{field} {{", *(f"  {line}" for line in body), "}"]


def _list(values: list[int]) -> str:
    return f"[ {', '.join(str(v) for v in values)} ]"


def _quote(text: str) -> str:
    return json.dumps(text)  # a protobuf text string: double quotes, backslash escapes
