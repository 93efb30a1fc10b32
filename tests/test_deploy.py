"""Deployment files, checked without a Docker daemon: the Dockerfile statically, compose.yaml by docker-compose.

Dockerfile: every COPY source exists and is in the build context, the runtime images' entry point is a real command,
they run as a non-root user with a HEALTHCHECK on /readyz, and nothing they install pulls in torch (checked on the
installed packages' metadata, transitively). compose.yaml: validated by docker-compose 1.29 from PyPI, installed once
into a cached virtual environment under the system temp folder (not a project dependency), plus structural checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
RUNTIME_STAGES = ("cpu", "gpu")
COMPOSE_VERSION = "1.29.2"
TORCH = {"torch", "torchvision", "torchaudio"}


# ---------------------------------------------------------------------------------------------------------------------
# A small Dockerfile reader: stages, instructions (continuations joined), build-argument defaults


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the line, continuations joined


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def read_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name) of a Dockerfile."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        current += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            stage = Stage(match.group(2) or f"stage{len(stages)}", match.group(1))
            stages[stage.name] = stage
        elif stage is None:
            assert keyword == "ARG", f"only ARG may come before the first FROM: {line}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stage.instructions.append(Instruction(keyword, rest))
    return args, stages


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY / ADD (shell form)."""
    words = shlex.split(instruction.args)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec (JSON) form: {instruction.args}"
    return value


def dockerignore_patterns() -> list[str]:
    path = REPO / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps a path (or a parent of it) out of the build context (no `!` rules used here)."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch(p, pat.strip("/")) for pat in patterns for p in prefixes)


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return read_dockerfile(REPO / "Dockerfile")


def stage_closure(stages: dict[str, Stage], name: str) -> list[str]:
    """The stage and every stage whose files it uses whole (FROM it, or COPY --from it more than /models)."""
    out, todo = [], [name]
    while todo:
        stage = stages[todo.pop()]
        if stage.name in out:
            continue
        out.append(stage.name)
        if stage.base in stages:
            todo.append(stage.base)
        for copy in stage.all("COPY"):
            flags, sources, _ = copy_parts(copy)
            if "from" in flags and flags["from"] in stages and sources != ["/models"]:
                todo.append(flags["from"])
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Dockerfile


def test_every_copy_source_exists_in_the_build_context(dockerfile):
    _, stages = dockerfile
    patterns = dockerignore_patterns()
    checked = optional = 0
    for stage in stages.values():
        for copy in stage.all("COPY") + stage.all("ADD"):
            flags, sources, _ = copy_parts(copy)
            if "from" in flags:
                assert flags["from"] in stages, f"COPY --from={flags['from']}: no such stage"
                continue
            for source in sources:
                if glob.has_magic(source):
                    # An optional source (`weights.lock.jso[n]`: nothing matched is no error), but BuildKit still
                    # needs the folder it is in, and what it matches must reach the build.
                    parent = (REPO / source).parent
                    assert parent.is_dir(), f"stage {stage.name}: {source}: no folder {parent.relative_to(REPO)}"
                    matches = [str(p.relative_to(REPO)) for p in REPO.glob(source)]
                    assert not [m for m in matches if ignored(m, patterns)], f"{source} is excluded by .dockerignore"
                    optional += 1
                    continue
                assert (REPO / source).exists(), f"stage {stage.name}: COPY source {source} does not exist"
                assert not ignored(source, patterns), f"stage {stage.name}: {source} is excluded by .dockerignore"
                checked += 1
    assert checked >= 10 and optional == 3  # the weights lock, the cpu and the gpu wheels


def test_runtime_images_start_the_service(dockerfile):
    """ENTRYPOINT `s2d` is the project's console script; CMD `serve` is a sub-command it has."""
    from s2d.cli import build_parser

    scripts = _pyproject()["project"]["scripts"]
    _, stages = dockerfile
    for name in RUNTIME_STAGES:
        stage = stages[name]
        (entrypoint,) = stage.all("ENTRYPOINT")
        (cmd,) = stage.all("CMD")
        command = exec_form(entrypoint) + exec_form(cmd)
        assert command[0] in scripts, f"{name}: {command[0]} is not a console script of the project"
        assert scripts[command[0]] == "s2d.cli:main"
        args = build_parser().parse_args(command[1:])
        assert args.func.__name__ == "cmd_serve"
        # the script exists because the stage installs the project (in place, so data files like the webcam page
        # and the card schema are found next to the code; setuptools from the environment, so no index is needed)
        assert any("pip install --no-deps --no-build-isolation -e ." in run.args for run in stage.all("RUN")), name


