"""Reduced-precision variants of the fp32 graph: fp16 (for CUDA) and int8 (for the CPU, dynamic or static QDQ)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from s2d.card import CPU, CUDA
from s2d.training.export.graph import INPUT_NAME

log = logging.getLogger(__name__)

# Each variant is its own ONNX file in the model folder; the card says where it is meant to run.
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
PLAIN_FILE = "model.plain.onnx"  # the exporter's own graph, while the variants are made from it (then deleted)
VARIANT_PROVIDERS = {"fp32": [CPU, CUDA], "fp16": [CUDA], "int8": [CPU]}
DEFAULT_VARIANTS = ("fp32", "fp16", "int8")
# int8 covers the linear layers and attention matmuls. Convolutions stay fp32: ONNX Runtime's ConvInteger (dynamic)
# was slower than its fp32 convolution, and the depth-wise landmark convolutions gain nothing from int8
# (BENCHMARKS.md, "int8 recipes").
INT8_OPS = ["MatMul", "Gemm"]
# Weights per tensor: per-channel weights with reduce_range (7-bit, the usual advice for AVX2) ran at the same speed
# with worse agreement (BENCHMARKS.md, "int8 recipes").
INT8_PER_CHANNEL = False
INT8_REDUCE_RANGE = False
# Attention's activation x activation MatMuls (QK^T, AV) stay fp32 under dynamic int8: quantising them too ran at the
# same speed with the same agreement on s2d_base (BENCHMARKS.md, "CPU serving per machine").
INT8_ATTENTION = False
# fp32 and int8 are written with attention fused into ONNX Runtime's MultiHeadAttention (training.export.fusion):
# the same logits, fewer kernels (BENCHMARKS.md, "CPU serving per machine").
FUSE_ATTENTION = True


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
    attention: bool = INT8_ATTENTION,
) -> Path:
    """int8 for the CPU. `dynamic` (default): int8 weights, activations quantised per call (MatMulInteger, no
    calibration); `static`: QDQ, per-channel weights, activation ranges from `calibration` clips uint8
    [N, T, H, W, 3], every MatMul. `per_channel` / `reduce_range` (7-bit weights) / `attention` (also the MatMuls
    of two activations) apply to the dynamic method."""
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
            extra_options={"MatMulConstBOnly": not attention},
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


def optimize_transformer(src: str | Path, dst: str | Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer optimiser on the fp32 graph (model type "vit": Gelu, SkipLayerNorm and attention
    fusions where its patterns match), written as an fp32 graph that int8 quantisation can start from."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(src), model_type="vit", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    log.info("transformer optimiser fused %s", fused)
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    optimized.save_model_to_file(str(tmp))  # also declares the com.microsoft opset its fused operators need
    tmp.replace(dst)
    return dst


VARIANT_NOTES = {
    "fp32": "Reference graph; figures are ONNX Runtime CPU vs PyTorch fp32.",
    "fp16": "For CUDA; figures measured with ONNX Runtime CPU's fp16 kernels vs PyTorch fp32, speed not timed here.",
    "int8": "For CPU: int8 MatMul/Gemm (convolutions stay fp32); figures vs PyTorch fp32.",
}
