"""The demo model through the whole service (decode, face detection, tracking, alignment, windows, batcher, ONNX
Runtime) on synthetic test videos: at least 90% of windows labelled with the expression the video shows.

Needs the demo model (a card with `demo: true`) in the model store (`$S2D_MODEL_STORE` or ~/.cache/s2d/models);
skipped with the reason when it is not there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s2d.harness.server import running_server
from s2d.store import ModelStore
from tests.test_service import classify

FPS = 16
SECONDS = 3.0


def _demo_model():
    models = [m for m in ModelStore().list() if m.card.demo]
    return models[0] if models else None


def _synthetic_video(path: Path, expression: str, seed: int) -> Path:
    """A drawn person (training/data/synthetic.py) whose `expression` develops, 256 px inside a 640x360 frame."""
    import cv2

    from s2d.training.data.synthetic import render_clip
    from tests.faces_helpers import backdrop, write_video

    rng = np.random.default_rng(seed)
    faces = render_clip(expression, int(SECONDS * FPS), 256, rng)
    frames = []
    for i, face in enumerate(faces):
        frame = backdrop(seed=seed).copy()
        x = 180 + int(40 * np.sin(i / 10))
        frame[52:308, x : x + 256] = face
        frames.append(cv2.GaussianBlur(frame, (3, 3), 0))
    return write_video(path, frames, fps=FPS)


def test_demo_model_labels_most_windows_of_synthetic_videos_correctly(tmp_path):
    demo = _demo_model()
    if demo is None:
        pytest.skip(f"no demo model (card with demo: true) in the model store {ModelStore().root}; build it first")
    classes = demo.card.classes
    correct = total = 0
    per_class = {}
    with running_server(ModelStore().root, models=[demo.name]) as server, server.client(timeout=300) as client:
        for k, expression in enumerate(classes):
            video = _synthetic_video(tmp_path / f"{expression}.mp4", expression, seed=100 + k)
            response = classify(client, video, mode="faces", model=demo.name)
            assert response.status_code == 200, response.text
            windows = [w for p in response.json()["persons"] for w in p["windows"]]
            hits = sum(w["label"] == expression for w in windows)
            per_class[expression] = f"{hits}/{len(windows)}"
            correct, total = correct + hits, total + len(windows)
    print(f"demo model {demo.name}: {correct}/{total} windows correct; per class {per_class}")
    assert total >= len(classes) and correct / total >= 0.9, per_class
