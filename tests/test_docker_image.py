"""The cpu image built and run for real: Debian's dockerd, a Debian base image made with debootstrap, the Python
packages as wheels prepared on the host, all through docker/build_offline.sh (the documented build for machines with
neither an image registry nor PyPI, which is this one), then the container serving a tiny exported model.

The container runs as Kubernetes runs it (deploy/k8s): read-only root filesystem with a tmpfs /tmp, no capabilities,
the model store mounted read-only. Checked from outside: /readyz, /v1/classify on a clip (aligned) and on real faces
(the detector inside the image), /metrics, the user it runs as, Docker's own HEALTHCHECK status, no torch in the
image, and a clean stop on SIGTERM. A build that would bake weights in without a weights lock is refused.

Cached between runs: the base image (made once; debootstrap takes about a minute), the wheels (under the system temp
folder, made again when the requirements change), and Docker's layer cache. On a clean machine all of it is made.
Skipped, with the reason, only when docker.io or debootstrap is missing or the daemon cannot be started
(`make setup-ops` installs both as root).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.faces_helpers import moving_faces, write_video
from tests.service_helpers import TEST_CLASSES, TEST_MODEL, build_store, make_video

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "docker" / "build_offline.sh"
IMAGE = "s2d-test:cpu"
BASE_IMAGE = "local/s2d-debian:bookworm"  # the script's default: one base image for the test and for users
HINT = "apt-get install -y docker.io debootstrap as root (make setup-ops does)"
USER = "10001"


def _run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def _daemon_answers(cli: str) -> bool:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        return _run(cli, "info", "--format", "{{.ServerVersion}}", timeout=30).returncode == 0
    return False


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


@pytest.fixture(scope="module")
def docker():
    """The docker CLI with a daemon answering: the running one, else a dockerd started here (and stopped after)."""
    cli = shutil.which("docker")
    if cli is None:
        pytest.skip(f"no docker CLI: {HINT}")
    if _daemon_answers(cli):
        yield cli
        return
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd", os.X_OK) else None)
    if dockerd is None:
        pytest.skip(f"no Docker daemon running and no dockerd: {HINT}")
    if os.geteuid() != 0:
        pytest.skip("no Docker daemon running, and dockerd needs root to start")
    log = Path(tempfile.gettempdir()) / "s2d-test-dockerd.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _daemon_answers(cli):
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"dockerd did not start (exit {daemon.poll()}); its log ends:\n{_tail(log)}")
            time.sleep(0.5)
        yield cli
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _wheels_env() -> dict[str, str]:
    """Wheels kept out of the checkout (wheels in docker/wheels/cpu would make every later cpu build of it use
    them), unless the checkout has its own there."""
    if (REPO / "docker" / "wheels" / "cpu").exists():
        return {}
    return {"S2D_WHEELS": str(Path(tempfile.gettempdir()) / "s2d-docker-wheels-cpu")}


@contextlib.contextmanager
def _build_lock():
    """One build at a time: parallel test runs share the base image, the wheels and docker/wheels/cpu."""
    with open(Path(tempfile.gettempdir()) / "s2d-docker-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def image(docker) -> str:
    """docker/build_offline.sh: the base image (unless there), the wheels (unless current), the cpu image."""
    has_base = _run(docker, "image", "inspect", BASE_IMAGE).returncode == 0
    tools = [
        shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin") for tool in ("mmdebstrap", "debootstrap")
    ]
    if not has_base and not any(tools):
        pytest.skip(f"no base image {BASE_IMAGE} and no debootstrap to make it: {HINT}")
    env = {**os.environ, "S2D_IMAGE": IMAGE, "S2D_BASE_IMAGE": BASE_IMAGE, "PYTHON": sys.executable}
    env.update(_wheels_env())
    with _build_lock():
        result = _run(str(BUILD), "all", env=env, cwd=REPO, timeout=1200)
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{result.stdout[-3000:]}"
    return IMAGE


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = build_store(str(tmp_path_factory.mktemp("docker-store")))
    for path in (root, *root.rglob("*")):  # readable by the container's user (pytest's folders are 0700)
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _wait_until_ready(docker: str, name: str, url: str, timeout_s: float = 300) -> None:
    """Until the container's /readyz answers 200; fails with its log if it stops or takes longer."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = _run(docker, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"container {state}:\n{_run(docker, 'logs', name).stderr[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        assert time.monotonic() < deadline, f"not ready:\n{_run(docker, 'logs', name).stderr[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def container(docker, image, store):
    """The image, run as Kubernetes runs it; its name and URL once /readyz answers 200."""
    name = f"s2d-test-{uuid.uuid4().hex[:8]}"
    started = _run(
        docker, "run", "--detach", "--name", name,
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{store}:/models:ro", "--publish", "127.0.0.1::8000",
        "--env", "S2D_MAX_BATCH=2", "--env", "S2D_INTRA_OP_THREADS=1", "--env", "S2D_PIPELINE_THREADS=1",
        # the image carries OpenVINO (the faces still run on ONNX Runtime); its cache on the one writable folder
        "--env", "S2D_ENGINE=openvino", "--env", "S2D_OPENVINO_CACHE_DIR=/tmp/openvino",
        # the image's own HEALTHCHECK command, polled more often than its 15 s so the test need not wait long
        "--health-interval", "1s", "--health-start-period", "120s",
        image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        port = _run(docker, "port", name, "8000/tcp").stdout.split()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        _wait_until_ready(docker, name, url)
        yield name, url
    finally:
        _run(docker, "rm", "--force", name)


def test_the_container_is_ready_healthy_and_unprivileged(docker, container):
    name, url = container
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "models": [TEST_MODEL]}
    deadline = time.monotonic() + 120  # Docker runs the HEALTHCHECK every second (--health-interval above)
    while (health := _run(docker, "inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()) != "healthy":
        assert health == "starting" and time.monotonic() < deadline, health
        time.sleep(0.2)
    assert _run(docker, "inspect", "--format", "{{.Config.User}}", name).stdout.strip() == f"{USER}:{USER}"
    assert _run(docker, "exec", name, "id", "-u").stdout.strip() == USER  # what the process runs as
    no_torch = "import importlib.util as u; print([m for m in ('torch', 'onnx') if u.find_spec(m)])"
    assert _run(docker, "exec", name, "python", "-c", no_torch).stdout.strip() == "[]"


def test_the_container_classifies_a_clip_and_real_faces(container, tmp_path):
    _, url = container
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0, fps=8, seed=1)
    faces = write_video(tmp_path / "faces.mp4", moving_faces(30, crossing=True), fps=20.0)
    with httpx.Client(base_url=url, timeout=120) as client:
        aligned = client.post("/v1/classify", params={"mode": "aligned"}, files={"file": ("c.mp4", clip.read_bytes())})
        found = client.post("/v1/classify", params={"mode": "faces"}, files={"file": ("f.mp4", faces.read_bytes())})
    assert aligned.status_code == 200, aligned.text
    body = aligned.json()
    assert body["model"]["name"] == TEST_MODEL and body["model"]["provider"] == "openvino-cpu"
    (person,) = body["persons"]
    assert len(person["windows"]) == 3
    for window in person["windows"]:
        assert set(window["probs"]) == set(TEST_CLASSES) and abs(sum(window["probs"].values()) - 1) < 1e-4
    assert found.status_code == 200, found.text
    assert found.json()["video"]["faces_detected"] > 0 and found.json()["persons"]  # MTCNN runs in the image


def test_the_container_exports_its_metrics(container):
    _, url = container
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/v1/classify", files={"file": ("x.mp4", b"not a video")}).status_code == 400
        text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("s2d_ready", ())] == 1
    info = [labels for (metric, labels), value in samples.items() if metric == "s2d_model_info" and value == 1]
    assert [dict(labels)["model"] for labels in info] == [TEST_MODEL]
    errors = {
        dict(labels).get("code"): value for (metric, labels), value in samples.items() if metric == "s2d_errors_total"
    }
    assert sum(errors.values()) >= 1


