"""Live capacity (issue 19): how many single-face streams one server holds at one window per second per track.

    python bench/live_capacity.py --url http://127.0.0.1:8000 --sweep 1,2,4,8,16,24 --seconds 30

For each stream count of `--sweep`, one round of `bench/load_streams.py` (the same streams: the standard one-face
640x360 clip as JPEG frames at `--fps`, the hello asking for `--hop-seconds`, default 1 s). A count is **held** when
the frame-to-result latency p95 is at most `--max-p95-ms` (1500) and the server classified at least
`--min-window-ratio` (0.9) of the windows the streams' duration allows (one per hop per stream, after the first
window fills), with every stream completing. Frames the server drops (it decodes and detects only what it can) are
counted and printed, and judged only with `--max-frame-drop` (a share, e.g. 0.33): a window is then also built from
enough distinct frames, where by default it may repeat the few that got through. The capacity is the largest
count held; the sweep stops after two counts in a row are not held. The model is whatever the server serves
(`/v1/models` is printed): run it once per model, e.g. s2d_base int8 and the per-frame baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from s2d.harness.measure import machine, write_report
from s2d.harness.streams import clip_frames, one_round, round_line, stream_hello


def expected_windows(seconds: float, window_s: float, hop_s: float) -> int:
    """Windows one stream of `seconds` can complete: the first when `window_s` of frames have come, then one per hop."""
    return max(0, int((seconds - window_s) // hop_s) + 1)


def served_model(client: httpx.Client) -> dict:
    """The default model's entry of /v1/models (streams use the default model)."""
    listing = client.get("/v1/models").json()
    return next(m for m in listing["models"] if m["name"] == listing["default"])


async def sweep(args: argparse.Namespace) -> list[dict]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    frames = clip_frames()
    hello = stream_hello(args)
    rows: list[dict] = []
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        model = served_model(client)
        window_s = float(model["card"]["window_seconds"])
        name, family, variant = model.get("name"), model.get("family"), model.get("variant")
        print(f"model: {name} ({family}, variant {variant}), window {window_s:g} s", flush=True)
        misses = 0
        for count in args.sweep:
            round_args = argparse.Namespace(**{**vars(args), "streams": count})
            started = time.monotonic()
            figures = await one_round(round_args, client, hello, frames)
            expected = count * expected_windows(args.seconds, window_s, args.hop_seconds)
            ratio = figures["windows_classified"] / expected if expected else 0.0
            p95 = figures["latency_ms"]["p95"]
            held = (
                figures["streams_completed"] == count
                and not figures["failures"]
                and p95 is not None
                and p95 <= args.max_p95_ms
                and ratio >= args.min_window_ratio
                and (figures["drop_rate"] or 0.0) <= args.max_frame_drop
            )
            rows.append({"streams": count, "held": held, "window_ratio": ratio, "windows_expected": expected,
                         "model": model, **figures})  # fmt: skip
            print(f"{count} streams: {'HELD' if held else 'not held'}, windows {figures['windows_classified']}/"
                  f"{expected} ({100 * ratio:.0f}%), {time.monotonic() - started:.0f} s\n  " + round_line(figures),
                  flush=True)  # fmt: skip
            misses = 0 if held else misses + 1
            if misses == 2:
                break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--sweep", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8, 16, 24, 32])
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each round's streams")
    parser.add_argument("--hop-seconds", type=float, default=1.0, help="one window per hop per track")
    parser.add_argument("--max-p95-ms", type=float, default=1500.0)
    parser.add_argument("--min-window-ratio", type=float, default=0.9)
    parser.add_argument("--max-frame-drop", type=float, default=1.0, help="share of frames the server may drop")
    parser.add_argument("--mode", default="faces", choices=("faces", "aligned"))
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds between rounds")
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; sweep {args.sweep} x {args.fps:g} fps x {args.seconds:g} s, "
          f"hop {args.hop_seconds:g} s, against {args.url}", flush=True)  # fmt: skip
    rows = asyncio.run(sweep(args))
    held = [r["streams"] for r in rows if r["held"]]
    capacity = max(held, default=0)
    frames = f", <= {100 * args.max_frame_drop:g}% of frames dropped" if args.max_frame_drop < 1 else ""
    print(f"capacity: {capacity} streams held (p95 <= {args.max_p95_ms:g} ms, >= {100 * args.min_window_ratio:g}% of "
          f"windows at one per {args.hop_seconds:g} s{frames})")  # fmt: skip
    print(f"report: {write_report('live_capacity', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
