"""Two service replicas behind a real nginx, found by a real Prometheus from a target file: the `scale` set-up.

The replicas (tiny test model, API key), nginx (Debian `nginx-light`) with the rendered deploy/nginx template, and the
file_sd target list come from deploy/scale/launch.py, the documented way to run it without Docker; Prometheus is the
one tests/test_prometheus.py starts, on the launcher's configuration. Everything is on loopback. How each claim is
told, from real evidence only:

- REST spreads: each replica's own /metrics (s2d_http_requests_total) before and after a burst, and nginx's access
  log (the replica it chose, per X-Request-ID), agree on who served each upload; both replicas served.
- Uploads are streamed through: half an upload sent to nginx already shows on a replica as an upload being received.
- Streams stick: while 4 streams are open, s2d_active_streams of each replica; afterwards nginx's log line of each
  WebSocket (found by the client's port) names one replica, whose s2d_frames_total{source="stream"} grew by exactly
  the frames that the streams it served report processed in their `end` events.
- Failover: a replica stopped with SIGTERM; uploads through nginx still answer 200, and nginx's log shows the refused
  attempt retried on the other replica; then the launcher's readiness refresh marks it `down`. Prometheus shows both
  targets up before the stop and the stopped one down after.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from s2d.harness.server import Server
from s2d.harness.stack import (
    COMPOSE_CONF,
    NGINX_HINT,
    TEMPLATE,
    address,
    find_nginx,
    prometheus_config,
    render_compose_conf,
    running_stack,
)
from s2d.service.settings import Settings
from tests.service_helpers import make_video
from tests.test_deploy import _compose, docker_compose  # noqa: F401 - docker_compose is a fixture used below
from tests.test_prometheus import Prometheus, needs_prometheus

needs_nginx = pytest.mark.skipif(find_nginx() is None, reason=f"nginx is not installed: {NGINX_HINT}")
API_KEY = "scale-test-key"
STREAM_FRAMES = (2, 3, 5, 9)  # frames per stream: every split of them over two replicas has its own sums


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def stack(store, tmp_path_factory):
    settings = {"api_key": API_KEY, "max_batch": 2, "pipeline_threads": 1, "intra_op_threads": 1}
    with running_stack(store, 2, tmp_path_factory.mktemp("scale"), **settings) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scale-prometheus")
    (workdir / "api_key").write_text(API_KEY)
    config = prometheus_config(stack.targets_file, workdir / "api_key")
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    server = Prometheus(config, workdir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("scale-videos") / "clip.mp4", seconds=2.0, fps=8, seed=7)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def replica_value(replica: Server, name: str, **labels: str) -> float:
    """Sum of a replica's own samples `name` with these labels, read from its /metrics (not through nginx)."""
    text = httpx.get(f"{replica.url}/metrics", headers=replica.headers, timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def classified(replica: Server) -> float:
    return replica_value(replica, "s2d_http_requests_total", route="/v1/classify", method="POST", status="200")


def upload(url: str, video: Path, request_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/classify",
        params={"mode": "aligned"},
        headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": request_id},
        files={"file": (video.name, video.read_bytes(), "video/mp4")},
        timeout=60,
    )


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20) -> object:
    """Poll until `condition()` is truthy; its value. Bounded: fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(0.1)
    return value


def logged(stack, key: str, values: set) -> dict[str, dict]:
    """nginx's access-log records whose `key` is one of `values`, once every one of them is there (a line is
    written when its request, or its WebSocket, ends)."""

    def found() -> dict[str, dict] | None:
        records = {r[key]: r for r in stack.nginx.access_records() if r[key] in values}
        return records if set(records) == values else None

    return wait_for(found, f"nginx access log lines for {sorted(values)}")


def per_replica(stack, records) -> dict[str, int]:
    counts = {address(r): 0 for r in stack.replicas}
    for record in records:
        counts[record["upstream"]] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# Static: the shipped files agree with each other and with the service


def test_compose_conf_is_rendered_from_the_template():
    assert COMPOSE_CONF.read_text() == render_compose_conf(), "run: python deploy/scale/launch.py --write-compose-conf"


def test_nginx_limits_agree_with_the_service():
    text = TEMPLATE.read_text()
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    (size,) = re.findall(r"client_max_body_size (\d+)m;", text)
    assert int(size) * 2**20 == defaults["max_upload_bytes"]
    rest = text[text.index("location / {") :]
    stream = text[text.index("location = /v1/stream {") :]
    read = lambda block: int(re.search(r"proxy_read_timeout (\d+)s;", block).group(1))  # noqa: E731
    assert defaults["request_timeout_s"] < read(rest) <= defaults["request_timeout_s"] + 30
    assert read(stream) > 10 * defaults["stream_idle_timeout_s"]  # the replica, never nginx, ends an idle stream
    assert "proxy_request_buffering off;" in rest and "least_conn;" in text
    assert "proxy_next_upstream error timeout http_502 http_503;" in text
    assert "keepalive" not in re.sub(r"#.*", "", text)  # why: the template's comment in the upstream block


def test_compose_scale_profile(docker_compose):  # noqa: F811 - the fixture imported from test_deploy
    result = _compose(docker_compose, "--profile", "scale", "config", env={"S2D_REPLICAS": "3"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    replica, nginx = services["s2d-replica"], services["nginx"]
    assert replica["profiles"] == nginx["profiles"] == ["scale"]
    assert replica["deploy"]["replicas"] == 3 and not replica.get("ports")  # only nginx publishes a port
    assert replica["networks"]["default"]["aliases"] == ["s2d-api"]  # what nginx and Prometheus resolve
    assert replica["environment"]["S2D_PROVIDERS"] == "cpu" and "/readyz" in " ".join(replica["healthcheck"]["test"])
    assert nginx["depends_on"] == {"s2d-replica": {"condition": "service_healthy"}}
    assert f"{COMPOSE_CONF}:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert nginx["ports"] == [{"published": 8000, "target": 8080}]
    assert "server s2d-api:8000 " in COMPOSE_CONF.read_text() and "listen 8080;" in COMPOSE_CONF.read_text()


# ---------------------------------------------------------------------------------------------------------------------
# Live: two replicas, nginx, Prometheus


@needs_nginx
def test_rest_burst_spreads_over_both_replicas(stack, video):
    before = [classified(r) for r in stack.replicas]
    ids = [f"burst-{i}" for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda rid: upload(stack.nginx.url, video, rid), ids))
    assert [r.status_code for r in responses] == [200] * len(ids), [r.text for r in responses]
    assert [r.headers["x-request-id"] for r in responses] == ids  # nginx passed the client's id, the replica kept it
    served = [classified(r) - b for r, b in zip(stack.replicas, before, strict=True)]
    by_log = per_replica(stack, logged(stack, "request_id", set(ids)).values())
    print(f"uploads per replica: metrics {served}, nginx log {by_log}")
    assert list(by_log.values()) == served and sum(served) == len(ids)
    assert all(n > 0 for n in served), f"least_conn left a replica idle: {served}"


@needs_nginx
def test_uploads_are_streamed_through_not_buffered(stack, video):
    body = video.read_bytes()
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    connection.putrequest("POST", "/v1/classify?mode=aligned")
    for name, value in {"Authorization": f"Bearer {API_KEY}", "Content-Type": "video/mp4",
                        "Content-Length": str(len(body))}.items():  # fmt: skip
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(body[: len(body) // 2])
    # With request buffering nginx would hold the body until its end: no replica would see an upload yet.
    wait_for(lambda: sum(replica_value(r, "s2d_active_uploads") for r in stack.replicas) == 1, "an upload in flight")
    connection.send(body[len(body) // 2 :])
    response = connection.getresponse()
    assert response.status == 200, response.read()
    connection.close()


@needs_nginx
def test_nginx_refuses_an_oversized_upload_with_the_service_error_shape(stack):
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    connection.putrequest("POST", "/v1/classify")
    connection.putheader("Content-Length", str(Settings.model_fields["max_upload_bytes"].default + 1))
    connection.endheaders()  # no body: the Content-Length alone is refused
    response = connection.getresponse()
    body = httpx.Response(response.status, content=response.read()).json()
    assert response.status == 413 and body["error"]["code"] == "too_large" and body["error"]["request_id"]
    connection.close()


@needs_nginx
def test_each_stream_stays_on_one_replica(stack):
    from tests.stream_helpers import StreamClient, aligned_frames

    frames = aligned_frames(max(STREAM_FRAMES))
    before = [replica_value(r, "s2d_frames_total", source="stream") for r in stack.replicas]
    clients = [StreamClient(stack.nginx.url, api_key=API_KEY) for _ in STREAM_FRAMES]
    try:
        for client in clients:
            assert client.start(mode="aligned", fps=8)["type"] == "ready"
        open_streams = [replica_value(r, "s2d_active_streams") for r in stack.replicas]
        ports = [client.ws.local_address[1] for client in clients]
        ends = []
        for client, count in zip(clients, STREAM_FRAMES, strict=True):
            for seq in range(count):
                client.send_frame(frames[seq], ts_ms=1000 + seq * 125.0, seq=seq)
            ends.append(client.finish())
    finally:
        for client in clients:
            client.close()
    assert [e["frames"]["received"] for e in ends] == list(STREAM_FRAMES)  # every frame reached its stream's state
    records = logged(stack, "client", {f"127.0.0.1:{port}" for port in ports})
    upstreams = [records[f"127.0.0.1:{port}"]["upstream"] for port in ports]
    assert {records[k]["status"] for k in records} == {"101"}
    assert all(u in {address(r) for r in stack.replicas} for u in upstreams), upstreams  # one replica each, no retry
    after = [replica_value(r, "s2d_frames_total", source="stream") for r in stack.replicas]
    grown = [a - b for a, b in zip(after, before, strict=True)]
    expected = [sum(e["frames"]["processed"] for e, u in zip(ends, upstreams, strict=True) if u == address(r))
                for r in stack.replicas]  # fmt: skip
    print(f"streams per replica while open: {open_streams}; stream frames processed per replica: {grown}")
    assert sum(open_streams) == len(STREAM_FRAMES) and all(n > 0 for n in open_streams)
    assert list(per_replica(stack, records.values()).values()) == open_streams
    assert grown == expected


@needs_nginx
def test_a_stream_reconnects_through_nginx_when_its_replica_drains(store, tmp_path):
    """SIGTERM on the replica serving a stream: it closes the stream with 1001 "server shutting down"; the Python
    client (reconnect=2) opens a new one through nginx, which reaches the other replica, and the stream goes on."""
    from s2d.client import Client
    from tests.stream_helpers import aligned_frames

    frames = aligned_frames(16)
    settings = {"api_key": API_KEY, "max_batch": 2, "pipeline_threads": 1, "intra_op_threads": 1}
    with (
        running_stack(store, 2, tmp_path, **settings) as stack,
        Client(stack.nginx.url, API_KEY) as client,
        client.stream(mode="aligned", fps=8, tracks_fps=0, reconnect=2) as stream,
    ):
        for seq in range(8):
            stream.send_frame(frames[seq], 1000 + seq * 125.0, seq)
        (victim,) = [r for r in stack.replicas if replica_value(r, "s2d_active_streams") == 1]
        (survivor,) = [r for r in stack.replicas if r is not victim]
        victim.stop()  # the drain closes the stream, then the process exits
        while (event := stream.recv(timeout=30))["type"] != "reconnected":
            pass  # the old stream's last events, then its close: the client reconnects
        assert event["close_code"] == 1001 and event["reason"] == "server shutting down"
        assert replica_value(survivor, "s2d_active_streams") == 1  # nginx passed the new stream to the survivor
        for seq in range(8, 16):  # stream time starts again on the new connection
            stream.send_frame(frames[seq], 1000 + seq * 125.0, seq)
        end = stream.end()
    assert end["frames"]["received"] == 8 and end["frames"]["processed"] + end["frames"]["dropped_total"] == 8


@needs_nginx
@needs_prometheus
def test_a_stopped_replica_fails_over_and_prometheus_sees_it(stack, prometheus, video):
    def health() -> dict[str, str]:
        return {t["labels"]["instance"]: t["health"] for t in prometheus.targets() if t["labels"]["job"] == "s2d"}

    everyone = {address(r) for r in stack.replicas}
    wait_for(lambda: health() == dict.fromkeys(everyone, "up"), "both replicas up in Prometheus (file_sd)")
    victim, survivor = stack.replicas
    victim.stop()  # SIGTERM: the replica drains (nothing in flight) and exits; stop() waits for the exit
    assert victim.process.returncode is not None

    ids = [f"failover-{i}" for i in range(4)]
    before = classified(survivor)
    assert [upload(stack.nginx.url, video, rid).status_code for rid in ids] == [200] * len(ids)
    assert classified(survivor) - before == len(ids)
    records = logged(stack, "request_id", set(ids))
    tried = [records[rid]["upstream"] for rid in ids]
    print(f"upstreams tried after the stop: {tried}")
    # least_conn's round-robin among equals picks the stopped replica within two requests: refused (nothing sent),
    # retried on the survivor; max_fails=1 then keeps it out.
    assert f"{address(victim)}, {address(survivor)}" in tried
    assert all(t.endswith(address(survivor)) for t in tried)
    wait_for(lambda: health()[address(victim)] == "down", "the stopped replica down in Prometheus")

    # The launcher's readiness refresh: the stopped replica becomes `down` in the upstream, nginx reloads.
    old_workers = stack.nginx.workers()
    assert stack.refresh() and stack.ready == {address(victim): False, address(survivor): True}
    assert f"server {address(victim)} max_fails=1 fail_timeout=10s down;" in stack.nginx.site.read_text()
    wait_for(lambda: not stack.nginx.workers() & old_workers, "nginx's old workers gone")
    assert upload(stack.nginx.url, video, "after-refresh").status_code == 200
    assert logged(stack, "request_id", {"after-refresh"})["after-refresh"]["upstream"] == address(survivor)

    survivor.stop()  # no replica left: nginx's own answer, in the service's error shape
    response = httpx.get(f"{stack.nginx.url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert response.headers["retry-after"] == "5"
