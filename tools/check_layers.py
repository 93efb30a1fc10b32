"""The layering contracts of pyproject.toml ([tool.importlinter]), checked with import-linter.

The installed package maps the repository's top-level folders into one namespace (models/ is `s2d.models`, ...), but
import-linter reads packages from disk and needs the whole namespace in one folder. So this lays the sources out as
they are installed, in a temporary folder (copies of the .py files, by the package-dir mapping in pyproject.toml), and
runs `lint-imports` there with the project's own contracts.

    .venv/bin/python tools/check_layers.py        # exit status 0 when every contract holds
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def installed_layout(target: Path, repo: Path = REPO) -> Path:
    """Copy the package's .py files to `target` as `pip install` places them; returns `target`."""
    setuptools = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        destination = target.joinpath(*package.split("."))
        source = repo / folder
        for path in source.rglob("*.py"):
            relative = path.relative_to(source)
            if "__pycache__" in relative.parts:
                continue
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / relative)
    return target


def check(layout: Path, repo: Path = REPO) -> subprocess.CompletedProcess:
    """Run lint-imports on a laid-out tree with the project's contracts."""
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(layout)}
    return subprocess.run(
        [str(lint), str(repo / "pyproject.toml"), "--no-cache"],
        cwd=layout, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="s2d-layers-") as folder:
        result = check(installed_layout(Path(folder)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
