"""Print the requirements of the project's base install plus the named extras, one per line (for pip -r).

The image build installs dependencies from this list before it copies the source, so the dependency layers are
rebuilt only when pyproject.toml changes. Usage:

    python requirements.py [--build-system] [--wheels=DIR] [EXTRA ...] > requirements.txt

--build-system adds the [build-system] requirements (setuptools), so the image can install the project in place
with --no-build-isolation, needing no index. --wheels=DIR: when DIR holds wheels (docker/build_offline.sh puts them
there), the list starts with `--no-index` and `--find-links DIR`, so pip installs from those wheels only.
--constraints=FILE adds `-c FILE`: every package at the version pinned there (docker/constraints-cpu.txt, which
`docker/build_offline.sh constraints` writes), so a build today and one next month install the same versions.
"""

import argparse
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str], build_system: bool = False) -> list[str]:
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    out = list(project["dependencies"])
    for extra in extras:
        out += [r for r in optional[extra] if r not in out]
    if build_system:
        out += [r for r in data["build-system"]["requires"] if r not in out]
    return out


def index_options(wheels: Path | None) -> list[str]:
    """pip options for the top of the list: only the local wheels, when there are any."""
    if wheels is None or not any(wheels.glob("*.whl")):
        return []
    return ["--no-index", f"--find-links {wheels}"]


def find_pyproject() -> Path:
    """Next to this script (the image build copies both into one folder), else the repository root."""
    here = Path(__file__).resolve().parent
    return next(p for p in (here / "pyproject.toml", here.parent / "pyproject.toml") if p.is_file())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml (cpu, gpu, train, ...)")
    parser.add_argument("--build-system", action="store_true", help="add the [build-system] requirements")
    parser.add_argument("--wheels", type=Path, metavar="DIR", help="install only from the wheels in DIR, if any")
    parser.add_argument("--constraints", type=Path, metavar="FILE", help="pin every package to FILE's versions")
    args = parser.parse_args()
    if args.constraints is not None and not args.constraints.is_file():
        raise SystemExit(f"no constraints file {args.constraints}")
    pins = [f"-c {args.constraints}"] if args.constraints is not None else []
    index = index_options(args.wheels)
    if index:  # said in the build log: wheels left in the build context make every later build offline, silently
        count = len(list(args.wheels.glob("*.whl")))
        print(f"requirements.py: pip installs from the {count} wheels in {args.wheels} alone, no index (docker/wheels/ "
              "in the build context; remove it to install from the index)", file=sys.stderr)  # fmt: skip
    lines = index + pins + requirements(find_pyproject(), args.extras, args.build_system)
    print("\n".join(lines))
