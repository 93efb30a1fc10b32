"""Benchmark a running service: requests/s and p50/p95 latency at several concurrencies, and the share of time
spent outside the model (from the server's own timings).

    python bench/loadtest.py --url http://127.0.0.1:8000 --video clip.mp4 --concurrency 1 4 16 --requests 32

Without --video it makes the standard clip: 2 s, 640x360, 25 fps, one face (the scikit-image astronaut when
scikit-image is installed, else a drawn face), h264. Prints one line per concurrency and writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from s2d.harness.measure import PeakMemory, resident_bytes
from s2d.harness.scenes import standard_clip
from s2d.machine import cpu_name


def run_level(url: str, video: bytes, concurrency: int, requests: int, headers: dict, params: dict) -> dict:
    def one(_: int) -> tuple[float, int, dict | None]:
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            start = time.perf_counter()
            response = client.post("/v1/classify", params=params, files={"file": ("clip.mp4", video, "video/mp4")})
            seconds = time.perf_counter() - start
        return seconds, response.status_code, response.json() if response.status_code == 200 else None

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    ok = [(s, body) for s, status, body in results if status == 200]
    latencies = sorted(s for s, _ in ok)
    # Per request: the share of its server-side time not spent in the model call(s) its clips were part of
    # (upload, decode, faces, queue, JSON), averaged over requests.
    timed = [b["timings"] for _, b in ok if b["timings"]["total"]]
    outside = [1 - min(t["inference"] / t["total"], 1.0) for t in timed]
    # The face pipeline's share: the server's decode + detect/track/align seconds over its end-to-end seconds.
    faces = [min((t["decode"] + t["faces"]) / t["total"], 1.0) for t in timed]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": len(ok),
        "errors": {str(st): sum(1 for _, s, _ in results if s == st) for st in {s for _, s, _ in results if s != 200}},
        "requests_per_s": len(ok) / wall,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None,
        "outside_model_share": statistics.mean(outside) if outside else None,
        "face_pipeline_share": statistics.mean(faces) if faces else None,
        "face_pipeline_share_range": [min(faces), max(faces)] if faces else None,
        "server_timings_median_s": {k: statistics.median(t[k] for t in timed) for k in timed[0]} if timed else None,
    }


def _row_line(level: int, row: dict) -> str:
    mem, outside = row["memory_mib"], row["outside_model_share"] or 0.0
    return (
        f"concurrency {level:3d}: {row['requests_per_s']:6.2f} req/s  p50 {row['p50_s'] or 0:.3f} s  "
        f"p95 {row['p95_s'] or 0:.3f} s  outside the model {100 * outside:.0f}%  "
        f"face pipeline {100 * (row['face_pipeline_share'] or 0):.0f}%  ok {row['ok']}/{row['requests']}  "
        f"errors {row['errors']}  server RSS {mem['before']} -> peak {mem['peak']} -> {mem['after']} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--video", help="video to send (default: the standard 2 s 640x360 single-face clip)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--api-key")
    parser.add_argument("--mode", default="faces", choices=("faces", "aligned"))
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the RSS after each level")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.video:
        video = Path(args.video).read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            video = standard_clip(Path(tmp) / "clip.mp4").read_bytes()
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        models = client.get("/v1/models").json()
    print(f"server {args.url}, model {models['default']}, machine {platform.machine()} {platform.processor()}")
    run_level(args.url, video, 1, 2, headers, {"mode": args.mode})  # warm the detector and the caches
    figures = []
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        for level in args.concurrency:
            before = resident_bytes(client)
            with PeakMemory(client) as memory:
                row = run_level(args.url, video, level, max(args.requests, level), headers, {"mode": args.mode})
            time.sleep(args.settle)  # the server gives freed memory back once idle
            after = resident_bytes(client)
            peak = max(memory.peak, before or 0.0, after or 0.0)  # a run shorter than one sample still has a peak
            row["memory_mib"] = {k: round(v / 2**20, 1) if v else None
                                 for k, v in (("before", before), ("peak", peak), ("after", after))}  # fmt: skip
            figures.append(row)
            print(_row_line(level, row))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": " ".join(["python bench/loadtest.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
            "server": args.url, "model": models["default"], "mode": args.mode, "requests_per_level": args.requests,
            "levels": figures,
        }  # fmt: skip
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
