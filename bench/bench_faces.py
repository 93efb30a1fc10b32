"""Face pipeline throughput on CPU: frames/s for decode, detect, and track+align (+ windows), separately, at
640x360 and 1280x720, one real face (the scikit-image astronaut) moving across the frame.

    .venv/bin/python bench/bench_faces.py [--frames 90] [--detect-every 5] [--backend mtcnn|insightface]

"detect" is a full detection on every frame; "track+align" is FacePipeline.push with detection every N frames
(MTCNN's ONet refinement in between), alignment to 224x224 and window building; "pipeline" adds decoding: the
figure to compare with the 60 frames/s goal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_report
from service.faces import FacePipeline, create_detector
from service.media import iter_frames
from tests.faces_helpers import astronaut_face, backdrop, paste, write_video


def _fps(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def run(width: int, height: int, frames: int, detect_every: int, backend: str, tmp: Path) -> dict:
    face = astronaut_face()
    size = height // 2
    images = [
        paste(backdrop(width, height), face, int((width - size) * i / frames), height // 6, size) for i in range(frames)
    ]
    video = write_video(tmp / f"bench_{width}x{height}.mp4", images, fps=30)
    detector = create_detector(backend)

    start = time.perf_counter()
    decoded = list(iter_frames(video))
    decode = time.perf_counter() - start

    detector.detect(decoded[0].image)
    start = time.perf_counter()
    found = sum(len(detector.detect(f.image)) for f in decoded)
    detect = time.perf_counter() - start

    pipeline = FacePipeline(detector, num_frames=16, window_seconds=2.0, detect_every=detect_every)
    start = time.perf_counter()
    for f in decoded:
        pipeline.push(f)
    pipeline.flush()
    track_align = time.perf_counter() - start

    pipeline = FacePipeline(detector, num_frames=16, window_seconds=2.0, detect_every=detect_every)
    start = time.perf_counter()
    for f in iter_frames(video):
        pipeline.push(f)
    pipeline.flush()
    total = time.perf_counter() - start
    return {
        "resolution": f"{width}x{height}",
        "backend": backend,
        "frames": frames,
        "detect_every": detect_every,
        "faces_found_per_frame": found / frames,
        "decode_fps": _fps(frames, decode),
        "detect_fps": _fps(frames, detect),
        "track_align_fps": _fps(frames, track_align),
        "pipeline_fps": _fps(frames, total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--backend", default="mtcnn")
    args = parser.parse_args()
    print(machine())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in ((640, 360), (1280, 720)):
            r = run(w, h, args.frames, args.detect_every, args.backend, Path(tmp))
            results.append(r)
            print(
                f"{r['resolution']:>9} {r['backend']}: decode {r['decode_fps']:7.1f} f/s | detect (every frame) "
                f"{r['detect_fps']:6.1f} f/s | track+align (detect every {r['detect_every']}) "
                f"{r['track_align_fps']:6.1f} f/s | whole pipeline {r['pipeline_fps']:6.1f} f/s "
                f"| faces/frame {r['faces_found_per_frame']:.2f}"
            )
    print("report:", write_report("bench_faces", results))


if __name__ == "__main__":
    main()
