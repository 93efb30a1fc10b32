"""Export a trained model to ONNX: the graph takes aligned face clips as uint8 RGB and gives class probabilities.

Graph input `frames`: uint8 [B, T, 224, 224, 3] (RGB, the layout decoders and OpenCV produce after alignment), then
inside the graph: scale to [0, 1], ImageNet normalisation, the landmark network's resize and features, S2D, softmax.
Outputs `logits` [B, C], `probs` [B, C] and `features` [B, D] (the pooled clip feature). The batch axis is dynamic.
The model card written next to it is the contract with the service.

One module per step: `graph` (the uint8 graph and its export), `variants` (fp16, int8), `measure` (agreement and
speed against PyTorch fp32), `package` (the model folder, its card, the store).
"""

from s2d.training.export.graph import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAMES,
    UInt8ClipClassifier,
    export_onnx,
    onnx_parity,
    uint8_graph,
)
from s2d.training.export.measure import (
    EVAL_CLIPS,
    agreement,
    clips_per_second,
    onnx_session,
    run_onnx,
    synthetic_clips,
    torch_logits,
)
from s2d.training.export.package import export_to_store, load_for_export, make_card, write_model_folder
from s2d.training.export.variants import (
    DEFAULT_VARIANTS,
    INT8_ATTENTION,
    INT8_OPS,
    INT8_PER_CHANNEL,
    INT8_REDUCE_RANGE,
    VARIANT_FILES,
    VARIANT_PROVIDERS,
    convert_fp16,
    optimize_transformer,
    quantize_int8,
)

__all__ = [
    "DEFAULT_VARIANTS",
    "EVAL_CLIPS",
    "INPUT_NAME",
    "INT8_ATTENTION",
    "INT8_OPS",
    "INT8_PER_CHANNEL",
    "INT8_REDUCE_RANGE",
    "OPSET",
    "OUTPUT_NAMES",
    "VARIANT_FILES",
    "VARIANT_PROVIDERS",
    "UInt8ClipClassifier",
    "agreement",
    "clips_per_second",
    "convert_fp16",
    "export_onnx",
    "export_to_store",
    "load_for_export",
    "make_card",
    "onnx_parity",
    "onnx_session",
    "optimize_transformer",
    "quantize_int8",
    "run_onnx",
    "synthetic_clips",
    "torch_logits",
    "uint8_graph",
    "write_model_folder",
]
