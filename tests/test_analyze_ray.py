"""`s2d analyze --ray` on a real two-node Ray cluster that the test starts on 127.0.0.1 (`ray start --head`, then
`ray start --address` for the second node, one CPU each): the videos spread over both nodes, and killing the second
node in the middle of the job loses no video and writes none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from s2d.batch import load
from s2d.harness.server import REPO, free_port
from tests.test_analyze import TEST_MODEL, _videos, store  # noqa: F401 - the store fixture, shared

ray = pytest.importorskip("ray", reason="ray is not installed (the [ray] extra: pip install -e '.[batch,ray]')")

RAY = str(Path(sys.executable).with_name("ray"))


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """One Ray node in the foreground (`--block`), in a process group of its own: killing the group kills the node
    (its raylet, object store and worker processes) and nothing else."""
    ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]  # fmt: skip
    command = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
               "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats", *ports, *args]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(node: subprocess.Popen) -> None:
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)


def _alive_nodes(address: str) -> list[str]:
    """The ids of the cluster's live nodes, asked by a short-lived driver of its own."""
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR')\n"
    code += "print(*[n['NodeID'] for n in ray.nodes() if n['Alive']])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return result.stdout.split() if result.returncode == 0 else []


@contextmanager
def two_node_cluster(logs: Path) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """(address, head, second node) of a cluster on the loopback address; both nodes killed at the end."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 characters
    head = _start_node(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp,
                        "--ray-client-server-port", str(free_port())], logs / "head.log")  # fmt: skip
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while len(_alive_nodes(address)) < 1:
            assert head.poll() is None and time.monotonic() < deadline, (logs / "head.log").read_text()
            time.sleep(1)
        nodes.append(_start_node(["--address", address], logs / "node2.log"))
        while len(_alive_nodes(address)) < 2:
            assert nodes[1].poll() is None and time.monotonic() < deadline, (logs / "node2.log").read_text()
            time.sleep(1)
        yield address, head, nodes[1]
    finally:
        for node in reversed(nodes):
            _kill(node)
        subprocess.run(["rm", "-rf", temp], check=False)


@pytest.mark.slow  # ~50 s: a cluster of two nodes started, a job, a node lost and its video run again
def test_a_job_spreads_over_two_nodes_and_survives_losing_one(store, tmp_path):  # noqa: F811
    """Every window's inference is held 0.8 s (the fault-injection setting), so the job is still running when the
    second node has finished its first video: that is when the node is killed (SIGKILL to its process group)."""
    videos = _videos(tmp_path / "videos", 6)
    out = tmp_path / "out"
    with two_node_cluster(tmp_path) as (address, _, second):
        node_ids = set(_alive_nodes(address))
        command = [sys.executable, "-m", "s2d", "analyze", str(tmp_path / "videos"), "-o", str(out), "--store",
                   str(store), "--model", TEST_MODEL, "--ray", address]  # fmt: skip
        env = {**os.environ, "S2D_FAULT_INFERENCE_DELAY_MS": "800", "PYTHONPATH": str(REPO)}
        job = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        nodes_done: set[str] = set()
        deadline = time.monotonic() + 300
        while len(nodes_done) < 2:  # a video finished on each node
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            if (out / "videos").is_dir():
                nodes_done = set(load(out).videos["node_id"])
            time.sleep(0.2)
        left = len(videos) - len(load(out).videos)
        _kill(second)
        stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    # At least two videos were left when the node died: the driver keeps two in flight (one per CPU of the cluster,
    # one CPU per node), so one of them was on the lost node and Ray ran it again on the head.
    assert left >= 2
    windows, table = load(out)
    assert sorted(table["path"]) == sorted(map(str, videos)) and (table["status"] == "ok").all()
    assert set(table["node_id"]) == node_ids  # both nodes did videos
    assert not windows.duplicated(["video_key", "model", "track_id", "t_start"]).any()
    assert windows.groupby("video_key").size().to_dict() == dict(zip(table["video_key"], table["windows"], strict=True))
    assert f"{len(videos)} ok; 0 done before" in stdout, stdout
