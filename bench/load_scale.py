"""Scale-out under a replica's shutdown: N replicas behind real nginx (deploy/scale/launch.py's stack), S live
streams through the Python client with reconnect, and a burst of uploads; one replica is sent SIGTERM mid-run.

    .venv/bin/python bench/load_scale.py --store STORE --replicas 3 --streams 16 --seconds 30 --uploads 8

Prints how the streams were spread over the replicas before and after the stop, each stream's reconnects and
results, and every upload's answer (200, or a typed error such as 503 shutting_down: none may be lost without one).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from s2d.client import AsyncClient, S2DError
from s2d.harness.measure import write_report
from s2d.harness.scenes import standard_clip
from s2d.harness.stack import running_stack
from s2d.harness.streams import clip_frames
from s2d.store import default_store_dir

API_KEY = "load-scale-key"


def active_streams(replica) -> int:
    text = httpx.get(f"{replica.url}/metrics", headers=replica.headers, timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith("s2d_active_streams ")), "s2d_active_streams 0")
    return int(float(line.split()[1]))


async def one_stream(url: str, frames: list[bytes], fps: float, seconds: float) -> dict:
    outcome = {"frames": 0, "results": 0, "reconnects": 0, "error": None}
    async with AsyncClient(url, API_KEY) as client:
        try:
            async with client.stream(mode="faces", fps=fps, tracks_fps=0, reconnect=3) as stream:

                async def read() -> None:
                    async for event in stream:
                        outcome["results"] += event["type"] == "result"

                reader = asyncio.create_task(read())
                start = time.monotonic()
                while (elapsed := time.monotonic() - start) < seconds:
                    await stream.send_frame(frames[outcome["frames"] % len(frames)], 1000 + elapsed * 1000)
                    outcome["frames"] += 1
                    await asyncio.sleep(max(0.0, start + outcome["frames"] / fps - time.monotonic()))
                await stream.send_end()
                await asyncio.wait_for(reader, 60)
                outcome["reconnects"] = stream.reconnects
        except S2DError as err:
            outcome["error"] = f"{err.code}: {err}"
    return outcome


def uploads(url: str, video: bytes, count: int) -> Counter:
    def one(_: int) -> str:
        response = httpx.post(f"{url}/v1/classify", headers={"Authorization": f"Bearer {API_KEY}"},
                              files={"file": ("clip.mp4", video, "video/mp4")}, timeout=300)  # fmt: skip
        return "200" if response.status_code == 200 else f"{response.status_code} {response.json()['error']['code']}"

    with ThreadPoolExecutor(count) as pool:
        return Counter(pool.map(one, range(count)))


async def run(args: argparse.Namespace, stack, video: bytes) -> dict:
    frames = clip_frames()
    streams = [asyncio.create_task(one_stream(stack.nginx.url, frames, args.fps, args.seconds))
               for _ in range(args.streams)]  # fmt: skip
    await asyncio.sleep(args.kill_after)
    before = [active_streams(r) for r in stack.replicas]
    victim = stack.replicas[before.index(max(before))]
    upload_job = asyncio.create_task(asyncio.to_thread(uploads, stack.nginx.url, video, args.uploads))
    stopper = threading.Thread(target=victim.stop)  # SIGTERM: the replica drains, then exits
    stopper.start()
    await asyncio.to_thread(stopper.join)
    await asyncio.sleep(2)
    after = [0 if r is victim else active_streams(r) for r in stack.replicas]
    outcomes = await asyncio.gather(*streams)
    return {"streams_per_replica_before_stop": before, "streams_per_replica_after_stop": after,
            "stopped_replica": stack.replicas.index(victim), "streams": outcomes,
            "uploads": dict(await upload_job)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--kill-after", type=float, default=10, help="seconds into the run to SIGTERM a replica")
    parser.add_argument("--uploads", type=int, default=8, help="uploads sent while the replica stops")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = standard_clip(Path(tmp) / "clip.mp4").read_bytes()
        settings = {"api_key": API_KEY, "max_batch": 4}
        with running_stack(args.store or default_store_dir(), args.replicas, Path(tmp) / "stack", **settings) as stack:
            report = asyncio.run(run(args, stack, video))
    outcomes = report["streams"]
    print(f"{args.replicas} replicas behind nginx, {args.streams} streams x {args.seconds:g} s at {args.fps:g} fps; "
          f"replica {report['stopped_replica']} stopped after {args.kill_after:g} s")  # fmt: skip
    print(f"  streams per replica before the stop {report['streams_per_replica_before_stop']}, "
          f"after {report['streams_per_replica_after_stop']}")  # fmt: skip
    print(f"  streams ended normally {sum(o['error'] is None for o in outcomes)}/{len(outcomes)}, reconnects "
          f"{sum(o['reconnects'] for o in outcomes)}, results {sum(o['results'] for o in outcomes)}, "
          f"errors {[o['error'] for o in outcomes if o['error']]}")  # fmt: skip
    print(f"  uploads during the stop: {report['uploads']}")
    extra = {k: v for k, v in report.items() if k != "streams"}
    print(f"report: {write_report('load_scale', outcomes, args=vars(args) | {'store': str(args.store)}, **extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
