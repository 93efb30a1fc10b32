"""`s2d analyze --ray` on a real two-node Ray cluster that the test starts on a loopback address (127.0.0.2:
`ray start --head`, then `ray start --address` for the second node, one CPU each): the videos spread over both
nodes, and killing the second node in the middle of the job loses no video and writes none twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from s2d.batch import load
from s2d.harness.batch import alive_nodes, kill_node, two_node_cluster
from s2d.harness.server import REPO
from tests.test_analyze import TEST_MODEL, _videos, store  # noqa: F401 - the store fixture, shared

ray = pytest.importorskip("ray", reason="ray is not installed (the [ray] extra: pip install -e '.[batch,ray]')")


@pytest.mark.slow  # ~50 s: a cluster of two nodes started, a job, a node lost and its video run again
def test_a_job_spreads_over_two_nodes_and_survives_losing_one(store, tmp_path):  # noqa: F811
    """Every window's inference is held 0.8 s (the fault-injection setting), so the job is still running when the
    second node has finished its first video: that is when the node is killed (SIGKILL to its process group)."""
    videos = _videos(tmp_path / "videos", 6)
    out = tmp_path / "out"
    with two_node_cluster(tmp_path) as (address, _, second):
        node_ids = set(alive_nodes(address))
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
        kill_node(second)
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
