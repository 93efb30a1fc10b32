"""Face pipeline throughput on CPU: frames/s for decode, detect, and track+align (+ windows), separately, at
640x360 and 1280x720, one real face (the scikit-image astronaut) moving across the frame.

    .venv/bin/python bench/bench_faces.py [--frames 90] [--repeats 3] [--detect-every 5] [--sizes 640x360 1280x720]

"detect" is a full detection on every frame; "track+align" is FacePipeline.push with detection every N frames
(MTCNN's ONet refinement in between), alignment to 224x224 and window building; "pipeline" adds decoding: the
figure to compare with the 60 frames/s goal. Each stage is timed `--repeats` times over all frames after one
warm-up pass: frames/s from the median pass, spread from the fastest and slowest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from s2d.harness.measure import machine, spread, time_call, write_report
from s2d.harness.scenes import astronaut_face, backdrop, paste
from s2d.harness.video import write_video
from s2d.service.faces import FacePipeline, create_detector
from s2d.service.media import iter_frames


def _stage(name: str, frames: int, timing: dict) -> dict:
    """frames/s of one stage from its per-pass timing (median; slowest and fastest pass)."""
    return {
        f"{name}_fps": frames / timing["median_s"],
        f"{name}_fps_min": frames / timing["max_s"],
        f"{name}_fps_max": frames / timing["min_s"],
        f"{name}_timing": timing,
    }


def run(width: int, height: int, frames: int, detect_every: int, backend: str, repeats: int, tmp: Path) -> dict:
    face = astronaut_face()
    size = height // 2
    images = [
        paste(backdrop(width, height), face, int((width - size) * i / frames), height // 6, size) for i in range(frames)
    ]
    video = write_video(tmp / f"bench_{width}x{height}.mp4", images, fps=30)
    detector = create_detector(backend)
    decoded = list(iter_frames(video))
    found = sum(len(detector.detect(f.image)) for f in decoded)

    def track_align(source) -> None:
        pipeline = FacePipeline(detector, num_frames=16, window_seconds=2.0, detect_every=detect_every)
        for f in source():
            pipeline.push(f)
        pipeline.flush()

    row = {
        "resolution": f"{width}x{height}",
        "backend": backend,
        "frames": frames,
        "detect_every": detect_every,
        "faces_found_per_frame": found / frames,
    }
    row.update(_stage("decode", frames, time_call(lambda: list(iter_frames(video)), repeats)))
    row.update(_stage("detect", frames, time_call(lambda: [detector.detect(f.image) for f in decoded], repeats)))
    row.update(_stage("track_align", frames, time_call(lambda: track_align(lambda: decoded), repeats)))
    row.update(_stage("pipeline", frames, time_call(lambda: track_align(lambda: iter_frames(video)), repeats)))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--backend", default="mtcnn")
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}  (repeats {args.repeats} passes over {args.frames} frames, 1 warm-up)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            r = run(w, h, args.frames, args.detect_every, args.backend, args.repeats, Path(tmp))
            results.append(r)
            print(
                f"{r['resolution']:>9} {r['backend']}: decode {r['decode_fps']:7.1f} f/s | detect (every frame) "
                f"{r['detect_fps']:6.1f} f/s | track+align (detect every {r['detect_every']}) "
                f"{r['track_align_fps']:6.1f} f/s | whole pipeline {r['pipeline_fps']:6.1f} f/s "
                f"[{r['pipeline_fps_min']:.1f}..{r['pipeline_fps_max']:.1f}] | faces/frame "
                f"{r['faces_found_per_frame']:.2f}  (pipeline s/pass {spread(r['pipeline_timing'])})",
                flush=True,
            )
    print(f"report: {write_report('faces', results)}")


if __name__ == "__main__":
    main()
