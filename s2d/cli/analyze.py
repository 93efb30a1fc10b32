"""`s2d analyze INPUT... -o OUT`: many videos through the service's pipeline into a Parquet dataset (s2d.batch)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from s2d.cli.common import add_pipeline_args, pipeline_options, pipeline_settings

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def cmd_analyze(args: argparse.Namespace) -> int:
    try:
        from s2d.batch import inputs
        from s2d.batch.inputs import InputError
        from s2d.batch.run import check_manifest_columns
    except ImportError as err:  # the [batch] extra is not installed
        print(f"error: s2d analyze needs the [batch] extra (pip install 's2d[batch]'): {err}", file=sys.stderr)
        return 2

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        videos = inputs.expand_inputs(args.inputs)
        check_manifest_columns(videos)
        spans = inputs.read_spans(Path(args.labels)) if args.labels else inputs.manifest_spans(videos)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _analyze(args, videos, spans)


def _analyze(args: argparse.Namespace, videos, spans) -> int:
    from s2d.batch import run, tables
    from s2d.batch.accuracy import write_metrics
    from s2d.service.schemas import ClassifyOptions

    settings, models = _settings(args)
    classes = {name: _store(settings).get(name).card.classes for name in models}
    run.check_labels(spans, classes)  # an unknown label: a ValueError (exit 2) before any work
    options = [ClassifyOptions(**pipeline_options(args, name)).model_dump() for name in models]
    out = Path(args.output)
    summary = run.run_batch(_pool(args, settings), videos, options, settings, out, args.format)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or "nothing new"
    print(f"{out}: {counts}; {summary.skipped} done before" + (f"; {summary.left} left" if summary.left else ""))
    if summary.interrupted:
        print("interrupted: run the same command again to analyse the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    if spans:
        runs = {o["model"]: (run.run_key(settings, o["model"], o), classes[o["model"]]) for o in options}
        metrics = write_metrics(out, tables.load(out).windows, spans, runs)
        for name, m in metrics.items():
            war, uar = (f"{100 * m[k]:.1f}%" if m[k] is not None else "-" for k in ("war", "uar"))
            print(f"{name}: WAR {war}, UAR {uar} on {m['samples']} labelled samples ({m['unscored']} unscored)")
    return EXIT_FAILED if summary.counts["failed"] else 0


def _store(settings):
    from s2d.store import ModelStore

    return ModelStore(settings.model_store)


def _settings(args: argparse.Namespace):
    """The service settings the workers load (their models only, one engine thread per worker's share of the cores,
    no limit on a video's length: memory is bounded by the window, not the video; each worker times the engines at
    start, as the service's warm-up does, unless --no-engine-trial) and the models' names."""
    settings = pipeline_settings(args, max_video_seconds=7 * 24 * 3600.0, engine_trial=not args.no_engine_trial)
    models = args.model or [_store(settings).default().name]
    threads = 1 if args.ray else max(1, len(os.sched_getaffinity(0)) // _workers(args))
    return settings.model_copy(update={"models": models, "intra_op_threads": threads}), models


def _workers(args: argparse.Namespace) -> int:
    return args.workers or len(os.sched_getaffinity(0))  # the cores this process may use (a container's share)


def _pool(args: argparse.Namespace, settings):
    if args.ray:
        from s2d.batch.ray_pool import RayPool

        try:
            return RayPool(settings, args.ray, args.workers, args.gpus_per_worker, args.retries)
        except ImportError as err:
            raise ValueError(f"--ray needs the [ray] extra (pip install 's2d[ray]'): {err}") from err
        except ConnectionError as err:
            raise ValueError(f"cannot reach the Ray cluster at {args.ray}: {err}") from err
    from s2d.batch.local import LocalPool

    return LocalPool(settings, _workers(args))


def add_commands(commands) -> None:
    p = commands.add_parser(
        "analyze", help="many videos to a Parquet dataset (files, folders, globs, manifests); resumable; local or Ray"
    )
    what = "video files, folders (recursive), globs, manifests (.csv with a path column, .txt)"
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=what)
    p.add_argument("-o", "--output", required=True, help="output folder (the dataset; a second run resumes it)")
    p.add_argument("--model", action="append", help="model name in the store; repeat to compare models (default: "
                   "the store's default model)")  # fmt: skip
    add_pipeline_args(p)
    p.add_argument("--format", default="parquet", choices=("parquet", "csv"), help="table files (default parquet)")
    p.add_argument("--labels", help="CSV of path,start,end,label spans to score (else a manifest's label column)")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core); with --ray: actors "
                   "(default: one per CPU of the cluster, or per GPU with --gpus-per-worker)")  # fmt: skip
    p.add_argument("--ray", metavar="ADDRESS", help="run on the Ray cluster at ADDRESS (host:port, or auto)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="with --ray: GPUs each actor holds")
    p.add_argument("--retries", type=int, default=3, help="with --ray: tries of a video after its node is lost")
    p.add_argument(
        "--no-engine-trial",
        action="store_true",
        help="run the card's variant on ONNX Runtime at once "
        "instead of timing the engines at each worker's start (ONNX Runtime's variants, OpenVINO: a few "
        "clips each) and running the fastest that agrees; the videos table's engine column says which",
    )
    p.set_defaults(func=cmd_analyze)
