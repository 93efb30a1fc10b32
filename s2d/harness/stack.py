"""N service replicas behind nginx, scraped by Prometheus: compose's `scale` profile as processes on loopback.

The command is `deploy/scale/launch.py`; tests (tests/test_scale.py) and bench/load_scale.py start the same stack
through `running_stack`.

- **Replicas**: `service.server.serve()` (what `s2d serve` runs) in N processes on free loopback ports, started by
  `s2d.harness.server.Server`, the project's one way to start a service process (S2D_* settings, JSON log file).
- **nginx** (Debian `nginx-light` or `nginx`): deploy/nginx/s2d.conf.template rendered into the work folder. The
  upstream lists every replica; one whose `/readyz` does not answer 200 is marked `down`. Every 2 s the launcher polls
  each replica's /readyz and reloads nginx when that set changes: open-source nginx has no active health checks, so
  readiness is applied where the server list is made; between two polls, passive failover (`max_fails`,
  `proxy_next_upstream`) covers a replica that died.
- **Prometheus** (Debian `prometheus`): docker/prometheus/prometheus.yml with the replicas discovered from a target
  file (file_sd) that lists every replica, ready or not (its `s2d_ready` says which).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from s2d.harness.server import REPO, Server, free_port, stop_process, wait_until_ready

TEMPLATE = REPO / "deploy" / "nginx" / "s2d.conf.template"
COMPOSE_CONF = REPO / "deploy" / "nginx" / "compose.conf"
PROMETHEUS_YML = REPO / "docker" / "prometheus" / "prometheus.yml"
SERVER_PARAMS = "max_fails=1 fail_timeout=10s"  # passive health, per server line (the template says why)
COMPOSE_SERVER = "s2d-api:8000"  # every replica container carries the network alias s2d-api; nginx takes each A record
POLL_S = 2.0
NGINX_HINT = "install it with `apt-get install -y nginx-light` (Debian/Ubuntu; or the `nginx` package)"


# ---------------------------------------------------------------------------------------------------------------------
# nginx


def render_site(listen: str, servers: dict[str, bool], access_log: str) -> str:
    """The template filled in; `servers` maps host:port to whether that replica is ready (not ready: `down`)."""
    if not servers:
        raise ValueError("nginx needs at least one replica in its upstream")
    lines = [f"server {address} {SERVER_PARAMS}{'' if ready else ' down'};" for address, ready in servers.items()]
    text = TEMPLATE.read_text()
    for key, value in {"listen": listen, "servers": "\n    ".join(lines), "access_log": access_log}.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError(f"{TEMPLATE} has a placeholder the launcher does not fill: {text[text.index('{{') :][:40]}")
    return text


def render_compose_conf() -> str:
    """deploy/nginx/compose.conf: the template for the compose `scale` profile (nginx resolves s2d-api at start)."""
    header = "# Generated from s2d.conf.template by `python deploy/scale/launch.py --write-compose-conf`: edit that.\n"
    return header + render_site("8080", {COMPOSE_SERVER: True}, "/var/log/nginx/access.log")


def main_conf(workdir: Path, site: Path) -> str:
    """The main nginx.conf of a local nginx: pid, temp files and logs in `workdir`, so it runs without root too."""
    temp = {name: workdir / "tmp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    paths = "\n".join(f"    {name}_temp_path {path};" for name, path in temp.items())
    return (
        "# The local launcher's nginx (deploy/scale/launch.py); the S2D part is the included site.\n"
        "worker_processes 1;\n"
        f"pid {workdir / 'nginx.pid'};\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n{paths}\n    include {site};\n}}\n"
    )


def find_nginx() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """nginx in the foreground on 127.0.0.1:`port`, its configuration, logs and temp files in `workdir`."""

    def __init__(self, workdir: Path, port: int):
        binary = find_nginx()
        if binary is None:
            raise FileNotFoundError(f"nginx is not installed: {NGINX_HINT}")
        self.binary, self.workdir, self.port = binary, workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.site, self.conf = workdir / "s2d.conf", workdir / "nginx.conf"
        self.access_log, self.error_log = workdir / "access.log", workdir / "error.log"
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(main_conf(workdir, self.site))
        self.process: subprocess.Popen | None = None

    def _command(self, *args: str) -> list[str]:
        return [self.binary, "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.error_log), *args]

    def configure(self, servers: dict[str, bool]) -> None:
        """Write the site for these replicas and check it with `nginx -t`; a running nginx reloads it."""
        self.site.write_text(render_site(f"127.0.0.1:{self.port}", servers, str(self.access_log)))
        check = subprocess.run(self._command("-t", "-q"), capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused {self.site}:\n{check.stderr}")
        if self.process is not None:
            self._reload()

    def start(self, timeout: float = 15) -> None:
        self.process = subprocess.Popen(
            self._command("-g", "daemon off;"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )  # nginx writes its errors to error_log
        wait_until_ready(f"{self.url}/lb/healthz", self.process, self.logs, timeout, "nginx")

    def workers(self) -> set[int]:
        """The worker processes' ids (the master's children)."""
        assert self.process is not None
        with contextlib.suppress(FileNotFoundError):
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
            return {int(pid) for pid in text.split()}
        return set()

    def _reload(self, timeout: float = 10) -> None:
        """SIGHUP; returns once a worker with the new configuration runs (old workers finish their connections,
        open streams included, and exit on their own)."""
        old = self.workers()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while not self.workers() - old:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"nginx did not reload:\n{self.logs()}")
            time.sleep(0.05)

    def access_records(self) -> list[dict]:
        """The access log (one JSON object a request; a WebSocket's line is written when it closes)."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def logs(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)  # SIGTERM: nginx's fast shutdown


# ---------------------------------------------------------------------------------------------------------------------
# Prometheus


def prometheus_config(targets_file: Path, key_file: Path | None = None) -> dict:
    """docker/prometheus/prometheus.yml with the replicas discovered from `targets_file` (file_sd) instead of DNS."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "s2d"]
    del job["dns_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "30s"}]  # also watched for changes
    if key_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(key_file)}  # as the shipped file documents
    config["scrape_configs"] = [job]  # the shipped self-scrape names compose's port, not this Prometheus's
    return config


def write_targets(path: Path, addresses: list[str]) -> None:
    """The file_sd target list, replaced in one rename (Prometheus re-reads the file when it changes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps([{"targets": addresses, "labels": {"deployment": "local"}}], indent=2) + "\n")
    tmp.replace(path)


def start_prometheus(config: dict, workdir: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus is not installed: `apt-get install -y prometheus` (or --prometheus-port 0)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(workdir / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_until_ready(
        f"http://127.0.0.1:{port}/-/ready", process, (workdir / "prometheus.log").read_text, 30, "prometheus"
    )
    return process


# ---------------------------------------------------------------------------------------------------------------------
# The stack


def address(replica: Server) -> str:
    return f"127.0.0.1:{replica.port}"


def is_ready(replica: Server) -> bool:
    if replica.process.poll() is not None:
        return False
    try:
        return httpx.get(f"{replica.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    """N replicas of the service behind one nginx, with the file_sd target list for Prometheus, in `workdir`."""

    def __init__(self, store: Path, replicas: int, workdir: Path, port: int | None = None, **settings):
        self.store, self.count, self.workdir, self.settings = store, replicas, workdir, settings
        self.port = port or free_port()
        self.targets_file = workdir / "targets.json"
        self.replicas: list[Server] = []
        self.nginx: Nginx | None = None
        self.ready: dict[str, bool] = {}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.replicas = [Server(self.store, **self.settings) for _ in range(self.count)]  # they warm up together
        for replica in self.replicas:
            replica.wait_ready()
        write_targets(self.targets_file, [address(r) for r in self.replicas])
        self.nginx = Nginx(self.workdir / "nginx", self.port)
        self.ready = self.poll()
        self.nginx.configure(self.ready)
        self.nginx.start()

    def poll(self) -> dict[str, bool]:
        return {address(r): is_ready(r) for r in self.replicas}

    def refresh(self) -> bool:
        """Poll every replica's /readyz; when the ready set changed, nginx gets the new upstream. Whether it did."""
        ready = self.poll()
        if ready == self.ready:
            return False
        self.nginx.configure(ready)
        self.ready = ready
        return True

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()  # first, so no new work reaches a replica that is draining
        for replica in self.replicas:
            replica.stop()


@contextlib.contextmanager
def running_stack(store: Path, replicas: int, workdir: Path, **settings) -> Iterator[Stack]:
    stack = Stack(store, replicas, workdir, **settings)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
