"""What several command groups share."""

from __future__ import annotations

import argparse


def add_variant_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--variants", default=default, help=f"ONNX variants among fp32,fp16,int8 (default {default})")
    p.add_argument("--int8-method", default="dynamic", choices=("dynamic", "static"), help="int8 quantisation")
