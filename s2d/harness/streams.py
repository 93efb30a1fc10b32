"""Live-stream load from one process: N WebSocket streams of the standard single-face clip, each frame stamped with
this process's clock, and what the server said about them (bench/load_streams.py, bench/live_capacity.py,
bench/load_scale.py use it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from s2d.harness.measure import resident_bytes


@dataclass
class StreamOutcome:
    frames_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sent_s: list[float] = field(default_factory=list)  # when the frame of each latency was sent, s into the run
    results: int = 0
    end: dict | None = None
    close: str = ""
    errors: dict[str, int] = field(default_factory=dict)


def clip_frames(quality: int = 80) -> list[bytes]:
    """JPEG frames of the standard 2 s 640x360 single-face clip."""
    import cv2

    from s2d.harness.scenes import standard_clip
    from s2d.service.media import iter_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = standard_clip(Path(tmp) / "clip.mp4")
        frames = [f.image for f in iter_frames(path)]
    encode = [cv2.IMWRITE_JPEG_QUALITY, quality]
    return [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), encode)[1].tobytes() for f in frames]


async def one_stream(url: str, api_key: str | None, hello: dict, frames: list[bytes], fps: float, seconds: float,
                     start_at: float) -> StreamOutcome:  # fmt: skip
    from s2d.client import AsyncClient, S2DError, StreamClosed

    out = StreamOutcome()
    async with AsyncClient(url, api_key=api_key, timeout=60) as client:
        try:
            async with client.stream(**hello) as stream:

                async def read() -> None:
                    async for event in stream:
                        if event["type"] == "result":
                            out.results += 1
                            if event.get("frame_ts"):
                                out.latencies_ms.append(time.time() * 1000 - event["frame_ts"])
                                out.sent_s.append(event["frame_ts"] / 1000 - began_wall)
                        elif event["type"] == "error":
                            out.errors[event["code"]] = out.errors.get(event["code"], 0) + 1
                        elif event["type"] == "end":
                            out.end = event

                began_wall = time.time() + max(0.0, start_at - time.monotonic())
                reader = asyncio.create_task(read())
                await asyncio.sleep(max(0.0, start_at - time.monotonic()))
                began = time.monotonic()
                i = 0
                while time.monotonic() - began < seconds:
                    await stream.send_frame(frames[i % len(frames)], time.time() * 1000, i)
                    out.frames_sent += 1
                    i += 1
                    await asyncio.sleep(max(0.0, began + i / fps - time.monotonic()))
                await stream.send_end()
                try:
                    await asyncio.wait_for(reader, 60)
                except (TimeoutError, StreamClosed):
                    reader.cancel()
                code, reason = stream.closed or (None, "")
                out.close = f"{code} {reason}".strip()
        except S2DError as err:  # refused (1013 too many streams, 1008 key or hello) or unreachable
            out.close = f"refused: {err}"
    return out


async def sample_memory(client: httpx.Client, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        value = await asyncio.to_thread(resident_bytes, client)
        if value:
            samples.append(value)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


MIB = 1024 * 1024
SLICE_S = 10.0  # latency p50 per slice of the run (by the send time of the frame)


async def one_round(args: argparse.Namespace, client: httpx.Client, hello: dict, frames: list[bytes]) -> dict:
    start_rss = resident_bytes(client)
    samples: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(client, samples, stop))
    start_at = time.monotonic() + 1.0  # every stream starts sending together, after all have connected
    cpu_start, wall_start = time.process_time(), time.monotonic()
    outcomes = await asyncio.gather(
        *(one_stream(args.url, args.api_key, hello, frames, args.fps, args.seconds, start_at)
          for _ in range(args.streams)),
        return_exceptions=True,
    )  # fmt: skip
    generator_cpu_s, wall_s = time.process_time() - cpu_start, time.monotonic() - wall_start
    stop.set()
    await sampler
    after = resident_bytes(client)  # the streams are closed; the idle release has not run yet
    await asyncio.sleep(args.settle)
    settled = resident_bytes(client)
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
    slices: dict[int, list[float]] = {}
    for o in ok:
        for sent_s, latency in zip(o.sent_s, o.latencies_ms, strict=True):
            slices.setdefault(int(sent_s // SLICE_S), []).append(latency)
    mib = lambda v: v and v / MIB  # noqa: E731
    return {
        "streams_completed": len(ends), "failures": failures[:5],
        "frames_sent": sum(o.frames_sent for o in ok), "frames_received_by_server": received,
        "frames_processed": sum(e["frames"]["processed"] for e in ends),
        "drop_rate": dropped / received if received else None, "frame_drops": reasons,
        "windows_classified": sum(e["windows"]["classified"] for e in ends), "window_drops": window_drops,
        "results": sum(o.results for o in ok),
        "latency_ms": {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                       "mean": statistics.fmean(latencies) if latencies else None},
        "latency_p50_ms_by_slice": {f"{k * SLICE_S:g}-{(k + 1) * SLICE_S:g}s": percentile(v, 0.5)
                                    for k, v in sorted(slices.items())},
        "closes": sorted({o.close for o in ok}),
        # This process's own CPU while the streams ran (its frames are encoded once, before): what the load
        # generator took from a machine it shares with the server.
        "generator_cpu": {"seconds": generator_cpu_s, "share_of_machine": generator_cpu_s / (wall_s * os.cpu_count())},
        "memory_mib": {"start": mib(start_rss), "peak": mib(max(samples, default=0)), "after": mib(after),
                       "settled": mib(settled)},
    }  # fmt: skip


def stream_hello(args: argparse.Namespace) -> dict:
    hello = {"mode": args.mode, "fps": args.fps, "tracks_fps": 5}
    if getattr(args, "hop_seconds", None):
        hello["hop_seconds"] = args.hop_seconds
    return hello


def round_line(r: dict) -> str:
    lat, mem = r["latency_ms"], r["memory_mib"]
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
    slices = " ".join(f"{k} {fmt(v)}" for k, v in r["latency_p50_ms_by_slice"].items())
    return (
        f"{r['streams_completed']} streams completed, {r['frames_sent']} frames sent, {r['frames_processed']} "
        f"processed, drop rate {100 * (r['drop_rate'] or 0):.1f}% "
        f"{ {k: v for k, v in r['frame_drops'].items() if v} }\n"
        f"  results {r['results']} (windows dropped { {k: v for k, v in r['window_drops'].items() if v} }), "
        f"frame-to-result latency p50 {fmt(lat['p50'])} ms p95 {fmt(lat['p95'])} ms; p50 by 10 s: {slices}\n"
        f"  server RSS start {fmt(mem['start'])} MiB, peak {fmt(mem['peak'])}, after {fmt(mem['after'])}, "
        f"settled {fmt(mem['settled'])}; closes {r['closes']}\n"
        f"  load generator CPU {100 * r['generator_cpu']['share_of_machine']:.0f}% of the machine's cores"
        + (f"\n  failures: {r['failures']}" if r["failures"] else "")
    )
