"""Load a running service with live streams: N WebSocket streams at F frames/s for S seconds, R rounds.

    python bench/load_streams.py --url http://127.0.0.1:8000 --streams 32 --fps 15 --seconds 60 --rounds 3

Every stream sends the standard clip of `bench/loadtest.py` (640x360, one real face: the scikit-image astronaut)
as JPEG frames in a loop, stamped with this process's clock, and reads every event. Per round it prints the
frame-to-result latency (p50/p95: result received minus the timestamp of the frame that completed the window; also
p50 per 10 s of the run, to show it stays bounded instead of growing), the server's drop rate (frames dropped /
received, from each stream's final `end` event), window drops, and the server's resident memory (Prometheus
`process_resident_memory_bytes`): at the round's start, its peak, just after the streams end, and after `--settle`
seconds idle.

Memory returns to baseline: the verdict line
-------------------------------------------
The baseline is the server's RSS after a warm-up (all N streams for `--warmup` s, then `--settle` s idle): first use
at full width creates what a server keeps for its lifetime whatever it serves next (a face detector per pipeline
thread, glibc's per-thread arenas at their working size, imported modules and caches), which is not per-stream
state. The server gives freed memory back to the OS 2 s after its last stream closes (`service.memory`: a full
garbage collection, then glibc `malloc_trim`), so `--settle` (default 5 s) must exceed that. PASS when every round's
settled RSS is within `--tolerance-mib` (default 16 MiB) of the baseline. Why 16 MiB: what may legitimately stay
is allocator slack, not state (pages glibc cannot trim because a small live allocation pins them, CPython's object
arenas); 16 MiB is 0.5 MiB per stream at 32 streams, less than one decoded 640x360 frame (0.66 MiB) each, so
keeping even one frame per closed stream fails it, as does any growth from round to round (several rounds tell
a leak, settled RSS climbing, from retention, a plateau). For scale: 32 streams raise the RSS by ~200 MiB at peak.
The exit status is 0 only with PASS, every stream completed and `/healthz` answering 200 after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx

from s2d.harness.measure import resident_bytes
from s2d.harness.streams import MIB, clip_frames, one_round, one_stream, round_line, stream_hello


async def run(args: argparse.Namespace) -> dict:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    frames = clip_frames()
    hello = stream_hello(args)
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        if args.warmup > 0:  # first use at full width: what the server keeps for life, not per-stream state
            start_at = time.monotonic() + 1.0
            await asyncio.gather(*(one_stream(args.url, args.api_key, hello, frames, args.fps, args.warmup, start_at)
                                   for _ in range(args.warmup_streams or args.streams)))  # fmt: skip
            await asyncio.sleep(args.settle)
        baseline = resident_bytes(client)
        rounds = []
        for i in range(args.rounds):
            rounds.append(await one_round(args, client, hello, frames))
            print(f"round {i + 1}/{args.rounds}: " + round_line(rounds[-1]), flush=True)
        healthy = client.get("/healthz").status_code == 200
    settled = [r["memory_mib"]["settled"] for r in rounds]
    base = baseline and baseline / MIB
    excess = max((s - base for s in settled if s is not None), default=None) if base else None
    passed = excess is not None and excess <= args.tolerance_mib and None not in settled
    return {
        "streams": args.streams, "fps": args.fps, "seconds": args.seconds, "mode": args.mode, "rounds": rounds,
        "warmup": {"seconds": args.warmup, "streams": args.warmup_streams or args.streams, "settle_s": args.settle},
        "memory": {"baseline_mib": base, "settled_mib": settled, "tolerance_mib": args.tolerance_mib,
                   "worst_excess_mib": excess, "returns_to_baseline": passed},
        "server_healthy_after": healthy,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the load; settled RSS per round shows leaks")
    parser.add_argument("--mode", default="faces", choices=("faces", "aligned"))
    parser.add_argument("--hop-seconds", type=float, help="step between windows (default: the server's, window / 2)")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the settled RSS (> 2 s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of streams before the baseline RSS")
    parser.add_argument("--warmup-streams", type=int, default=0, help="streams in the warm-up (0: --streams)")
    parser.add_argument("--tolerance-mib", type=float, default=16.0, help="settled RSS allowed above the baseline")
    parser.add_argument("--api-key")
    parser.add_argument("--out", help="also write the figures as JSON here (the report goes to artifacts/bench)")
    args = parser.parse_args(argv)
    print(f"{args.streams} streams x {args.fps:g} fps x {args.seconds:g} s ({args.mode}), {args.rounds} round(s) "
          f"against {args.url}", flush=True)  # fmt: skip
    figures = asyncio.run(run(args))
    mem = figures["memory"]
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    verdict = "PASS" if mem["returns_to_baseline"] else "FAIL"
    print(
        f"memory {verdict}: baseline {fmt(mem['baseline_mib'])} MiB, settled per round "
        f"{[round(v, 1) for v in mem['settled_mib'] if v is not None]} MiB, worst {fmt(mem['worst_excess_mib'])} MiB "
        f"above (tolerance {mem['tolerance_mib']:g} MiB); healthy after: {figures['server_healthy_after']}"
    )
    from s2d.harness.measure import write_report

    print(f"report: {write_report('load_streams', [figures])}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2))
    completed = all(r["streams_completed"] == args.streams and not r["failures"] for r in figures["rounds"])
    return 0 if figures["server_healthy_after"] and completed and mem["returns_to_baseline"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
