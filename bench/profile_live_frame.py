"""Where a live stream's frame time goes in faces mode (issue 28): the server's per-frame path of one stream,
stage by stage, on the frames `bench/live_capacity.py` sends (the standard one-face 640x360 clip as JPEG, looped
at `--fps`), with the per-frame baseline's window (T=8 frames per 1 s window, one window per second).

    .venv/bin/python bench/profile_live_frame.py [--seconds 20] [--fps 15] [--detect-every N] [--repeats 3]

Stages: decode (JPEG -> RGB, `decode_image`), detect (full MTCNN on every `detect_every`-th frame), refine (ONet on
the tracked boxes in between), align+windows+tracker (the rest of `FacePipeline.push`). Each configuration runs
`--repeats` passes over the same frames after one warm-up pass; the median pass is shown as ms per frame and as
shares. `--compare` runs, in the same process, the pipeline with its per-frame savings off (eager alignment, NMS
one box at a time, the pyramid resized from the frame, every detection full range), then adding lazy alignment and
the all-at-once NMS, the chained pyramid, the detections restricted to the tracked sizes, and decoding and refining
only the frames used (the default: the service's stream settings, detection at its interval at `--fps`; a deferred
frame's decoding is counted as decode wherever it happens).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from functools import partial

from s2d.harness.measure import machine, write_report
from s2d.harness.streams import clip_frames
from s2d.service.faces import DeferredImage, FacePipeline, boxes, create_detector
from s2d.service.media import Frame
from s2d.service.settings import Settings
from s2d.service.streams.live import StreamConfig
from s2d.service.streams.protocol import decode_image

MAX_PIXELS = 1920 * 1080
NMS_MATRIX_MAX = boxes._NMS_MATRIX_MAX


class _TimedDetector:
    """The MTCNN detector, its calls timed into `seconds`."""

    def __init__(self, detector, seconds: dict):
        self.detector, self.seconds = detector, seconds
        self.name, self.commercial_use = detector.name, detector.commercial_use

    def detect(self, image):
        return self._timed("detect", self.detector.detect, image)

    def detect_larger(self, image, min_face_size):
        return self._timed("detect", self.detector.detect_larger, image, min_face_size)

    def refine(self, image, boxes):
        return self._timed("refine", self.detector.refine, image, boxes)

    def _timed(self, stage: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[stage] += time.perf_counter() - start


def one_pass(detector, jpegs: list[bytes], args: argparse.Namespace, options: dict) -> dict:
    """Seconds per stage over one stream of `args.seconds` at `args.fps`, and what it produced."""
    seconds: dict = defaultdict(float)
    seconds["detect"] = seconds["refine"] = 0.0
    timed = _TimedDetector(detector, seconds)
    pipeline = FacePipeline(timed, args.num_frames, args.window_seconds, detect_every=args.detect_every, **options)
    windows = faces = 0
    frames = round(args.seconds * args.fps)
    deferred = options.get("frame_interval_s") is not None  # as a live stream: decoded when the pipeline needs it
    seconds["decode"] = 0.0
    for i in range(frames):
        data = jpegs[i % len(jpegs)]
        start = time.perf_counter()
        image = DeferredImage(partial(_timed_decode, data, seconds)) if deferred else decode_image(data, MAX_PIXELS)
        decoded = time.perf_counter()
        before = seconds["detect"] + seconds["refine"] + seconds["decode"]
        tracks, done = pipeline.push(Frame(index=i, t=i / args.fps, image=image))
        pushed = time.perf_counter()
        inside = seconds["detect"] + seconds["refine"] + seconds["decode"] - before
        seconds["decode"] += decoded - start
        seconds["align+windows+tracker"] += (pushed - decoded) - inside
        windows, faces = windows + len(done), faces + len(tracks)
    windows += len(pipeline.flush())
    return {"seconds": dict(seconds), "frames": frames, "windows": windows, "faces": faces}


def _timed_decode(data: bytes, seconds: dict):
    start = time.perf_counter()
    try:
        return decode_image(data, MAX_PIXELS)
    finally:
        seconds["decode"] += time.perf_counter() - start


def profile(detector, jpegs, args, label: str, options: dict) -> dict:
    one_pass(detector, jpegs, args, options)  # warm-up
    passes = [one_pass(detector, jpegs, args, options) for _ in range(args.repeats)]
    totals = [sum(p["seconds"].values()) for p in passes]
    median = passes[totals.index(statistics.median_low(totals))]
    frames, total = median["frames"], sum(median["seconds"].values())
    row = {"config": label, "options": options, "frames": frames, "windows": median["windows"],
           "faces": median["faces"], "ms_per_frame": 1000 * total / frames,
           "pass_s": sorted(totals)}  # fmt: skip
    row["stages_ms_per_frame"] = {k: 1000 * v / frames for k, v in median["seconds"].items()}
    row["stages_share"] = {k: v / total for k, v in median["seconds"].items()}
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--detect-every", type=int, help="default: a live stream's, at --fps (the service's defaults)")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--window-seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    fields = Settings.model_fields
    parser.add_argument("--detect-size-ratio", type=float, default=fields["stream_detect_size_ratio"].default)
    parser.add_argument("--full-detect-every", type=int, default=fields["stream_full_detect_every"].default)
    parser.add_argument("--compare", action="store_true", help="also run with the per-frame savings off")
    args = parser.parse_args(argv)
    service = Settings()  # the service's defaults (and S2D_* variables)
    if args.detect_every is None:
        args.detect_every = StreamConfig.from_settings(service).detect_every_frames(args.fps)
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}")
    jpegs = clip_frames()
    restricted = {"detect_size_ratio": args.detect_size_ratio, "full_detect_every": args.full_detect_every}
    used_only = {"frame_interval_s": 1 / args.fps} if service.stream_decode_only_used else {}
    configs = {"default": ({}, restricted | used_only)}  # label: (MTCNN options, FacePipeline options)
    if args.compare:
        direct = {"chained_pyramid": False}
        configs = {"savings off": (direct, {"lazy_align": False}), "+lazy align, NMS": (direct, {}),
                   "+chained": ({}, {}), "+restricted sizes": ({}, restricted), **configs}  # fmt: skip
    rows = []
    for label, (detector_options, options) in configs.items():
        detector = create_detector("mtcnn", **detector_options)
        # "savings off": NMS one kept box at a time, as before the all-overlaps-at-once path
        boxes._NMS_MATRIX_MAX = 0 if label == "savings off" else NMS_MATRIX_MAX
        row = profile(detector, jpegs, args, label, options)
        row["detector_options"] = detector_options
        rows.append(row)
        stages = " | ".join(
            f"{k} {row['stages_ms_per_frame'][k]:.2f} ms ({100 * row['stages_share'][k]:.0f}%)"
            for k in ("decode", "detect", "refine", "align+windows+tracker")
        )
        print(f"{label:>17}: {row['ms_per_frame']:.2f} ms/frame ({1000 / row['ms_per_frame']:.0f} frames/s on one "
              f"core) | {stages} | windows {row['windows']}, faces {row['faces']}", flush=True)  # fmt: skip
    for row in rows[1:]:
        print(f"per-frame time, savings off / {row['config']}: {rows[0]['ms_per_frame'] / row['ms_per_frame']:.2f}x")
    print(f"report: {write_report('live_frame', rows)}")


if __name__ == "__main__":
    main()
