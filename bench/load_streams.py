"""Load a running service with live streams: N WebSocket streams at F frames/s for S seconds.

    python bench/load_streams.py --url http://127.0.0.1:8000 --streams 32 --fps 15 --seconds 60

Every stream sends the standard clip of `service.loadtest` (640x360, one real face: the scikit-image astronaut)
as JPEG frames in a loop, stamped with this process's clock, and reads every event. Prints the frame-to-result
latency (p50/p95: result received minus the timestamp of the frame that completed the window), the server's drop
rate (frames dropped / received, from each stream's final `end` event), window drops, and the server's resident
memory (Prometheus `process_resident_memory_bytes`) before, at its peak during the run, and after the streams end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class StreamOutcome:
    frames_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    results: int = 0
    end: dict | None = None
    close: str = ""
    errors: dict[str, int] = field(default_factory=dict)


def clip_frames(quality: int = 80) -> list[bytes]:
    """JPEG frames of the standard 2 s 640x360 single-face clip."""
    import cv2

    from service.loadtest import standard_clip
    from service.media import iter_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = standard_clip(Path(tmp) / "clip.mp4")
        frames = [f.image for f in iter_frames(path)]
    encode = [cv2.IMWRITE_JPEG_QUALITY, quality]
    return [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), encode)[1].tobytes() for f in frames]


async def one_stream(url: str, headers: dict, hello: dict, frames: list[bytes], fps: float, seconds: float,
                     start_at: float) -> StreamOutcome:  # fmt: skip
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from service.streams import pack_frame

    out = StreamOutcome()
    ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/stream"
    async with connect(ws_url, additional_headers=headers, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "hello", **hello}))
        ready = json.loads(await ws.recv())
        if ready["type"] != "ready":
            out.close = f"refused: {ready}"
            return out

        async def read() -> None:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "result":
                    out.results += 1
                    if event.get("frame_ts"):
                        out.latencies_ms.append(time.time() * 1000 - event["frame_ts"])
                elif event["type"] == "error":
                    out.errors[event["code"]] = out.errors.get(event["code"], 0) + 1
                elif event["type"] == "end":
                    out.end = event

        reader = asyncio.create_task(read())
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < seconds:
            await ws.send(pack_frame(frames[i % len(frames)], time.time() * 1000, i))
            out.frames_sent += 1
            i += 1
            await asyncio.sleep(max(0.0, began + i / fps - time.monotonic()))
        await ws.send(json.dumps({"type": "end"}))
        try:
            await asyncio.wait_for(reader, 60)
        except (TimeoutError, ConnectionClosed):
            reader.cancel()
        out.close = f"{ws.close_code} {ws.close_reason or ''}".strip()
    return out


def resident_bytes(client: httpx.Client) -> float | None:
    match = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else None


async def sample_memory(client: httpx.Client, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        value = await asyncio.to_thread(resident_bytes, client)
        if value:
            samples.append(value)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> dict:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    frames = clip_frames()
    hello = {"mode": args.mode, "fps": args.fps, "tracks_fps": 5}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        if args.warmup > 0:  # first use creates the per-thread face detectors: not part of what streams hold
            await asyncio.gather(*(one_stream(args.url, headers, hello, frames, args.fps, args.warmup, 0.0)
                                   for _ in range(2)))  # fmt: skip
            await asyncio.sleep(args.settle)
        before = resident_bytes(client)
        samples: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_memory(client, samples, stop))
        start_at = time.monotonic() + 1.0  # every stream starts sending together, after all have connected
        outcomes = await asyncio.gather(
            *(one_stream(args.url, headers, hello, frames, args.fps, args.seconds, start_at)
              for _ in range(args.streams)),
            return_exceptions=True,
        )  # fmt: skip
        stop.set()
        await sampler
        # After the streams: the server lets go of their state; give the allocator a moment, then measure.
        await asyncio.sleep(args.settle)
        after = resident_bytes(client)
        healthy = client.get("/healthz").status_code == 200
    ok = [o for o in outcomes if isinstance(o, StreamOutcome)]
    failures = [repr(o) for o in outcomes if not isinstance(o, StreamOutcome)]
    latencies = [v for o in ok for v in o.latencies_ms]
    ends = [o.end for o in ok if o.end]
    received = sum(e["frames"]["received"] for e in ends)
    dropped = sum(e["frames"]["dropped_total"] for e in ends)
    reasons: dict[str, int] = {}
    window_drops: dict[str, int] = {}
    for e in ends:
        for k, v in e["frames"]["dropped"].items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in e["windows"]["dropped"].items():
            window_drops[k] = window_drops.get(k, 0) + v
    mib = 1024 * 1024
    return {
        "streams": args.streams, "fps": args.fps, "seconds": args.seconds, "mode": args.mode,
        "streams_completed": len(ends), "failures": failures[:5],
        "frames_sent": sum(o.frames_sent for o in ok), "frames_received_by_server": received,
        "frames_processed": sum(e["frames"]["processed"] for e in ends),
        "drop_rate": dropped / received if received else None, "frame_drops": reasons,
        "windows_classified": sum(e["windows"]["classified"] for e in ends), "window_drops": window_drops,
        "results": sum(o.results for o in ok),
        "latency_ms": {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                       "mean": statistics.fmean(latencies) if latencies else None},
        "closes": sorted({o.close for o in ok}),
        "memory_mib": {"before": before and before / mib, "peak": max(samples, default=0) / mib,
                       "after": after and after / mib},
        "server_healthy_after": healthy,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mode", default="faces", choices=("faces", "aligned"))
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after the streams before measuring")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of 2 streams before measuring memory")
    parser.add_argument("--api-key")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    lat, mem = figures["latency_ms"], figures["memory_mib"]
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
    print(
        f"{figures['streams']} streams x {figures['fps']:g} fps x {figures['seconds']:g} s ({figures['mode']}): "
        f"{figures['streams_completed']} completed, {figures['frames_sent']} frames sent, "
        f"{figures['frames_processed']} processed, drop rate {100 * (figures['drop_rate'] or 0):.1f}% "
        f"{figures['frame_drops']}\n"
        f"results {figures['results']} (windows dropped {figures['window_drops']}), frame-to-result latency "
        f"p50 {fmt(lat['p50'])} ms p95 {fmt(lat['p95'])} ms\n"
        f"server memory before {fmt(mem['before'])} MiB, peak {fmt(mem['peak'])} MiB, after {fmt(mem['after'])} MiB; "
        f"healthy after: {figures['server_healthy_after']}; closes {figures['closes']}"
        + (f"\nfailures: {figures['failures']}" if figures["failures"] else "")
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0 if figures["server_healthy_after"] and not figures["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
