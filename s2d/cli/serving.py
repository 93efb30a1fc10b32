"""`s2d serve` and `s2d predict`: the service, and one video through the same pipeline, here or on a server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from s2d.cli.common import add_pipeline_args, pipeline_options, pipeline_settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the REST service (settings: S2D_* variables, --settings FILE, and the flags given here)."""
    from s2d.service.inference import ProviderUnavailableError
    from s2d.service.server import serve
    from s2d.service.settings import load_settings

    flags = (("host", args.host), ("port", args.port), ("model_store", args.store), ("providers", args.providers),
             ("engine", args.engine), ("triton_url", args.triton_url))  # fmt: skip
    overrides = {k: v for k, v in flags if v}
    try:
        serve(load_settings(args.settings, **overrides))
    except ProviderUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify one video: with the service pipeline here (no server), or by a running server (--server). Writes the
    JSON answer, a PNG timeline and optionally the annotated video."""
    source = Path(args.video)
    if not source.exists():
        raise FileNotFoundError(f"no such video or frame folder: {source}")
    options = pipeline_options(args, args.model)
    result = _predict_remote(source, options, args) if args.server else _predict_here(source, options, args)
    if isinstance(result, int):
        return result
    _write_outputs(result, source, args)
    return 0


def _predict_here(source: Path, options: dict, args: argparse.Namespace):
    """The ClassifyResponse from the pipeline in this process, or the exit status of a reported error."""
    from s2d.service.errors import ServiceError
    from s2d.service.inference import ProviderUnavailableError
    from s2d.service.predict import predict_video
    from s2d.service.schemas import ClassifyOptions

    settings = pipeline_settings(args, **({"models": [args.model]} if args.model else {}))
    if not args.model:  # load only the store's default model, not every model in it
        from s2d.store import ModelStore

        settings = settings.model_copy(update={"models": [ModelStore(settings.model_store).default().name]})
    try:
        return predict_video(source, settings, ClassifyOptions(**options), fps=args.fps)
    except ServiceError as err:  # media errors included: one family, each with its stable code
        print(f"error ({err.code}): {err.message}", file=sys.stderr)
        return 2
    except ProviderUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _predict_remote(source: Path, options: dict, args: argparse.Namespace):
    """The ClassifyResponse of the server at --server (the upload streamed from the file), or an exit status."""
    from s2d.client import Client, S2DError

    if source.is_dir():
        print("error: --server takes a video file; a frame folder is classified without --server", file=sys.stderr)
        return 2
    try:
        with Client(args.server, api_key=args.api_key) as client:
            return client.classify(source, **options)
    except S2DError as err:  # every refusal of the service, and no answer at all, with its code
        print(f"error ({err.code}): {err.message}", file=sys.stderr)
        return 2


def _write_outputs(result, source: Path, args: argparse.Namespace) -> None:
    from s2d.service.predict import annotate_video, plot_timeline

    out = Path(args.output or ".")
    out.mkdir(parents=True, exist_ok=True)
    stem = source.stem or "clip"
    json_path = out / f"{stem}.json"
    json_path.write_text(result.model_dump_json(indent=2))
    print(f"wrote {json_path}")
    for person in result.persons:
        s = person.summary
        print(f"person {person.track_id}: {s.dominant} ({s.num_windows} windows, {s.t_first:.1f}-{s.t_last:.1f} s)")
    print(f"model: {result.model.name} [{result.model.family}]: {result.model.family_description}")
    if not args.no_plot:
        try:
            print(f"wrote {plot_timeline(result, out / f'{stem}_timeline.png')}")
        except ImportError as err:
            print(f"warning: {err}", file=sys.stderr)
    if args.annotate:
        if source.is_dir():
            print("warning: --annotate needs a video file, not a frame folder", file=sys.stderr)
        else:
            print(f"wrote {annotate_video(source, result, out / f'{stem}_annotated.mp4')}")


def add_server_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """--server URL and --api-key (default $S2D_API_KEY), for the commands that talk to a running service."""
    parser.add_argument("--server", required=required, help="URL of a running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("S2D_API_KEY"), help="the service's key ($S2D_API_KEY)")


def add_commands(commands) -> None:
    serve = commands.add_parser("serve", help="start the REST service (settings from S2D_* variables or a file)")
    serve.add_argument("--settings", help="settings file: .toml (plain field names) or .env (S2D_ names)")
    serve.add_argument("--host", help="default 127.0.0.1 (S2D_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (S2D_PORT)")
    serve.add_argument("--store", help="model store folder (S2D_MODEL_STORE)")
    serve.add_argument("--providers", help="ONNX Runtime providers, comma-separated: cpu, cuda, tensorrt")
    serve.add_argument(
        "--engine",
        choices=("auto", "onnxruntime", "openvino", "triton"),
        help="where the models run; default auto: the fastest in-process engine meeting the agreement bar (S2D_ENGINE)",
    )
    serve.add_argument("--triton-url", help="Triton's gRPC host:port, with --engine triton (S2D_TRITON_URL)")
    serve.set_defaults(func=cmd_serve)

    predict = commands.add_parser("predict", help="classify the people in a video, here or on a server (JSON + PNG)")
    predict.add_argument("video", help="video file, or (with --mode aligned) a folder of aligned face frames")
    predict.add_argument("-o", "--output", help="output folder (default: the current folder)")
    predict.add_argument("--model", help="model name in the store (default: the store's default model)")
    add_pipeline_args(predict)
    predict.add_argument("--fps", type=float, default=25.0, help="frame rate of a frame folder (default 25)")
    predict.add_argument("--no-plot", action="store_true", help="skip the PNG timeline")
    predict.add_argument("--annotate", action="store_true", help="also write the video with boxes and labels")
    add_server_args(predict)
    predict.set_defaults(func=cmd_predict)
