"""`s2d bench`: the benchmark suite of a source checkout (bench/suite.py), handed every argument."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_bench(argv: list[str]) -> int:
    """The benchmark suite (bench/suite.py, in a source checkout): every argument after `s2d bench` is its own."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "suite.py").exists():
        print("error: `s2d bench` runs from a source checkout (bench/ is not installed)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from bench.suite import main as suite_main

    return suite_main(argv)
