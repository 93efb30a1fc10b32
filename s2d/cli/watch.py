"""`s2d watch SOURCE --server URL`: a webcam, a video file or a stream URL read here and sent to a running service
as a live stream (`/v1/stream`, through s2d.client); its events printed as JSON lines, and optionally the frames
sent, with the latest boxes and labels drawn, written as a video.

Without --server nothing starts: watching needs the service's stream endpoint (for a video file without a server,
`s2d predict` runs the same pipeline in this process). A file and an http(s) URL are sent in real time (as a camera
would), a webcam and an rtsp:// stream as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from s2d.cli.serving import add_server_args

NO_SERVER = ("error: s2d watch sends frames to a running service: give --server URL (`s2d serve` starts one); for a "
             "video file without a server, `s2d predict FILE` runs the same pipeline here")  # fmt: skip
SHOWN = {"result", "error", "end"}  # the events printed without --events all


def cmd_watch(args: argparse.Namespace) -> int:
    if not args.server:
        print(NO_SERVER, file=sys.stderr)
        return 2
    try:
        return asyncio.run(_watch(args))
    except KeyboardInterrupt:
        return 130


def _is_live(source: str) -> bool:
    return source.startswith("/dev/") or source.lower().startswith("rtsp")


def _frames(source: str, fps: float) -> Iterator:
    """`service.media.Frame`s of the source at `fps` (every frame decoded, only those taken converted)."""
    from s2d.service.media import MediaLimits, container_frames, iter_frames, open_url
    from s2d.service.schemas import SourceOptions
    from s2d.service.sources import ffmpeg_options

    limits = MediaLimits(max_duration_s=math.inf, max_bytes=None)
    if source.startswith("/dev/"):
        container = open_url(source, format="v4l2", limits=limits)
    elif "://" in source:
        container = open_url(source, limits=limits, options=ffmpeg_options(source, SourceOptions()), timeout=(10, 10))
    else:
        yield from iter_frames(Path(source), limits=limits, max_fps=fps)
        return
    with container:
        yield from container_frames(container, limits=limits, max_fps=fps)


async def _watch(args: argparse.Namespace) -> int:
    from s2d.client import AsyncClient, S2DError

    overlay: dict[int, tuple[list[float], str]] = {}  # track id -> (box, label): what --annotate draws
    writer = _Annotated(Path(args.annotate), args.fps) if args.annotate else None
    try:
        async with AsyncClient(args.server, api_key=args.api_key) as client, client.stream(
            model=args.model, mode=args.mode, fps=args.fps, smoothing=args.smoothing
        ) as stream:  # fmt: skip
            _show(stream.ready, args)
            printer = asyncio.create_task(_print_events(stream, args, overlay))
            try:
                await _send(stream, _frames(args.source, args.fps), args, overlay, writer, printer)
                if not printer.done():
                    await stream.send_end()
                await printer  # until the `end` event and the close (or the error that stopped the stream)
            finally:
                printer.cancel()
    except S2DError as err:
        print(f"error ({err.code}): {err.message}", file=sys.stderr)
        return 2
    finally:
        if writer is not None:
            writer.close()
    return 0


async def _send(stream, frames: Iterator, args, overlay: dict, writer, printer: asyncio.Task) -> None:
    """Each frame, paced in real time for files and http(s) URLs, until the source ends or --seconds."""
    pace = not args.no_pace and not _is_live(args.source)
    started = time.monotonic()
    while not printer.done() and (frame := await asyncio.to_thread(next, frames, None)) is not None:
        if args.seconds and frame.t > args.seconds:
            break
        if pace:
            await asyncio.sleep(max(0.0, started + frame.t - time.monotonic()))
        await stream.send_image(frame.image, ts_ms=frame.t * 1000)
        if writer is not None:
            writer.write(frame.image, overlay)


async def _print_events(stream, args, overlay: dict) -> None:
    async for event in stream:
        kind = event["type"]
        if kind == "result":
            shown = event["smoothed"] or event
            label = f"#{event['track_id']} {shown['label']} {shown['confidence']:.2f}"
            overlay[event["track_id"]] = (event["box"], label)
        elif kind == "tracks":
            live = {t["track_id"]: t["box"] for t in event["tracks"]}
            for track_id in list(overlay):
                if track_id not in live:
                    del overlay[track_id]  # gone from the picture
                else:
                    overlay[track_id] = (live[track_id], overlay[track_id][1])
        _show(event, args)


def _show(event: dict | None, args) -> None:
    if event is not None and (args.events == "all" or event["type"] in SHOWN):
        print(json.dumps(event), flush=True)


class _Annotated:
    """The frames sent, with each track's latest box and label, as an H.264 mp4."""

    def __init__(self, path: Path, fps: float):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.fps, self.stream = av.open(str(path), "w"), fps, None

    def write(self, image, overlay: dict) -> None:
        import av
        import cv2

        if self.stream is None:
            self.stream = self.out.add_stream("libx264", rate=round(self.fps))
            self.stream.height, self.stream.width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
            self.stream.pix_fmt, self.stream.options = "yuv420p", {"preset": "veryfast"}
        image = image[: self.stream.height, : self.stream.width].copy()
        for box, label in overlay.values():
            x1, y1, x2, y2 = (int(v) for v in box)
            cv2.rectangle(image, (x1, y1), (x2, y2), (40, 220, 90), 2)
            cv2.putText(image, label, (x1, max(y1 - 6, 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 220, 90), 1)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self.out.mux(packet)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # nothing written yet: no stream to flush
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.out.mux(packet)
        self.out.close()


def add_commands(commands) -> None:
    watch = commands.add_parser(
        "watch", help="stream a webcam (/dev/video0), a video file or a URL to a server; its results as JSON lines"
    )
    watch.add_argument("source", help="/dev/videoN (a V4L2 webcam), a video file, or an rtsp:// or http(s):// URL")
    add_server_args(watch)
    watch.add_argument("--model", help="model name (default: the server's default model)")
    watch.add_argument("--mode", default="faces", choices=("faces", "aligned"))
    watch.add_argument("--fps", type=float, default=10.0, help="frames per second taken and sent (default 10)")
    watch.add_argument("--smoothing", default="ema", choices=("none", "ema"))
    watch.add_argument("--events", default="results", choices=("results", "all"),
                       help="print results, errors and the end (default), or every event")  # fmt: skip
    watch.add_argument("--seconds", type=float, default=0.0, help="stop after this much media time (0: to the end)")
    watch.add_argument("--no-pace", action="store_true", help="send a file as fast as the stream takes it")
    watch.add_argument("--annotate", metavar="OUT.mp4", help="also write the frames sent with boxes and labels")
    watch.set_defaults(func=cmd_watch)
