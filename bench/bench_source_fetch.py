"""What checking every request of a server-side source costs: one HLS stream (and one mp4 file) over HTTP on loopback,
decoded the way a source decodes it (every frame, one decoding thread), fetched two ways side by side:

- ffmpeg: FFmpeg's own HTTP client (the way before issue 30: redirects, playlists and segments unchecked, the host
  looked up again by FFmpeg);
- checked: every request through PyAV's io_open to service.sources.fetch.CheckedHttp (httpx; each URL and redirect
  hop checked, the host resolved once, the connection to the checked address), as the service reads sources now.

    flock /tmp/s2d-bench.lock .venv/bin/python bench/bench_source_fetch.py [--seconds 20] [--repeats 5]

The HTTP server is a separate process (python -m http.server), so the CPU time measured is the reader's alone. Prints
frames/s and CPU ms per frame, medians over the runs (the two ways alternate), and the ratio checked / ffmpeg.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from s2d.harness.measure import machine, write_report
from s2d.harness.server import free_port, wait_until_ready
from s2d.harness.video import write_video
from s2d.machine import isa_summary
from s2d.service.media import MediaLimits, open_url
from s2d.service.schemas import SourceOptions
from s2d.service.sources import AllowList, ffmpeg_options
from s2d.service.sources.fetch import CheckedHttp

FPS = 30
SIZE = (360, 640)  # height, width: the source tests' and a typical sub-stream's


def make_media(folder: Path, seconds: float) -> None:
    """A moving pattern as H.264 (a key frame every second), as mp4 (index first: http.server takes no Range
    requests, which FFmpeg's own client needs for an index at the end) and as HLS with 2 s segments."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (SIZE[0], SIZE[1] * 2, 3), dtype=np.uint8)
    frames = (np.ascontiguousarray(base[:, i % SIZE[1] : i % SIZE[1] + SIZE[1]]) for i in range(int(seconds * FPS)))
    video = write_video(folder / "encoded.mp4", frames, fps=FPS, options={"g": str(FPS), "preset": "ultrafast"})
    remux(video, folder / "clip.mp4", "mp4", {"movflags": "faststart"})
    (folder / "hls").mkdir()
    hls = {"hls_time": "2", "hls_list_size": "0", "hls_playlist_type": "vod"}
    remux(video, folder / "hls" / "index.m3u8", "hls", hls)


def remux(source: Path, target: Path, format: str, options: dict[str, str]) -> None:
    with av.open(str(source)) as src, av.open(str(target), "w", format=format, options=options) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:  # the demuxer's last, empty packet
                packet.stream = stream
                out.mux(packet)


def read_once(url: str, checked: bool) -> tuple[int, float, float]:
    """Frames decoded, wall seconds, CPU seconds of this process."""
    limits = MediaLimits(max_duration_s=float("inf"), max_bytes=None)
    http = CheckedHttp(AllowList.parse(["127.0.0.1"]), (10, 10)) if checked else None
    wall, cpu = time.perf_counter(), time.process_time()
    options = ffmpeg_options(url, SourceOptions())
    with open_url(url, limits=limits, options=options, timeout=(10, 10), io_open=http.io_open if http else None) as c:
        stream = c.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1  # as container_frames decodes a source
        frames = sum(1 for _ in c.decode(stream))
    if http:
        http.close()
    return frames, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the test media")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()['cpu']}, {isa_summary()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_media(folder, args.seconds)
        port = free_port()
        command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(folder)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{base}/clip.mp4", server, lambda: "", 30, "http.server")
            results = [measure(f"{base}/{name}", name, args.repeats) for name in ("hls/index.m3u8", "clip.mp4")]
        finally:
            server.terminate()
            server.wait(10)
    print(f"report: {write_report('source_fetch', results, seconds=args.seconds, size=list(SIZE), fps=FPS)}")


def measure(url: str, name: str, repeats: int) -> dict:
    runs: dict[str, list[tuple[int, float, float]]] = {"ffmpeg": [], "checked": []}
    read_once(url, False), read_once(url, True)  # warm-up: files cached, code loaded
    for _ in range(repeats):
        for way in runs:
            runs[way].append(read_once(url, way == "checked"))
    row = {"media": name}
    for way, got in runs.items():
        frames = got[0][0]
        assert all(g[0] == frames for g in got), f"{way}: frame counts differ: {[g[0] for g in got]}"
        row[way] = {
            "frames": frames,
            "frames_per_s": round(frames / statistics.median(g[1] for g in got), 1),
            "cpu_ms_per_frame": round(1000 * statistics.median(g[2] for g in got) / frames, 4),
        }
    row["checked_over_ffmpeg_cpu"] = round(row["checked"]["cpu_ms_per_frame"] / row["ffmpeg"]["cpu_ms_per_frame"], 3)
    print(f"{name}: ffmpeg {row['ffmpeg']}  checked {row['checked']}  cpu ratio {row['checked_over_ffmpeg_cpu']}")
    return row


if __name__ == "__main__":
    main()
