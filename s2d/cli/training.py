"""`s2d train`, `s2d eval` and `s2d export`: recipes, evaluation and the ONNX model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from s2d.cli.common import add_variant_args


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


def add_commands(commands) -> None:
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