def test_weights_stage_commands_parse(dockerfile):
    """The builder's `s2d weights pull` / `s2d models list` lines name real sub-commands and options; a baked build
    is pinned by the lock copied from the build context unless trust on first use is asked for."""
    from s2d.cli import build_parser

    _, stages = dockerfile
    weights = stages["weights"]
    run = " ".join(r.args for r in weights.all("RUN"))
    assert "s2d weights pull" in run and "--lock /src/weights.lock.json" in run
    assert 'pin="--locked"' in run and '"$S2D_WEIGHTS_TRUST_ON_FIRST_USE" = 1 ]; then pin="--trust-unpinned"' in run
    assert any("weights.lock.jso[n]" in copy_parts(c)[1] for c in weights.all("COPY"))
    assert "S2D_WEIGHTS_TRUST_ON_FIRST_USE=0" in [a.args for a in weights.all("ARG")]
    parser = build_parser()
    for pin in ("--locked", "--trust-unpinned"):
        pull = parser.parse_args(["weights", "pull", "s2d-dfew", "--store", "/models", "--lock",
                                  "/src/weights.lock.json", "--variants", "fp32,fp16", pin])  # fmt: skip
        assert pull.func.__name__ == "cmd_weights_pull" and (pull.locked, pull.trust_unpinned) == (
            pin == "--locked",
            pin == "--trust-unpinned",
        )
    assert parser.parse_args(["models", "list", "--store", "/models"]).func.__name__ == "cmd_models_list"


def test_runtime_images_are_non_root_with_a_readiness_healthcheck(dockerfile):
    args, stages = dockerfile
    for name in RUNTIME_STAGES:
        stage = stages[name]
        user = stage.all("USER")[-1].args.split(":")[0]
        assert user not in ("root", "0"), f"{name} runs as {user}"
        (health,) = stage.all("HEALTHCHECK")
        assert "/readyz" in health.args and "CMD" in health.args
        assert "8000" in stage.all("EXPOSE")[-1].args
        env = " ".join(e.args for e in stage.all("ENV"))
        assert "S2D_HOST=0.0.0.0" in env and "S2D_MODEL_STORE=/models" in env
        assert [copy_parts(c)[1] for c in stage.all("COPY") if "--from=weights" in c.args] == [["/models"]]
    assert stages["gpu"].base == "${CUDA_IMAGE}" and args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert "runtime" in args["CUDA_IMAGE"] and "cudnn" in args["CUDA_IMAGE"]


def _extras_installed(stages: dict[str, Stage], name: str) -> list[str]:
    """The extras whose requirements the stage (and what it is built from) installs via docker/requirements.py."""
    extras = []
    for stage_name in stage_closure(stages, name):
        for run in stages[stage_name].all("RUN"):
            assert "torch" not in run.args.lower() or stage_name == "weights", f"{stage_name}: {run.args}"
            for match in re.finditer(r"requirements\.py\s+([^>]+?)\s*>", run.args):
                extras += [w for w in match.group(1).split() if not w.startswith("-")]  # options: --build-system ...
            for pip in re.finditer(r"pip install ([^&;]+)", run.args if stage_name != "weights" else ""):
                words = pip.group(1).split()
                in_place = ["--no-deps", "--no-build-isolation", "-e", "."]
                assert words == ["-r", "/tmp/build/requirements.txt"] or words == in_place, f"{stage_name}: {pip[0]}"
    return extras


def test_runtime_images_do_not_install_torch(dockerfile):
    sys.path.insert(0, str(REPO / "docker"))
    try:
        from requirements import requirements
    finally:
        sys.path.pop(0)
    _, stages = dockerfile
    assert "train" in _extras_installed(stages, "weights")  # the builder converts checkpoints with torch ...
    for name, onnxruntime in (("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu")):
        extras = _extras_installed(stages, name)
        assert extras == [name, "triton"], f"{name} installs extras {extras}"
        names = {Requirement(r).name.lower() for r in requirements(REPO / "pyproject.toml", extras)}
        assert not names & TORCH, f"{name}: {names & TORCH}"
        assert onnxruntime in names and ({"onnxruntime", "onnxruntime-gpu"} - {onnxruntime}).isdisjoint(names)
        assert "weights" not in stage_closure(stages, name)  # ... and only its /models reaches the runtime images


def _requires(name: str) -> list[Requirement]:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Requirement(r) for r in dist.requires or []]