def test_the_image_serves_in_front_of_a_triton_engine(docker, image, store, tmp_path):
    """The image's [triton] extra: the container, on the host's network, sends its batches to a KServe v2 peer on
    the host (tests/kserve_server.py, not Triton) serving the repository `s2d models triton` writes."""
    pytest.importorskip("tritonclient.grpc", reason="the [triton] extra is not installed on the host")
    from s2d.harness.server import free_port
    from s2d.triton import write_triton_repository
    from tests.kserve_server import serving

    repository = tmp_path / "triton"
    write_triton_repository(store, repository)
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0, fps=8, seed=1)
    name, port = f"s2d-test-triton-{uuid.uuid4().hex[:8]}", free_port()
    with serving(repository) as peer:
        started = _run(
            docker, "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--volume", f"{store}:/models:ro", "--env", f"S2D_PORT={port}", "--env", "S2D_HOST=127.0.0.1",
            "--env", "S2D_MAX_BATCH=2", "--env", "S2D_PIPELINE_THREADS=1",
            image, "serve", "--engine", "triton", "--triton-url", peer.url,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_ready(docker, name, url)
            files = {"file": ("c.mp4", clip.read_bytes())}
            response = httpx.post(f"{url}/v1/classify", params={"mode": "aligned"}, files=files, timeout=120)
        finally:
            _run(docker, "rm", "--force", name)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["provider"] == "triton" and len(response.json()["persons"][0]["windows"]) == 3
    assert peer.calls[TEST_MODEL] >= 1  # the batches went to the peer


@pytest.mark.skipif((REPO / "weights.lock.json").exists(), reason="this checkout has a weights lock")
def test_baking_weights_in_without_a_lock_is_refused(image):
    """A build naming releases with no weights.lock.json in the context stops before installing anything."""
    env = {**os.environ, "S2D_IMAGE": "s2d-test:refused", "S2D_BASE_IMAGE": BASE_IMAGE, "PYTHON": sys.executable}
    env.update(_wheels_env())
    with _build_lock():
        result = _run(str(BUILD), "image", "--build-arg", "S2D_WEIGHTS=s2d-dfew", env=env, cwd=REPO, timeout=600)
    assert result.returncode != 0
    assert "S2D_WEIGHTS: no weights.lock.json in the build context" in result.stdout + result.stderr


def test_the_container_stops_cleanly_on_sigterm(docker, container):
    """`docker stop` sends SIGTERM to the service (PID 1): it drains and exits 0 well within the 30 s compose gives."""
    name, _ = container
    stopped = _run(docker, "stop", "--time", "30", name, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    state = _run(docker, "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name).stdout.split()
    assert state == ["0", "false"], _run(docker, "logs", name).stderr[-3000:]
