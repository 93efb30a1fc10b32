"""The exported graph: uint8 frames in, (logits, probs, features) out, through torch.export; its parity with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from s2d.models import S2DModel, normalize_frames

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
