"""A real service process for tests and benchmarks: `service.server.serve()` in a subprocess on a free loopback port.

`import torch` is made to fail in that process, so every request it serves proves the serving path never imports
torch. Settings become `S2D_*` environment variables, exactly as a user would set them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]  # the source checkout (an editable install: `make setup`)

# sys.modules[name] = None makes `import name` raise ImportError.
_BOOT = "import sys; sys.modules['torch'] = None; from s2d.service.server import serve; serve()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, logs: Callable[[], str], timeout: float, name: str) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it exits or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{logs()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready after {timeout} s:\n{logs()}")


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Server:
    """A real `service.server.serve()` in a subprocess on loopback (torch blocked), with its log file."""

    def __init__(self, store: Path, api_key: str | None = None, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        env = {k: v for k, v in os.environ.items() if not k.startswith("S2D_")}
        env.update({"S2D_MODEL_STORE": str(store), "S2D_PORT": str(self.port), "S2D_LOG_FORMAT": "json"})
        if api_key:
            env["S2D_API_KEY"] = api_key
        for key, value in settings.items():
            env[f"S2D_{key.upper()}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
        env["PYTHONPATH"] = str(REPO)
        self.log = Path(tempfile.mkstemp(prefix="s2d-server-", suffix=".log")[1])
        self._log_handle = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT], cwd=REPO, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=kwargs.pop("timeout", 60), **kwargs)

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until_ready(f"{self.url}/readyz", self.process, self.logs, timeout, "server")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self, since: int = 0) -> list[dict]:
        """The JSON log records written after the first `since` characters of the log (`len(server.logs())`)."""
        out = []
        for line in self.logs()[since:].splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self._log_handle.close()


@contextlib.contextmanager
def running_server(store: Path, **settings) -> Iterator[Server]:
    server = Server(store, **settings)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        server.log.unlink(missing_ok=True)
