"""Helpers for the live-stream tests: frames with a real face (the astronaut photo), a WebSocket client, Y4M files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from s2d.service.streams import pack_frame
from tests.faces_helpers import astronaut_face, backdrop, paste

FACE_HEIGHT = 180  # pixels of the pasted head-and-shoulders photo


def face_frames(n: int, size: tuple[int, int] = (360, 640), seed: int = 0) -> list[tuple[np.ndarray, tuple]]:
    """n RGB frames [H, W, 3] with the astronaut moving left to right; with the pasted patch (x0, y0, x1, y1)."""
    h, w = size
    face = astronaut_face()
    fw = round(face.shape[1] * FACE_HEIGHT / face.shape[0])
    back = backdrop(w, h, seed)
    out = []
    for i in range(n):
        x = int((w - fw) * (0.25 + 0.5 * i / max(n - 1, 1)))
        y = (h - FACE_HEIGHT) // 2
        out.append((paste(back, face, x, y, height=FACE_HEIGHT), (x, y, x + fw, y + FACE_HEIGHT)))
    return out


def jpeg(image_rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def aligned_frames(n: int) -> list[bytes]:
    """JPEG frames that are (roughly) aligned face crops: the astronaut's face, shifting a little, 224x224."""
    face = astronaut_face()
    return [jpeg(cv2.resize(np.roll(face, i % 7, axis=1), (224, 224))) for i in range(n)]


class StreamClient:
    """A synchronous WebSocket client speaking the stream protocol (websockets' sync client)."""

    def __init__(self, url: str, api_key: str | None = None, via_subprotocol: bool = False, **hello):
        headers, subprotocols = {}, None
        if api_key and via_subprotocol:
            subprotocols = ["s2d.v1", f"bearer.{api_key}"]
        elif api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        ws_url = url.replace("http://", "ws://") + "/v1/stream"
        self.ws: ClientConnection = connect(
            ws_url, additional_headers=headers, subprotocols=subprotocols, open_timeout=20, max_size=None
        ).__enter__()  # closed by close(); websockets 17 wants `with` or __enter__
        self.events: list[dict] = []
        self.hello = hello

    def start(self, **hello) -> dict:
        self.ws.send(json.dumps({"type": "hello", **self.hello, **hello}))
        return self.next_event()

    def send_frame(self, image: bytes, ts_ms: float, seq: int) -> None:
        self.ws.send(pack_frame(image, ts_ms, seq))

    def next_event(self, timeout: float = 30) -> dict:
        event = json.loads(self.ws.recv(timeout=timeout))
        self.events.append(event)
        return event

    def drain(self, timeout: float = 0.0) -> list[dict]:
        """Events that arrive within `timeout` seconds (non-blocking with 0)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                out.append(self.next_event(timeout=max(deadline - time.monotonic(), 0.001)))
            except TimeoutError:
                return out

    def finish(self, timeout: float = 60) -> dict:
        """Send `end`; read until the `end` event and the close. Returns the end event."""
        self.ws.send(json.dumps({"type": "end"}))
        return self.read_until("end", timeout)

    def read_until(self, kind: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(timeout=max(deadline - time.monotonic(), 0.001))
            if event["type"] == kind:
                return event

    def wait_closed(self, timeout: float = 30) -> tuple[int | None, str]:
        """Read (and keep) events until the server closes; returns (close code, reason)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.next_event(timeout=max(deadline - time.monotonic(), 0.001))
        except ConnectionClosed:
            pass
        return self.ws.close_code, self.ws.close_reason or ""

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def close(self) -> None:
        self.ws.close()


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """A YUV4MPEG2 (4:2:0) file, what Chromium's fake camera plays (`--use-file-for-fake-video-capture`)."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for image in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y plane, then U, then V
    return path
