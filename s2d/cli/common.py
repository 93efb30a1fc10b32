"""What several command groups share."""

from __future__ import annotations

import argparse


def add_variant_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--variants", default=default, help=f"ONNX variants among fp32,fp16,int8 (default {default})")
    p.add_argument("--int8-method", default="dynamic", choices=("dynamic", "static"), help="int8 quantisation")


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The service pipeline's options, for the commands that run it here (`s2d predict`, `s2d analyze`)."""
    p.add_argument("--store", help="model store folder (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    p.add_argument("--mode", default="faces", choices=("faces", "aligned"), help="aligned: frames are face crops")
    p.add_argument("--window-seconds", type=float, help="default: the model card's")
    p.add_argument("--hop-seconds", type=float, help="default: half a window")
    p.add_argument("--smoothing", default="none", choices=("none", "ema"))
    p.add_argument("--ema-alpha", type=float, default=0.5)
    p.add_argument("--providers", help="ONNX Runtime providers, comma-separated (default cpu)")
    p.add_argument("--detector", help="face detector backend (default: mtcnn)")
    p.add_argument("--settings", help="service settings file (.toml or .env)")


def pipeline_settings(args: argparse.Namespace, **overrides):
    """The service settings of --settings and the flags of `add_pipeline_args`, without warm-up (a command line
    runs the card's variant at once)."""
    from s2d.service.settings import load_settings

    flags = {"model_store": args.store, "providers": args.providers, "detector": args.detector}
    return load_settings(args.settings, **({"warmup": False} | {k: v for k, v in flags.items() if v} | overrides))


def pipeline_options(args: argparse.Namespace, model: str | None) -> dict:
    """The ClassifyOptions fields the flags of `add_pipeline_args` ask for."""
    window = {"window_seconds": args.window_seconds, "hop_seconds": args.hop_seconds}
    return dict(model=model, mode=args.mode, **window, smoothing=args.smoothing, ema_alpha=args.ema_alpha)
