"""`s2d analyze` throughput and memory on this machine: real-time factor (video seconds per wall second) and wall
milliseconds per frame for 1 and 2 local worker processes and for a two-node Ray cluster on loopback (one CPU per
node), over the same set of different face clips; and the worker's peak memory for a short and a long video.

    .venv/bin/python bench/bench_batch.py [--store DIR] [--model NAME] [--videos 8] [--seconds 10] [--long 120]

Each configuration is one `s2d analyze` run, as a user starts it, into a fresh output folder: its wall time counts
the workers' start-up and model loading too (reported apart: `start_s`, from the command's start to the first
video written). The clips are 640x360, 25 fps, one real face (the astronaut) moving, each on another backdrop (the
same bytes would be analysed once). Default model: the store's default (the per-frame baseline on a fresh machine:
`s2d baseline build --if-needed`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from s2d.batch import load
from s2d.harness.batch import face_clip, two_node_cluster
from s2d.harness.measure import machine, write_report
from s2d.harness.server import REPO
from s2d.machine import isa_summary

FPS = 25


def analyze(inputs: Path, out: Path, store: str | None, model: str | None, *extra: str) -> dict:
    """One `s2d analyze` run: wall seconds, seconds to the first finished video, and its videos table."""
    command = [sys.executable, "-m", "s2d", "analyze", str(inputs), "-o", str(out), *extra]
    command += ["--store", store] if store else []
    command += ["--model", model] if model else []
    out.mkdir(parents=True)
    log = out / "s2d-analyze.log"
    started = time.perf_counter()
    with open(log, "wb") as output:  # a file, not a pipe: nobody reads a pipe while the run goes on
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    first = None
    while process.poll() is None:
        if first is None and list((out / "videos").glob("*.parquet")):
            first = time.perf_counter() - started
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"s2d analyze failed ({process.returncode}): {log.read_text()[-3000:]}")
    return {"wall_s": wall, "start_s": first, "videos": load(out).videos}


def figures(name: str, run: dict) -> dict:
    videos = run["videos"]
    frames, seconds = int(videos["frames_decoded"].sum()), float(videos["duration_s"].sum())
    row = {
        "config": name, "videos": len(videos), "frames": frames, "video_s": seconds, "wall_s": run["wall_s"],
        "start_s": run["start_s"], "rtf": seconds / run["wall_s"], "ms_per_frame": 1000 * run["wall_s"] / frames,
        "worker_ms_per_frame": 1000 * float(videos["seconds"].sum()) / frames,
        "peak_rss_mib": float(videos["peak_rss_mib"].max()), "nodes": int(videos["node_id"].nunique()),
        "model": f"{videos['model'].iloc[0]} ({videos['model_family'].iloc[0]}, {videos['model_variant'].iloc[0]})",
    }  # fmt: skip
    print(f"{name:>10}: {row['videos']} videos, {frames} frames, {seconds:.0f} video-s in {row['wall_s']:.1f} s "
          f"(first video after {row['start_s']:.1f} s): real-time factor {row['rtf']:.2f}, "
          f"{row['ms_per_frame']:.1f} ms/frame wall, {row['worker_ms_per_frame']:.1f} ms/frame in a worker, "
          f"peak worker RSS {row['peak_rss_mib']:.0f} MiB, {row['nodes'] or 1} node(s)", flush=True)  # fmt: skip
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="model store (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    parser.add_argument("--model", help="model name (default: the store's default)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--long", type=float, default=120.0, help="length of the long clip for peak memory (0: skip)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray cluster row")
    args = parser.parse_args()
    print(machine(), isa_summary(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="s2d-bench-batch-") as folder:
        tmp = Path(folder)
        clips = tmp / "clips"
        clips.mkdir()
        for i in range(args.videos):
            face_clip(clips / f"clip{i}.mp4", round(args.seconds * FPS), fps=FPS, start=20 + 7 * i, seed=i)
        for workers in (1, 2):
            run = analyze(clips, tmp / f"local{workers}", args.store, args.model, "--workers", str(workers))
            rows.append(figures(f"local x{workers}", run))
        if not args.no_ray:
            with two_node_cluster(tmp) as (address, _, _):
                run = analyze(clips, tmp / "ray", args.store, args.model, "--ray", address)
            rows.append(figures("ray 2 nodes", run))
        if args.long:
            for name, seconds in (("short", args.seconds), ("long", args.long)):
                video = face_clip(tmp / f"{name}.mp4", round(seconds * FPS), fps=FPS)
                rows.append(figures(f"{name} x1", analyze(video, tmp / name, args.store, args.model, "--workers", "1")))
    report = write_report("batch", rows, cores=os.cpu_count(), isa=isa_summary())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
