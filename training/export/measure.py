"""Measuring a variant against PyTorch fp32: the evaluation clips, ONNX Runtime runs, agreement and speed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from s2d.card import CPU
from s2d.training.export.graph import INPUT_NAME, uint8_graph

EVAL_CLIPS = 32  # default clips each variant's top-1 agreement with PyTorch fp32 is measured on


def synthetic_clips(count: int, num_frames: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Procedural face clips, one random expression each: uint8 [N, T, size, size, 3]. Default agreement set."""
    from s2d.training.data.synthetic import EXPRESSIONS, render_clip

    rng = np.random.default_rng(seed)
    clips = [render_clip(EXPRESSIONS[i % len(EXPRESSIONS)], num_frames, size, rng) for i in range(count)]
    return np.stack([np.stack(c) for c in clips]).astype(np.uint8)


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def agreement(reference: np.ndarray, logits: np.ndarray) -> dict:
    """Top-1 agreement, max |dlogit| and max |dprob| of `logits` against `reference` (both [N, C])."""
    return {
        "top1_agreement": float((reference.argmax(-1) == logits.argmax(-1)).mean()),
        "max_abs_logit_diff": float(np.abs(reference - logits).max()),
        "max_abs_prob_diff": float(np.abs(_softmax(reference) - _softmax(logits)).max()),
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


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