def test_base_and_cpu_dependencies_are_torch_free_transitively():
    """Walk the installed metadata from the base + [cpu] requirements: no path reaches torch."""
    project = _pyproject()["project"]
    todo = [
        (Requirement(r), "pyproject.toml") for r in project["dependencies"] + project["optional-dependencies"]["cpu"]
    ]
    seen: dict[str, str] = {}  # package -> the package that required it
    while todo:
        req, parent = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        assert key not in TORCH, f"{key} is required by {parent}"
        seen[key] = parent
        environments = [{"extra": e} for e in req.extras] or [{"extra": ""}]
        for sub in _requires(req.name):
            if sub.marker is None or any(sub.marker.evaluate(env) for env in environments):
                todo.append((sub, key))
    assert {"fastapi", "onnxruntime", "numpy", "av"} <= set(seen)


def test_the_image_layout_serves_without_models_training_or_torch():
    """The runtime images have no torch: the service side imports neither s2d.models nor s2d.training."""
    code = (
        "import sys\n"
        "for name in ('torch', 's2d.models', 's2d.training', 'onnx'): sys.modules[name] = None\n"
        "from s2d.cli import build_parser\n"
        "import s2d.service.app, s2d.service.server, s2d.service.gpu\n"
        "s2d.service.app.create_app()\n"
        "build_parser().parse_args(['serve'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2D_")}
    env["S2D_MODEL_STORE"] = tempfile.gettempdir()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_requirements_script_refuses_unknown_extras():
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), "cpu", "nope"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "unknown extra" in result.stderr
    listed = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), "gpu"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "onnxruntime-gpu>=1.18" in listed and not any(r.startswith("torch") for r in listed)


def test_the_cpu_image_can_be_built_without_a_registry_or_an_index(dockerfile, tmp_path):
    """What docker/build_offline.sh relies on (tests/test_docker_image.py runs it): every base image is a build
    argument, no `# syntax=` line (that frontend image would come from a registry), and the cpu environment's list
    starts with --no-index when wheels are there, and has setuptools for the in-place install."""
    args, stages = dockerfile
    first = (REPO / "Dockerfile").read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first
    assert {s.base for s in stages.values()} <= {"${PYTHON_IMAGE}", "${CUDA_IMAGE}"} | set(stages)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-")
    script = [sys.executable, str(REPO / "docker" / "requirements.py"), "--build-system", f"--wheels={tmp_path}", "cpu"]
    assert "--no-index" not in subprocess.run(script, capture_output=True, text=True, check=True).stdout
    (tmp_path / "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl").touch()
    result = subprocess.run(script, capture_output=True, text=True, check=True)
    listed = result.stdout.splitlines()
    assert listed[:2] == ["--no-index", f"--find-links {tmp_path}"] and "setuptools>=77" in listed
    assert f"from the 1 wheels in {tmp_path} alone, no index" in result.stderr  # the build log says so
    assert "onnxruntime>=1.18" in listed


# ---------------------------------------------------------------------------------------------------------------------
# compose.yaml


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _compose_venv() -> Path:
    return Path(tempfile.gettempdir()) / f"s2d-docker-compose-{COMPOSE_VERSION}"


