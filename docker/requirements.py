"""Print the requirements of the project's base install plus the named extras, one per line (for pip -r).

The image build installs dependencies from this list before it copies the source, so the dependency layers are
rebuilt only when pyproject.toml changes. Usage: python requirements.py [EXTRA ...] > requirements.txt
"""

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    out = list(project["dependencies"])
    for extra in extras:
        out += [r for r in optional[extra] if r not in out]
    return out


def find_pyproject() -> Path:
    """Next to this script (the image build copies both into one folder), else the repository root."""
    here = Path(__file__).resolve().parent
    return next(p for p in (here / "pyproject.toml", here.parent / "pyproject.toml") if p.is_file())


if __name__ == "__main__":
    print("\n".join(requirements(find_pyproject(), sys.argv[1:])))
