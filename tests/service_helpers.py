"""Helpers for the service tests: a tiny exported model in a model store, real video files, a real server process.

The model is built with torch (tests may use it); the server runs in a subprocess where `import torch` is made to
fail, so every request served proves the serving path never imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEST_CLASSES = ["happy", "sad", "neutral", "angry"]
TEST_MODEL = "tiny_test"
TEST_FRAMES = 2  # T of the test model: small, so a clip costs ~0.1-0.2 s on 2 busy cores
TEST_WINDOW_S = 1.0

# Runs the server with torch made unimportable (sys.modules[name] = None makes `import name` raise ImportError).
_BOOT = "import sys; sys.modules['torch'] = None; from service.server import serve; serve()"


@functools.cache
def build_store(root: str, name: str = TEST_MODEL, num_frames: int = TEST_FRAMES, depth: int = 1) -> Path:
    """Export a random-weight s2d_tiny to `<root>/<name>/model.onnx` with a valid card; cached per process."""
    import torch

    from models import create_model
    from s2d.card import ModelCard
    from tests.helpers import randomize_
    from training.export import export_onnx, sha256_of

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
    """Encode a short test video with PyAV (h264 in mp4 by default); size is (height, width)."""
    path = Path(path)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast", "tune": "zerolatency"}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(_frame_pattern(i, size, seed), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


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


# ---------------------------------------------------------------------------------------------------------------------
# Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real `service.server.serve()` in a subprocess on loopback (torch blocked), with its log file."""

    def __init__(self, store: Path, api_key: str | None = None, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        env = {k: v for k, v in os.environ.items() if not k.startswith("S2D_")}
        env.update({"S2D_MODEL_STORE": str(store), "S2D_PORT": str(self.port), "S2D_LOG_FORMAT": "json"})
        if api_key:
            env["S2D_API_KEY"] = api_key
        for key, value in settings.items():
            env[f"S2D_{key.upper()}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
        env["PYTHONPATH"] = str(REPO)
        self.log = Path(tempfile.mkstemp(prefix="s2d-server-", suffix=".log")[1])
        self._log_handle = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT], cwd=REPO, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=kwargs.pop("timeout", 60), **kwargs)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_handle.close()


@contextlib.contextmanager
def running_server(store: Path, **settings) -> Iterator[Server]:
    server = Server(store, **settings)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        server.log.unlink(missing_ok=True)
