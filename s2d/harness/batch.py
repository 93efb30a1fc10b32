"""What the batch-analysis tests and benchmark share: face clips of any length (made one frame at a time, so a long
one stays small in memory) and a real two-node Ray cluster on the loopback address."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from s2d.harness.scenes import astronaut_face, backdrop, paste
from s2d.harness.server import free_port
from s2d.harness.video import write_video


def face_clip(path: Path, frames: int, fps: float = 10.0, start: int = 20, seed: int = 1) -> Path:
    """One real face (the astronaut) crossing a 640x360 frame; `start` and `seed` (the backdrop) make other bytes."""
    face, background = astronaut_face(), backdrop(seed=seed)
    clip = (paste(background, face, start + (i * 7) % 420, 30 + (i * 3) % 60, 150) for i in range(frames))
    return write_video(path, clip, fps=fps)


RAY = str(Path(sys.executable).with_name("ray"))
# A loopback address, but not 127.0.0.1: Ray replaces "127.0.0.1" and "localhost" in an address with the machine's
# outward address (its traffic would leave loopback); other 127.x addresses it keeps as they are.
LOOPBACK = "127.0.0.2"


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """One Ray node in the foreground (`--block`), one CPU, in a process group of its own: killing the group kills
    the node (its raylet, object store and worker processes) and nothing else."""
    ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]  # fmt: skip
    command = [RAY, "start", "--block", "--node-ip-address", LOOPBACK, "--num-cpus", "1",
               "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats", *ports, *args]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_node(node: subprocess.Popen) -> None:
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)


def alive_nodes(address: str) -> list[str]:
    """The ids of the cluster's live nodes, asked by a short-lived driver of its own."""
    code = "import ray; from s2d.batch.ray_pool import driver_options\n"
    code += f"ray.init(address={address!r}, logging_level='ERROR', **driver_options({address!r}))\n"
    code += "print(*[n['NodeID'] for n in ray.nodes() if n['Alive']])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return result.stdout.split() if result.returncode == 0 else []


@contextmanager
def two_node_cluster(logs: Path, timeout_s: float = 120) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """(address, head, second node) of a Ray cluster on LOOPBACK (`ray start --head`, then `ray start --address`),
    one CPU each; both nodes killed at the end."""
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 characters
    head = _start_node(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp,
                        "--ray-client-server-port", str(free_port())], logs / "ray-head.log")  # fmt: skip
    nodes = [head]
    try:
        deadline = time.monotonic() + timeout_s
        for count, log in ((1, "ray-head.log"), (2, "ray-node2.log")):
            if count == 2:
                nodes.append(_start_node(["--address", address], logs / log))
            while len(alive_nodes(address)) < count:
                if nodes[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray node {count} did not start: {(logs / log).read_text()[-3000:]}")
                time.sleep(1)
        yield address, head, nodes[1]
    finally:
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(temp, ignore_errors=True)
