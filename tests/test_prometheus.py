"""A real Prometheus scrapes two real service processes; every PromQL expression of the Grafana dashboard returns data.

Two `s2d serve` processes (the deployment's one-process-per-GPU design: each process is its own scrape target with its
own registry) run on loopback with the tiny test model and an API key; Prometheus (the Debian `prometheus` package)
runs with the shipped `docker/prometheus/prometheus.yml`, its discovery swapped for the two loopback targets and a 1 s
scrape interval. The test uploads videos, provokes errors, opens a live stream when the WebSocket route exists, then
asks Prometheus' HTTP API for every expression in `docker/grafana/dashboards/s2d.json`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from s2d.harness.server import REPO, free_port, running_server, stop_process, wait_until_ready
from s2d.service.gpu import GpuCollector, install_gpu_metrics, nvml_selector, open_gpu
from tests.service_helpers import TEST_MODEL, make_video

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
INSTALL = "install it with `apt-get install -y prometheus` (Debian/Ubuntu; `make setup-ops` does it)"
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason=f"the Prometheus server binary is not on PATH: {INSTALL}"
)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=f"promtool is not on PATH: {INSTALL}")

DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "s2d.json"
PROMETHEUS_YML = REPO / "docker" / "prometheus" / "prometheus.yml"
API_KEY = "prom-test-key"
GPU_PREFIX = "s2d_gpu_"  # series that exist only on a process that runs on a GPU with NVML


# ---------------------------------------------------------------------------------------------------------------------
# Dashboard expressions


def dashboard_targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query target of every panel, rows included."""
    out = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            out.extend((panel["title"], t["expr"]) for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


def substitute(expr: str, rate_window: str) -> str:
    """Grafana's variables as the dashboard sees them with every instance selected; `rate_window` for the range."""
    expr = expr.replace("$__rate_interval", rate_window).replace("$__interval", "5s").replace("$__range", "5m")
    expr = expr.replace("$instance", ".*")
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# ---------------------------------------------------------------------------------------------------------------------
# Prometheus


class Prometheus:
    """A Prometheus server on loopback with its own data folder; `query` is an instant query."""

    def __init__(self, config: dict, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.log_path = workdir / "prometheus.log"

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until_ready(f"{self.url}/-/ready", self.process, self.log_path.read_text, timeout, "prometheus")

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict]:
        return httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.log.close()


def scrape_config(targets: list[str], key_file: Path) -> dict:
    """The shipped prometheus.yml, with the loopback targets instead of DNS discovery and a 1 s scrape interval."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "s2d"]
    assert "dns_sd_configs" in job, "the shipped config discovers replicas through DNS"
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": targets}]
    job["authorization"] = {"type": "Bearer", "credentials_file": str(key_file)}  # as its comment documents
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["scrape_configs"] = [job]
    return config


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: two servers, Prometheus, traffic


@pytest.fixture(scope="module")
def servers(store):
    settings = {"api_key": API_KEY, "max_batch": 4, "max_wait_ms": 50, "pipeline_threads": 1, "engine": "onnxruntime"}
    with running_server(store, **settings) as first, running_server(store, **settings) as second:
        yield [first, second]


@pytest.fixture(scope="module")
def prometheus(servers, tmp_path_factory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    key_file = workdir / "api_key"
    key_file.write_text(API_KEY)
    server = Prometheus(scrape_config([f"127.0.0.1:{s.port}" for s in servers], key_file), workdir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _classify(server, video: Path, **params) -> httpx.Response:
    with server.client() as client:
        return client.post(
            "/v1/classify",
            params={"mode": "aligned", **params},
            files={"file": (video.name, video.read_bytes(), "video/mp4")},
        )


def _stream(server) -> dict | None:
    """One short live stream on aligned frames with one out-of-order frame; None when there is no stream route."""
    try:
        import s2d.service.routes.stream  # noqa: F401 - the WebSocket route is part of this build
        from tests.stream_helpers import StreamClient, aligned_frames
    except ImportError:
        return None
    client = StreamClient(server.url, api_key=API_KEY)
    try:
        client.start(mode="aligned", fps=8)
        frames = aligned_frames(12)
        for seq, image in enumerate(frames):
            client.send_frame(image, ts_ms=1000 + seq * 125.0, seq=seq)
        client.send_frame(frames[0], ts_ms=1000.0, seq=len(frames))  # older than the last: dropped, out_of_order
        return client.finish()
    finally:
        client.close()


def _wait_for(prometheus: Prometheus, expr: str, value: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (got := prometheus.value(expr)) != value:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expr} = {got}, expected {value} after {timeout} s")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def traffic(servers, prometheus, tmp_path_factory) -> dict:
    """Uploads on both processes (some concurrent, so batches form), two kinds of errors, a stream; then waits until
    Prometheus has scraped the final counters of both processes."""
    started = time.time()
    folder = tmp_path_factory.mktemp("prom-videos")
    videos = [make_video(folder / f"v{i}.mp4", seconds=2.0, fps=8, seed=40 + i) for i in range(6)]
    jobs = [(servers[i % 2], video) for i, video in enumerate(videos)]
    # One upload per process first, scraped before the rest: a series is born with its first sample, so only
    # increases after that show in rate() (as in production, where traffic spans many scrapes).
    responses = [_classify(*job) for job in jobs[:2]]
    _wait_for(prometheus, 'sum(s2d_http_requests_total{route="/v1/classify"})', 2)
    with ThreadPoolExecutor(4) as pool:  # concurrent, so batches of several clips form
        responses += list(pool.map(lambda job: _classify(*job), jobs[2:]))
    for response in responses:
        assert response.status_code == 200, response.text
    windows = sum(len(p["windows"]) for r in responses for p in r.json()["persons"])
    errors = [
        _classify(servers[0], videos[0], model="no_such_model").status_code,  # 404 unknown_model
        _classify(servers[1], videos[0], hop_seconds=-1).status_code,  # 422 invalid_parameters
    ]
    assert errors == [404, 422]
    stream_end = _stream(servers[0])

    expected = {"clips": windows + (stream_end["windows"]["classified"] if stream_end else 0)}
    expected["http_ok"] = len(videos)
    _wait_for(prometheus, "sum(s2d_clips_total)", expected["clips"])  # the last scrape has the final counts
    return {"windows": windows, "stream": stream_end, "started": started, **expected}


# ---------------------------------------------------------------------------------------------------------------------
# Tests


@needs_prometheus
@needs_promtool
def test_exposition_passes_promtool(servers, traffic):
    text = httpx.get(f"{servers[0].url}/metrics", headers=servers[0].headers, timeout=10).text
    assert "s2d_clips_total" in text and "s2d_inference_queue_wait_seconds_bucket" in text
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


@needs_prometheus
def test_both_processes_are_scraped_and_counts_add_up(prometheus, servers, traffic):
    up = {t["labels"]["instance"]: t["health"] for t in prometheus.targets() if t["labels"]["job"] == "s2d"}
    assert up == {f"127.0.0.1:{s.port}": "up" for s in servers}
    # Counters per process, summed by PromQL across processes, equal what the clients were answered.
    assert prometheus.value("sum(s2d_clips_total)") == traffic["clips"]
    ok = 'sum(s2d_http_requests_total{route="/v1/classify", method="POST", status="200"})'
    assert prometheus.value(ok) == traffic["http_ok"]
    assert prometheus.value('sum(s2d_errors_total{code="unknown_model"})') == 1
    assert prometheus.value('sum(s2d_errors_total{code="invalid_parameters"})') == 1
    per_instance = prometheus.query('sum by (instance) (s2d_http_requests_total{route="/v1/classify", status="200"})')
    assert sorted(float(r["value"][1]) for r in per_instance) == [3.0, 3.0]  # each process counts only its own
    info = prometheus.query("s2d_model_info")
    assert {r["metric"]["model"] for r in info} == {TEST_MODEL} and len(info) == 2
    assert {r["metric"]["precision"] for r in info} == {"fp32"}
    assert {r["metric"]["provider"] for r in info} == {"CPUExecutionProvider"}
    if traffic["stream"] is not None:
        dropped = prometheus.value('sum(s2d_frames_dropped_total{reason="out_of_order"})')
        assert dropped == traffic["stream"]["frames"]["dropped"]["out_of_order"] == 1


@needs_prometheus
def test_every_dashboard_expression_returns_data(prometheus, traffic):
    dashboard = json.loads(DASHBOARD.read_text())
    targets = dashboard_targets(dashboard)
    assert len(targets) >= 20
    has_gpu = bool(prometheus.query('{__name__=~"s2d_gpu_.*"}'))
    # $__rate_interval: a window that reaches back to the start of the traffic (a panel zoomed on it)
    rate_window = f"{math.ceil(time.time() - traffic['started']) + 5}s"
    empty, not_finite = [], []
    for title, expr in targets:
        query = substitute(expr, rate_window)
        result = prometheus.query(query)
        if GPU_PREFIX in expr and not has_gpu:
            assert result == [], f"{title}: GPU series without a GPU: {result}"  # ran, and correctly empty
            continue
        if "s2d_stream_" in expr and traffic["stream"] is None:
            continue  # no WebSocket route in this build
        if not result:
            empty.append(f"{title}: {query}")
        elif not any(math.isfinite(float(r["value"][1])) for r in result):
            not_finite.append(f"{title}: {query} -> {result}")
    assert not empty, "expressions without data:\n" + "\n".join(empty)
    assert not not_finite, "expressions with only NaN/Inf values:\n" + "\n".join(not_finite)


@needs_prometheus
def test_dashboard_variables_resolve(prometheus, servers, traffic):
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        metric, label = match.groups()
        values = {r["metric"][label] for r in prometheus.query(metric)}
        assert values == {f"127.0.0.1:{s.port}" for s in servers}, (variable["name"], values)


def test_dashboard_refers_to_the_provisioned_datasource():
    datasources = yaml.safe_load((REPO / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    refs = {t["datasource"]["uid"] for p in dashboard["panels"] if "targets" in p for t in p["targets"]}
    refs |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    assert refs == uids == {"s2d-prometheus"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@needs_promtool
def test_shipped_prometheus_config_is_valid():
    with tempfile.TemporaryDirectory() as tmp:
        # credentials_file paths are checked for existence only when set; the shipped file has it commented out
        result = subprocess.run(
            [PROMTOOL, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=30, cwd=tmp
        )
    assert result.returncode == 0, result.stdout + result.stderr


def test_preinitialised_reasons_cover_the_code():
    """Every reason the code counts has a zero series from the start (service.metrics' lists), so dashboards show 0."""
    from s2d.service import metrics, streams

    assert set(streams.FRAME_DROP_REASONS) <= set(metrics.FRAME_DROP_REASONS)
    assert set(streams.WINDOW_DROP_REASONS) <= set(metrics.WINDOW_DROP_REASONS)
    code = "\n".join(p.read_text() for p in (REPO / "service").rglob("*.py"))
    used = {
        "REJECTED": set(re.findall(r'REJECTED\.labels\("(\w+)"\)', code)),
        "FRAMES_DROPPED": set(re.findall(r'_drop_frame\("(\w+)"', code)),
        "STREAM_WINDOWS_DROPPED": set(re.findall(r'_drop_window\("(\w+)"', code)),
    }
    assert used["REJECTED"] and used["FRAMES_DROPPED"] and used["STREAM_WINDOWS_DROPPED"]
    assert used["REJECTED"] <= set(metrics.REJECT_REASONS)
    assert used["FRAMES_DROPPED"] <= set(metrics.FRAME_DROP_REASONS)
    assert used["STREAM_WINDOWS_DROPPED"] <= set(metrics.WINDOW_DROP_REASONS)
    text = generate_latest().decode()
    for reason in metrics.FRAME_DROP_REASONS:
        assert f's2d_frames_dropped_total{{reason="{reason}"}}' in text
    assert "_created" not in text


# ---------------------------------------------------------------------------------------------------------------------
# GPU gauges (service.gpu): this machine has no NVIDIA driver, so the real NVML bindings take the no-GPU path.


def test_nvml_selector_follows_cuda_visible_devices():
    assert nvml_selector(1, None) == 1 and nvml_selector(0, "") == 0
    assert nvml_selector(1, "3,5") == 5
    assert nvml_selector(0, "GPU-8f1c2d3e-aaaa") == "GPU-8f1c2d3e-aaaa"
    assert nvml_selector(0, " MIG-1234 , 2") == "MIG-1234"
    with pytest.raises(ValueError, match="not visible"):
        nvml_selector(2, "0,1")


def test_no_gpu_provider_means_no_gpu_series():
    registry = CollectorRegistry()
    assert install_gpu_metrics(["CPUExecutionProvider"], registry=registry) is None
    assert b"s2d_gpu" not in generate_latest(registry)


def test_gpu_provider_without_a_driver_starts_without_gpu_series(caplog):
    pytest.importorskip("pynvml", reason="nvidia-ml-py (the [dev] and [gpu] extras) is not installed")
    try:  # the path under test is "no driver": skip where a real GPU is present
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("an NVIDIA driver is present here")
    except pynvml.NVMLError:
        pass
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO, logger="s2d.service.gpu"):
        assert install_gpu_metrics(["CUDAExecutionProvider", "CPUExecutionProvider"], 0, registry=registry) is None
    assert "GPU metrics off: NVML is not usable" in caplog.text
    assert b"s2d_gpu" not in generate_latest(registry)


def test_gpu_metrics_without_nvidia_ml_py(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what `import pynvml` does when the package is absent
    with caplog.at_level(logging.INFO, logger="s2d.service.gpu"):
        assert open_gpu(0) is None
    assert "nvidia-ml-py is not installed" in caplog.text


class _FakeNVML:
    """A stand-in for NVML's Python API with one GPU (no NVIDIA driver here); `fail` makes reads raise NVMLError."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        self.fail = False

    def nvmlDeviceGetIndex(self, handle):
        return 3

    def nvmlDeviceGetUUID(self, handle):
        return b"GPU-1234"  # older bindings return bytes

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, handle):
        if self.fail:
            raise self.NVMLError("GPU is lost")
        return types.SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=2 * 2**30, total=80 * 2**30, free=78 * 2**30)


@needs_promtool
def test_gpu_collector_exposition_and_a_failing_read():
    """The collector's output format (names, labels, units) and its error path, on a stand-in for NVML."""
    nvml = _FakeNVML()
    registry = CollectorRegistry()
    registry.register(GpuCollector(nvml, handle=object()))
    text = generate_latest(registry).decode()
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    assert {name: s.value for name, s in samples.items()} == {
        "s2d_gpu_utilization_ratio": 0.37,
        "s2d_gpu_memory_used_bytes": 2 * 2**30,
        "s2d_gpu_memory_total_bytes": 80 * 2**30,
    }
    for sample in samples.values():
        assert sample.labels == {"gpu": "3", "uuid": "GPU-1234", "name": "NVIDIA H100 80GB HBM3"}
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
    nvml.fail = True  # a lost GPU: the scrape still answers, without GPU samples
    assert "s2d_gpu" not in generate_latest(registry).decode()
    nvml.fail = False
    assert "s2d_gpu_utilization_ratio" in generate_latest(registry).decode()
