"""`s2d model`: list, inspect and run the PyTorch variants."""

from __future__ import annotations

import argparse
import json


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


def add_commands(commands) -> None:
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
