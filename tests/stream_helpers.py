"""Helpers for the live-stream tests: frames with a real face (the astronaut photo), a stream client, Y4M files."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from s2d.client import Client, GoingAway, StreamClosed, SyncStream, encode_jpeg
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
    return encode_jpeg(image_rgb, quality)


def aligned_frames(n: int) -> list[bytes]:
    """JPEG frames that are (roughly) aligned face crops: the astronaut's face, shifting a little, 224x224."""
    face = astronaut_face()
    return [jpeg(cv2.resize(np.roll(face, i % 7, axis=1), (224, 224))) for i in range(n)]


class StreamClient:
    """A synchronous stream for the tests, on the project's client (s2d.client): every event read is kept in
    `events`; `ws` is the client's stream (`send_raw` for the protocol's refusals). A refused handshake raises at
    construction (`StreamUnauthorized`)."""

    def __init__(self, url: str, api_key: str | None = None, via_subprotocol: bool = False, **hello):
        self._client = Client(url, api_key, timeout=60)
        try:
            self.ws: SyncStream = self._client.open_stream(via_subprotocol=via_subprotocol)
        except BaseException:
            self._client.close()
            raise
        self.events: list[dict] = []
        self.hello = hello

    def start(self, **hello) -> dict:
        ready = self.ws.start(**self.hello, **hello)
        self.events.append(ready)
        return ready

    def send_frame(self, image: bytes, ts_ms: float, seq: int) -> None:
        self.ws.send_frame(image, ts_ms, seq)

    def next_event(self, timeout: float = 30) -> dict:
        """The next event; StreamClosed once the server closed (normally too), TimeoutError after `timeout`."""
        event = self.ws.recv(timeout)
        if event is None:
            raise StreamClosed(*self.ws.closed)
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
        """Send `end`; read until the `end` event. Returns it."""
        end = self.ws.end(timeout)
        while self.next_event() is not end:  # the events before it, which end() kept for reading
            pass
        return end

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
        except (StreamClosed, TimeoutError):
            pass
        return self.ws.closed or (None, "")

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self._client.close()


def expect_shutdown_close(stream: SyncStream) -> None:
    """Read a stream (or a source's events) until the server closes it for its shutdown: 1001 with the reason, after
    a fatal `shutting_down` error event."""
    try:
        for _ in stream:
            pass
    except GoingAway as gone:
        assert (gone.close_code, gone.reason, gone.code) == (1001, "server shutting down", "shutting_down"), gone
        return
    raise AssertionError(f"the stream ended with {stream.closed}, not 1001")


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """A YUV4MPEG2 (4:2:0) file, what Chromium's fake camera plays (`--use-file-for-fake-video-capture`)."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for image in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y plane, then U, then V
    return path