def _install_docker_compose() -> Path | str:
    """docker-compose from PyPI in a cached venv: its path, or why it could not be installed."""
    venv = _compose_venv()
    binary, marker = venv / "bin" / "docker-compose", venv / ".complete"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (parallel test runs)
        if marker.exists() and binary.exists():
            return binary
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        # docker-compose 1.29 pins PyYAML<6, whose sdist only builds with Cython<3 (no wheel for Python >= 3.11).
        constraint = venv / "constraints.txt"
        constraint.write_text("cython<3\n")
        env = {**os.environ, "PIP_CONSTRAINT": str(constraint), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        try:
            result = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", f"docker-compose=={COMPOSE_VERSION}"],
                env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "pip install docker-compose timed out"
        if result.returncode != 0:
            return f"pip install docker-compose=={COMPOSE_VERSION} failed (no PyPI?): {result.stderr.strip()[-500:]}"
        marker.touch()
        return binary


@pytest.fixture(scope="module")
def docker_compose() -> Path:
    """S2D_DOCKER_COMPOSE, else a docker-compose 1.29 on PATH, else the cached venv (installed on first use)."""
    given = os.environ.get("S2D_DOCKER_COMPOSE")
    if given:
        return Path(given)
    on_path = shutil.which("docker-compose")
    if on_path:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run([on_path, "version", "--short"], capture_output=True, text=True, timeout=30)
            if version.stdout.strip().startswith("1.29"):
                return Path(on_path)
    binary = _install_docker_compose()
    if isinstance(binary, str):
        pytest.skip(binary)
    return binary


def _compose(docker_compose: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("S2D_", "COMPOSE_", "GRAFANA_", "PROMETHEUS_"))}
    return subprocess.run(
        [str(docker_compose), "--project-directory", str(REPO), "-f", str(REPO / "compose.yaml"), *args],
        cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_validates_with_docker_compose(docker_compose, profile):
    result = _compose(docker_compose, "--profile", profile, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    # docker-compose 1.29 prints every service; profiles pick the service at `up`: gpu or cpu, monitoring always.
    assert {name: s.get("profiles") for name, s in services.items()} == {
        "s2d-gpu": ["gpu"], "s2d-cpu": ["cpu"], "prometheus": None, "grafana": None,
        "s2d-replica": ["scale"], "nginx": ["scale"],
    }  # fmt: skip
    s2d = services[f"s2d-{profile}"]
    assert s2d["build"]["target"] == profile and s2d["restart"] == "unless-stopped"
    assert s2d["environment"]["S2D_PROVIDERS"] == ("cuda,cpu" if profile == "gpu" else "cpu")
    assert any(v.startswith("model-store:/models") for v in s2d["volumes"])
    if profile == "gpu":
        (device,) = s2d["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia" and device["device_ids"] == ["0"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_compose_second_gpu_override(docker_compose):
    """docker/compose.gpus.yaml adds a process on GPU 1 behind the same alias; S2D_GPU moves the first one."""
    result = _compose(docker_compose, "-f", str(REPO / "docker/compose.gpus.yaml"), "--profile", "gpu", "config",
                      env={"S2D_GPU": "2"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    devices = {
        name: services[name]["deploy"]["resources"]["reservations"]["devices"] for name in ("s2d-gpu", "s2d-gpu1")
    }
    assert devices == {
        "s2d-gpu": [{"driver": "nvidia", "device_ids": ["2"], "capabilities": ["gpu"]}],
        "s2d-gpu1": [{"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}],
    }
    assert services["s2d-gpu1"]["networks"]["default"]["aliases"] == ["s2d-api"]


def test_compose_model_store_can_be_a_host_folder(docker_compose, tmp_path):
    result = _compose(docker_compose, "--profile", "cpu", "config", env={"S2D_MODEL_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    volumes = yaml.safe_load(result.stdout)["services"]["s2d-cpu"]["volumes"]
    assert f"{tmp_path}:/models:rw" in volumes


def test_compose_structure_matches_the_monitoring_files():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
    for name in ("s2d-gpu", "s2d-cpu"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert "s2d-api" in services[name]["networks"]["default"]["aliases"]
    # Prometheus discovers the replicas by the alias the service containers carry.
    prometheus = yaml.safe_load((REPO / "docker/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "s2d"]
    assert job["dns_sd_configs"][0]["names"] == ["s2d-api"] and job["dns_sd_configs"][0]["port"] == 8000
    # Every host path mounted exists; the dashboard folder is the one the provider reads.
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
            if source == "./docker/grafana/dashboards":
                provider = yaml.safe_load((REPO / "docker/grafana/provisioning/dashboards/s2d.yml").read_text())
                assert provider["providers"][0]["options"]["path"] == target


def test_the_cpu_image_installs_pinned_versions(dockerfile, tmp_path):
    """docker/constraints-cpu.txt pins every requirement of what the cpu image installs (base + cpu + triton +
    build system) at a version the requirement allows; the cpu-build stage and requirements.py use it."""
    from packaging.version import Version

    sys.path.insert(0, str(REPO / "docker"))
    try:
        from requirements import requirements
    finally:
        sys.path.pop(0)
    constraints = REPO / "docker" / "constraints-cpu.txt"
    lines = [line for line in constraints.read_text().splitlines() if line and not line.startswith("#")]
    pins = {Requirement(line).name.lower().replace("_", "-"): Requirement(line) for line in lines}
    assert all(len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==" for pin in pins.values())
    for line in requirements(REPO / "pyproject.toml", ["cpu", "triton"], build_system=True):
        wanted = Requirement(line)
        pin = pins.get(wanted.name.lower().replace("_", "-"))
        assert pin is not None, f"{wanted.name} is not pinned in {constraints.name}"
        assert wanted.specifier.contains(Version(next(iter(pin.specifier)).version)), f"{pin} against {wanted}"
    _, stages = dockerfile
    (copy,) = [c for c in stages["cpu-build"].all("COPY") if "requirements.py" in c.args]
    assert "docker/constraints-cpu.txt" in copy.args.split()
    (run,) = [r for r in stages["cpu-build"].all("RUN") if "requirements.py" in r.args]
    assert "--constraints=/tmp/build/constraints-cpu.txt" in run.args.split()
    script = [sys.executable, str(REPO / "docker" / "requirements.py"), "cpu"]
    listed = subprocess.run([*script, f"--constraints={constraints}"], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines()[0] == f"-c {constraints}"
    missing = subprocess.run([*script, f"--constraints={tmp_path / 'none.txt'}"], capture_output=True, text=True)
    assert missing.returncode != 0 and "no constraints file" in missing.stderr
