"""The layering contracts of pyproject.toml hold, and adding a forbidden import breaks the check (import-linter on the
sources laid out as installed: tools/check_layers.py)."""

from __future__ import annotations

import pytest

from tools.check_layers import check, installed_layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return installed_layout(tmp_path_factory.mktemp("layers"))


def test_every_layering_contract_holds(layout):
    result = check(layout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("s2d/service/app.py", "import torch", "The service never imports torch"),
        ("s2d/service/routes/models.py", "from s2d.training import export", "The service never imports torch"),
        ("s2d/models/vit.py", "from s2d.service import schemas", "Layers"),
        ("s2d/card.py", "import s2d.store", "Layers"),
        ("s2d/service/metrics.py", "from s2d.service import app", "No import cycles"),
    ],
)
def test_a_forbidden_import_breaks_the_check(tmp_path, module, line, broken):
    layout = installed_layout(tmp_path)
    path = layout / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    result = check(layout)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout.split("Broken contracts")[-1], result.stdout


def test_the_wheel_holds_one_top_level_name_and_the_service_data(tmp_path):
    """`pip install .` adds `s2d` and nothing else (no top-level `models`, `training` or `service`)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from tools.check_layers import REPO

    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info folders behind
    for name in ("s2d", "models", "training", "service"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source)]
    subprocess.run([*build, "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("s2d-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"s2d"}
    for module in ("s2d/models/s2d.py", "s2d/training/train.py", "s2d/service/app.py", "s2d/cli/__init__.py"):
        assert module in names
    assert "s2d/service/static/index.html" in names and "s2d/card.schema.json" in names


def test_benchmarks_and_tools_never_import_the_test_suite():
    import ast

    from tools.check_layers import REPO

    offenders = []
    for path in [*REPO.glob("bench/*.py"), *REPO.glob("tools/*.py"), *REPO.glob("deploy/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert not offenders, offenders
