"""N service replicas behind nginx, scraped by Prometheus: compose's `scale` profile as processes on loopback.

    .venv/bin/python deploy/scale/launch.py --replicas 2 --port 8080 [--store DIR] [--set max_batch=4 ...]

The stack itself (replicas, nginx, the Prometheus configuration) is `s2d.harness.stack`, which the tests and
bench/load_scale.py start too; this is its command line. Ctrl-C or SIGTERM stops nginx, then the replicas (each drains
its requests and streams), then Prometheus. Settings for the replicas: `--set name=value` or `S2D_*` variables in the
environment, as for `s2d serve`.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from s2d.harness.server import stop_process
from s2d.harness.stack import (
    COMPOSE_CONF,
    POLL_S,
    Stack,
    prometheus_config,
    render_compose_conf,
    running_stack,
    start_prometheus,
)

# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _settings(pairs: list[str]) -> dict[str, str]:
    """S2D_* variables of the environment (Server passes only what it is given), then --set name=value."""
    own = {"S2D_MODEL_STORE", "S2D_PORT", "S2D_HOST"}  # set per replica by Server
    settings = {k[4:].lower(): v for k, v in os.environ.items() if k.startswith("S2D_") and k not in own}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants name=value, got {pair!r}")
        settings[name.strip().lower().removeprefix("s2d_")] = value
    return settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="service processes (default 2)")
    parser.add_argument("--store", type=Path, help="model store (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080)")
    parser.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus' port; 0: no Prometheus")
    parser.add_argument("--workdir", type=Path, help="configs, logs, Prometheus data (default: a new temp folder)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a replica setting")
    parser.add_argument("--write-compose-conf", action="store_true", help="regenerate deploy/nginx/compose.conf, exit")
    return parser


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # the same orderly stop as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.write_compose_conf:
        COMPOSE_CONF.write_text(render_compose_conf())
        print(COMPOSE_CONF)
        return 0
    from s2d.store import default_store_dir

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="s2d-scale-"))
    settings = _settings(args.set)
    signal.signal(signal.SIGTERM, _on_sigterm)
    prometheus = None
    try:
        with running_stack(
            args.store or default_store_dir(), args.replicas, workdir, port=args.port, **settings
        ) as stack:
            if args.prometheus_port:
                key = settings.get("api_key")
                key_file = workdir / "api_key" if key else None
                if key_file is not None:
                    key_file.write_text(key)
                config = prometheus_config(stack.targets_file, key_file)
                prometheus = start_prometheus(config, workdir / "prometheus", args.prometheus_port)
            _report(stack, args.prometheus_port)
            while True:
                time.sleep(POLL_S)
                if stack.refresh():
                    print(f"nginx upstream now: {stack.ready}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if prometheus is not None:
            stop_process(prometheus, timeout=10)
    return 0


def _report(stack: Stack, prometheus_port: int) -> None:
    print(f"nginx       {stack.nginx.url}  (access log {stack.nginx.access_log})")
    for replica in stack.replicas:
        print(f"replica     {replica.url}  (log {replica.log})")
    if prometheus_port:
        print(f"prometheus  http://127.0.0.1:{prometheus_port}  (targets from {stack.targets_file})")
    print("Ctrl-C stops everything.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
