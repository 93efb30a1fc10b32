"""`s2d bench`: the benchmark suite of a source checkout (bench/suite.py), handed every argument."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def cmd_bench(argv: list[str]) -> int:
    """The benchmark suite (bench/suite.py, in a source checkout): every argument after `s2d bench` is its own."""
    suite = Path(__file__).resolve().parents[2] / "bench" / "suite.py"
    if not suite.exists():
        print("error: `s2d bench` runs from a source checkout (bench/ is not installed)", file=sys.stderr)
        return 2
    # The suite is a script of the checkout, not a module of the package: run its file, then call its main.
    return runpy.run_path(str(suite), run_name="s2d_bench_suite")["main"](argv)
