"""The progress of a batch: one updating line on a terminal (videos done and failed, video-seconds per second, ETA),
one log line per video otherwise (CI logs, `nohup`, a file)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, skipped: int = 0, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.total, self.skipped = total, skipped
        self.done = self.failed = 0
        self.video_seconds = 0.0
        self.started = time.monotonic()

    def update(self, record) -> None:
        self.done += 1
        self.failed += record.status == "failed"
        self.video_seconds += record.video.get("duration_s") or 0.0
        if self.live:
            self.stream.write(f"\r{self.line()}\033[K")
        else:
            what = record.video.get("error_code") or f"{record.video.get('windows', 0)} windows"
            self.stream.write(f"[{self.done}/{self.total}] {record.status} ({what}) {record.video['path']}; "
                              f"{self.line()}\n")  # fmt: skip
        self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        left = self.total - self.done
        eta = f"{left * elapsed / self.done:.0f} s" if self.done else "?"
        return (f"{self.done}/{self.total} videos ({self.failed} failed, {self.skipped} done before), "
                f"{self.video_seconds / elapsed:.2f} video-s/s, ETA {eta}")  # fmt: skip

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
