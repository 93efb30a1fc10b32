"""`s2d` command line: one module per command group, each adding its commands (`add_commands`). Heavy imports
(torch) happen inside the sub-commands that need them, so the service side of the CLI works in an install without
torch."""

from __future__ import annotations

import argparse
import sys

from s2d.cli import analyze, bench, keys, model, serving, store, training, watch, weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2d", description="S2D facial expression recognition on video")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (model, training, store, weights, serving, analyze, watch, keys):
        group.add_commands(commands)
    # `s2d bench ...` is handed whole to bench/suite.py by main(); this entry is for `s2d -h`.
    commands.add_parser("bench", help="benchmark suite: [--quick|--full] [--only NAME ...] [--out DIR]", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return bench.cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as err:  # bad names, shapes or files: a message, no traceback
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
