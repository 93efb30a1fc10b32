"""Export a trained model to ONNX: the graph takes aligned face clips as uint8 RGB and gives class probabilities.

Graph input `frames`: uint8 [B, T, 224, 224, 3] (RGB, the layout decoders and OpenCV produce after alignment), then
inside the graph: scale to [0, 1], ImageNet normalisation, the landmark network's resize and features, S2D, softmax.
Outputs `logits` [B, C], `probs` [B, C] and `features` [B, D] (the pooled clip feature). The batch axis is dynamic.
The model card written next to it is the contract with the service.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import IMAGENET_MEAN, IMAGENET_STD, S2DModel

INPUT_NAME = "frames"
OUTPUT_NAMES = ("logits", "probs", "features")
OPSET = 18


class UInt8ClipClassifier(nn.Module):
    """uint8 [B, T, H, W, 3] -> (logits, probs, features): everything after face alignment, in one graph."""

    def __init__(self, model: S2DModel):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1) * 255)
        self.register_buffer("inv_std", 1 / (torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1) * 255))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        clip = (frames.permute(0, 4, 1, 2, 3).float() - self.mean) * self.inv_std  # [B, 3, T, H, W]
        logits, features = self.model(clip)
        return logits, logits.softmax(dim=-1), features


def export_onnx(model: S2DModel, path: str | Path, opset: int = OPSET, max_batch: int = 256) -> Path:
    """Export the uint8 classifier with torch.export (the current ONNX exporter), batch axis dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    wrapper = UInt8ClipClassifier(model).eval()
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


def onnx_parity(model: S2DModel, path: str | Path, batch: int = 2, seed: int = 0) -> dict:
    """ONNX Runtime (CPU) against PyTorch fp32 on the same random uint8 clips."""
    import onnxruntime as ort

    cfg = model.config
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (batch, cfg.num_frames, cfg.img_size, cfg.img_size, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_probs, _ = session.run(None, {INPUT_NAME: frames})
    with torch.no_grad():
        torch_logits, torch_probs, _ = UInt8ClipClassifier(model)(torch.from_numpy(frames))
    return {
        "batch": batch,
        "max_abs_logit_diff": float(np.abs(onnx_logits - torch_logits.numpy()).max()),
        "max_abs_prob_diff": float(np.abs(onnx_probs - torch_probs.numpy()).max()),
        "top1_agreement": float((onnx_logits.argmax(-1) == torch_logits.numpy().argmax(-1)).mean()),
    }


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_card(out_dir: str | Path, model: S2DModel, classes: list[str], source: str | Path, **extra) -> Path:
    """card.json: what the service needs to feed the ONNX file and to name its outputs."""
    cfg = model.config
    if len(classes) != cfg.num_classes:
        raise ValueError(f"{len(classes)} class names for a {cfg.num_classes}-class model")
    card = {
        "name": extra.pop("name", cfg.name),
        "version": extra.pop("version", time.strftime("%Y.%m.%d")),
        "classes": list(classes),
        "num_frames": cfg.num_frames,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "layout": "BTHWC",
            "shape": [None, cfg.num_frames, cfg.img_size, cfg.img_size, 3],
            "color": "RGB",
            "content": "face crops aligned to the canonical 224x224 template",
        },
        "outputs": list(OUTPUT_NAMES),
        "architecture": cfg.to_dict(),
        "source_checkpoint": {"path": Path(source).name, "sha256": sha256_of(source)},
        **extra,
    }
    path = Path(out_dir) / "card.json"
    path.write_text(json.dumps(card, indent=2))
    return path
