"""Export a trained model to ONNX: the graph takes aligned face clips as uint8 RGB and gives class probabilities.

Graph input `frames`: uint8 [B, T, 224, 224, 3] (RGB, the layout decoders and OpenCV produce after alignment), then
inside the graph: scale to [0, 1], ImageNet normalisation, the landmark network's resize and features, S2D, softmax.
Outputs `logits` [B, C], `probs` [B, C] and `features` [B, D] (the pooled clip feature). The batch axis is dynamic.
The model card written next to it is the contract with the service.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from s2d.card import CPU, CUDA, ModelCard, SourceCheckpoint, VariantSpec, parse_card
from s2d.files import sha256_of
from s2d.machine import cpu_name
from s2d.models import S2DModel, normalize_frames
from s2d.store import MIN_AGREEMENT, ModelStore, StoredModel

log = logging.getLogger(__name__)

INPUT_NAME = "frames"
OUTPUT_NAMES = ("logits", "probs", "features")
OPSET = 18


class UInt8ClipClassifier(nn.Module):
    """uint8 [B, T, H, W, 3] -> (logits, probs, features): everything after face alignment, in one graph."""

    def __init__(self, model: S2DModel):
        super().__init__()
        self.model = model.eval()

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, features = self.model(normalize_frames(frames))
        return logits, logits.softmax(dim=-1), features


def uint8_graph(model: nn.Module) -> nn.Module:
    """The module that becomes the ONNX graph: uint8 frames in, (logits, probs, features) out. S2D gets the ImageNet
    normalisation in front; a model that takes uint8 frames itself (`takes_uint8_frames`, e.g. the frame baseline)
    is exported as it is."""
    if getattr(model, "takes_uint8_frames", False):
        return model.eval()
    return UInt8ClipClassifier(model).eval()


def export_onnx(model: nn.Module, path: str | Path, opset: int = OPSET, max_batch: int = 256) -> Path:
    """Export the uint8 classifier with torch.export (the current ONNX exporter), batch axis dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    wrapper = uint8_graph(model)
    example = torch.zeros(2, cfg.num_frames, cfg.img_size, cfg.img_size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.save(str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves a half-written model under the real name
    return path


def onnx_parity(model: nn.Module, path: str | Path, batch: int = 2, seed: int = 0) -> dict:
    """ONNX Runtime (CPU) against PyTorch fp32 on the same random uint8 clips."""
    import onnxruntime as ort

    cfg = model.config
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (batch, cfg.num_frames, cfg.img_size, cfg.img_size, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_probs, _ = session.run(None, {INPUT_NAME: frames})
    with torch.no_grad():
        torch_logits, torch_probs, _ = uint8_graph(model)(torch.from_numpy(frames))
    return {
        "batch": batch,
        "max_abs_logit_diff": float(np.abs(onnx_logits - torch_logits.numpy()).max()),
        "max_abs_prob_diff": float(np.abs(onnx_probs - torch_probs.numpy()).max()),
        "top1_agreement": float((onnx_logits.argmax(-1) == torch_logits.numpy().argmax(-1)).mean()),
    }


# --- reduced-precision variants --------------------------------------------------------------------------------------
# Each variant is its own ONNX file in the model folder; the card says where it is meant to run.
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
VARIANT_PROVIDERS = {"fp32": [CPU, CUDA], "fp16": [CUDA], "int8": [CPU]}
DEFAULT_VARIANTS = ("fp32", "fp16", "int8")
EVAL_CLIPS = 32  # default clips each variant's top-1 agreement with PyTorch fp32 is measured on
# int8 covers the linear layers and attention matmuls. Convolutions stay fp32: ONNX Runtime's ConvInteger (dynamic)
# is slower than its fp32 convolution here, and the depth-wise landmark convolutions gain nothing from int8.
# Measured on s2d_small, T=16, random weights, an earlier 2-core AVX-512 VNNI CPU (batch 1): fp32 0.16-0.19 clips/s;
# dynamic int8 on MatMul/Gemm 0.35 (per-tensor) / 0.37 (per-channel, but worse agreement); in another run (fp32 0.26),
# per-channel int8 with Conv as well: 0.16 (dynamic) and 0.19 (static QDQ).
INT8_OPS = ["MatMul", "Gemm"]
# Weight quantisation of the dynamic int8 recipe. On the 2-core AVX2 EPYC (no VNNI), s2d_base T=16, batch 1, engines
# interleaved per clip over 12 clips (bench/bench_cpu_inference.py, fitted head): per-tensor 0.342 clips/s, 11/12
# top-1 agreement; per-channel + reduce_range (7-bit weights, the usual advice for AVX2's saturating u8 x s8 pair
# sums) 0.345 clips/s, 10/12; PyTorch fp32 0.196, ORT fp32 0.215. Same speed, worse agreement: per-tensor stays.
INT8_PER_CHANNEL = False
INT8_REDUCE_RANGE = False


def synthetic_clips(count: int, num_frames: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Procedural face clips, one random expression each: uint8 [N, T, size, size, 3]. Default agreement set."""
    from s2d.training.data.synthetic import EXPRESSIONS, render_clip

    rng = np.random.default_rng(seed)
    clips = [render_clip(EXPRESSIONS[i % len(EXPRESSIONS)], num_frames, size, rng) for i in range(count)]
    return np.stack([np.stack(c) for c in clips]).astype(np.uint8)


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp32 graph -> fp16 graph (weights and activations), keeping the uint8 input and fp32 outputs."""
    import warnings

    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():  # one warning per weight smaller than fp16's range: noise, not news
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    graph = half.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    outputs = {o.name for o in graph.output}
    # The converter keeps the fp32 output casts but leaves two things fp32 that now carry fp16 values:
    # casts of the uint8 input (`to` still FLOAT) and internal consumers of an output (`features` feeds the head).
    output_casts = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast" and n.output[0] in outputs}
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in outputs:
            continue
        for i, name in enumerate(node.input):
            if name in output_casts:
                node.input[i] = output_casts[name]
        if node.op_type == "Cast" and types.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    onnx.checker.check_model(half)
    return _save_onnx(half, dst)


def _save_onnx(model, dst: str | Path) -> Path:
    import onnx

    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return dst


class _ClipReader:
    """Calibration clips for onnxruntime.quantization, one clip per call."""

    def __init__(self, clips: np.ndarray):
        self.clips = iter(clips)

    def get_next(self) -> dict[str, np.ndarray] | None:
        clip = next(self.clips, None)
        return None if clip is None else {INPUT_NAME: clip[None]}


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calibration: np.ndarray | None = None,
    method: str = "dynamic",
    *,
    per_channel: bool = INT8_PER_CHANNEL,
    reduce_range: bool = INT8_REDUCE_RANGE,
) -> Path:
    """int8 for the CPU. `dynamic` (default): int8 weights, activations quantised per call (MatMulInteger, no
    calibration); `static`: QDQ, per-channel weights, activation ranges from `calibration` clips uint8
    [N, T, H, W, 3]. `per_channel` / `reduce_range` (7-bit weights) apply to the dynamic method."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    if method == "dynamic":
        quantize_dynamic(
            str(src),
            str(tmp),
            op_types_to_quantize=INT8_OPS,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )
    elif method == "static":
        if calibration is None or len(calibration) == 0:
            raise ValueError("static int8 quantisation needs calibration clips")
        quantize_static(
            str(src),
            str(tmp),
            _ClipReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=INT8_OPS,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    else:
        raise ValueError(f"unknown int8 method {method!r}: dynamic or static")
    tmp.replace(dst)
    return dst


# --- measuring variants ----------------------------------------------------------------------------------------------


def onnx_session(path: str | Path, providers: list[str] | None = None):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=providers or [CPU])


def run_onnx(session, clips: np.ndarray, batch: int = 4) -> np.ndarray:
    """Logits [N, C] for uint8 clips [N, T, H, W, 3], `batch` clips per call."""
    return np.concatenate(
        [session.run(["logits"], {INPUT_NAME: clips[i : i + batch]})[0] for i in range(0, len(clips), batch)]
    )


def torch_logits(model: nn.Module, clips: np.ndarray, batch: int = 4) -> np.ndarray:
    """PyTorch fp32 logits [N, C]: the reference every variant is compared with."""
    wrapper = uint8_graph(model)
    with torch.inference_mode():
        return torch.cat(
            [wrapper(torch.from_numpy(clips[i : i + batch]))[0] for i in range(0, len(clips), batch)]
        ).numpy()


def agreement(reference: np.ndarray, logits: np.ndarray) -> dict:
    """Top-1 agreement and max |dlogit| of `logits` against `reference` (both [N, C])."""
    return {
        "top1_agreement": float((reference.argmax(-1) == logits.argmax(-1)).mean()),
        "max_abs_logit_diff": float(np.abs(reference - logits).max()),
        "agreement_clips": len(reference),
    }


def clips_per_second(session, clip: np.ndarray, repeats: int = 3) -> float:
    """Batch-1 throughput: median of `repeats` timed calls after one warm-up call."""
    feed = {INPUT_NAME: clip[None]}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1.0 / float(np.median(times))


# --- the model folder and the store ----------------------------------------------------------------------------------


def make_card(
    model: nn.Module,
    classes: list[str],
    variants: dict[str, VariantSpec],
    *,
    name: str,
    source: SourceCheckpoint,
    window_seconds: float = 2.0,
    version: str | None = None,
    licence: str = "unspecified: the licence of the checkpoint's weights and training data applies",
    demo: bool = False,
    **fields,
) -> ModelCard:
    """The card of an exported model; raises CardError if anything does not validate."""
    cfg = model.config
    if len(classes) != cfg.num_classes:
        raise ValueError(f"{len(classes)} class names for a {cfg.num_classes}-class model")
    card = {
        "name": name,
        "version": version or time.strftime("%Y.%m.%d"),
        "classes": list(classes),
        "num_frames": cfg.num_frames,
        "window_seconds": window_seconds,
        "input": {"name": INPUT_NAME, "height": cfg.img_size, "width": cfg.img_size},
        "outputs": list(OUTPUT_NAMES),
        "variants": variants,
        "demo": demo,
        "licence": licence,
        "source_checkpoint": source,
        "architecture": cfg.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
    }
    return parse_card(card, f"card of {name}")


def write_model_folder(
    model: nn.Module,
    folder: str | Path,
    classes: list[str],
    *,
    name: str,
    source: SourceCheckpoint,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    evaluation: np.ndarray | None = None,
    evaluation_name: str | None = None,
    calibration: np.ndarray | None = None,
    int8_method: str = "dynamic",
    timing: bool = True,
    **card_fields,
) -> ModelCard:
    """Export `model` into `folder`: one ONNX file per variant and card.json with each variant's measured figures.

    `evaluation`: uint8 clips [N, T, H, W, 3] on which every variant is compared with PyTorch fp32 (default: 32
    synthetic face clips), described in the card by `evaluation_name`; `calibration`: clips for static int8
    (default: 8 other synthetic clips).
    """
    unknown = set(variants) - set(VARIANT_FILES)
    if unknown or "fp32" not in variants:
        raise ValueError(f"variants must include fp32 and be among {sorted(VARIANT_FILES)}, got {list(variants)}")
    folder = Path(folder)
    cfg = model.config
    model = model.eval()
    fp32_path = export_onnx(model, folder / VARIANT_FILES["fp32"])
    if evaluation is None:
        evaluation = synthetic_clips(EVAL_CLIPS, cfg.num_frames, cfg.img_size, seed=1)
        evaluation_name = f"{EVAL_CLIPS} synthetic face clips (training.export.synthetic_clips, seed 1)"
    evaluation_name = evaluation_name or f"{len(evaluation)} clips given by the caller"
    reference = torch_logits(model, evaluation)
    specs, measured_on = {}, f"{cpu_name()}, onnxruntime {_ort_version()} CPUExecutionProvider, batch 1"
    for variant in variants:
        path = folder / VARIANT_FILES[variant]
        if variant == "fp16":
            convert_fp16(fp32_path, path)
        elif variant == "int8":
            if calibration is None and int8_method == "static":
                calibration = synthetic_clips(8, cfg.num_frames, cfg.img_size, seed=2)
            quantize_int8(fp32_path, path, calibration, method=int8_method)
        session = onnx_session(path)  # fp16 runs on ORT CPU too (slowly): its agreement is measured here
        figures = agreement(reference, run_onnx(session, evaluation))
        if figures["top1_agreement"] < MIN_AGREEMENT:
            log.warning("%s variant agrees with fp32 on only %.1f%% of clips", variant, 100 * figures["top1_agreement"])
        timed = timing and CPU in VARIANT_PROVIDERS[variant]
        specs[variant] = VariantSpec(
            file=path.name,
            precision=variant,
            providers=VARIANT_PROVIDERS[variant],
            size_bytes=path.stat().st_size,
            sha256=sha256_of(path),
            clips_per_s=clips_per_second(session, evaluation[0]) if timed else None,
            measured_on=measured_on if timed else None,
            notes=_VARIANT_NOTES.get(variant, "") + (f" int8 method: {int8_method}." if variant == "int8" else ""),
            **figures,
        )
    parity = dict(card_fields.pop("parity", None) or {})
    parity["onnxruntime_cpu_fp32"] = onnx_parity(model, fp32_path)
    parity["variant_agreement_clips"] = evaluation_name
    card = make_card(model, classes, specs, name=name, source=source, parity=parity, **card_fields)
    card.save(folder / "card.json")
    return card


_VARIANT_NOTES = {
    "fp32": "Reference graph; figures are ONNX Runtime CPU vs PyTorch fp32.",
    "fp16": "For CUDA; figures measured with ONNX Runtime CPU's fp16 kernels vs PyTorch fp32, speed not timed here.",
    "int8": "For CPU: int8 MatMul/Gemm (convolutions stay fp32); figures vs PyTorch fp32.",
}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def load_for_export(checkpoint: str | Path, landmark: str | Path | None = None) -> tuple[S2DModel, dict]:
    """Our .safetensors checkpoint (metadata with class names) or an official .pth (+ MobileFaceNet weights)."""
    from s2d.models import get_config
    from s2d.models.checkpoint import load_any, load_checkpoint

    if str(checkpoint).endswith(".safetensors"):
        return load_checkpoint(checkpoint)
    return load_any(checkpoint, get_config("s2d_base"), landmark), {}


def export_to_store(
    model_or_checkpoint: nn.Module | str | Path,
    store_root: str | Path | None,
    name: str,
    classes: list[str] | None = None,
    *,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    demo: bool = False,
    window_seconds: float = 2.0,
    evaluation: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
    landmark: str | Path | None = None,
    source: SourceCheckpoint | None = None,
    **card_fields,
) -> StoredModel:
    """Export a model (or a checkpoint file) into `<store_root>/<name>/`, replacing any previous model of that name
    atomically. Class names default to the checkpoint's metadata. Extra keyword arguments go to the card
    (`licence`, `version`, `description`, `training`, `metrics`, ...) or to `write_model_folder` (`int8_method`,
    `timing`)."""
    if isinstance(model_or_checkpoint, nn.Module):
        model, meta = model_or_checkpoint, {}
        source = source or SourceCheckpoint(path="<in memory>", sha256=None)
    else:
        model, meta = load_for_export(model_or_checkpoint, landmark)
        path = Path(model_or_checkpoint)
        source = source or SourceCheckpoint(path=path.name, sha256=sha256_of(path))
    classes = list(classes or meta.get("classes") or [])
    if not classes:
        raise ValueError("the checkpoint does not name its classes: pass them (--classes a,b,c or --dataset NAME)")
    store = ModelStore(store_root)
    with store.staging(name) as folder:
        write_model_folder(
            model,
            folder,
            classes,
            name=name,
            source=source,
            variants=variants,
            evaluation=evaluation,
            calibration=calibration,
            demo=demo,
            window_seconds=window_seconds,
            **card_fields,
        )
    return store.get(name)
