"""`s2d weights`: the authors' released weights, pinned by a lock, converted into the store."""

from __future__ import annotations

import argparse
import sys

from s2d.cli.common import add_variant_args


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
        locked=args.locked,
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
        locked=args.locked,
        **_export_options(args),
    )


def add_commands(commands) -> None:
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
        p.add_argument(
            "--locked",
            action="store_true",
            help="refuse anything neither the lock nor the registry pins: no trust on first use (baked image builds)",
        )
        add_variant_args(p, default="fp32,fp16,int8")
        p.set_defaults(func=cmd_weights_pull if action == "pull" else cmd_weights_import)
