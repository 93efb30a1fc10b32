"""Named API keys with scopes and limits (service/auth.py), against a real server process.

The server reads a keys file (sha256 of each key) and also has the single `api_key` setting. Covered, per route
family (classify, models, sources, metrics, the live stream's and a source's WebSocket): 401 without a key or with an
unknown one, 403 with a key that lacks the scope, the route's answer with one that has it, and the single key that
has every scope; 429 with Retry-After at a key's rate limit (a rate so low that no refill happens during the test,
so the third request of a burst of two is refused whatever the machine's speed) and at its stream limit; the key's
name, never the key, in the access log and as the metrics label; the keys file reloaded on a real change of the file
and on a real SIGHUP (the change made invisible to the file watch: same inode, size and modification time); a file
that stops parsing leaves the keys in force. `s2d keys add|list|remove` write the file the server reads.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from s2d.cli import main as s2d
from s2d.client import Client, S2DError, StreamUnauthorized
from s2d.harness.server import running_server
from s2d.service.auth import SCOPES, WATCH_EVERY_S, KeyRing, key_digest, read_keys_file
from tests.service_helpers import make_video
from tests.test_service import assert_error, metric_value
from tests.test_sources import until

SINGLE = "single-setting-key"
KEYS = {  # name: (key, scopes, limits)
    "classifier": ("k-classify", ["classify"], {}),
    "reader": ("k-reader", ["models:read"], {}),
    "sourcer": ("k-sources", ["sources"], {}),
    "scraper": ("k-metrics", ["metrics"], {}),
    "camera": ("k-camera", ["stream", "models:read"], {"max_streams": 1}),
    "limited": ("k-limited", ["models:read"], {"rate": 0.001, "burst": 2}),
}
FAMILIES = {  # scope: a request of the route family, and the key that has the scope
    "classify": ("POST", "/v1/classify", "classifier"),
    "models:read": ("GET", "/v1/models", "reader"),
    "sources": ("GET", "/v1/sources", "sourcer"),
    "metrics": ("GET", "/metrics", "scraper"),
}


def keys_file_text(keys: dict) -> str:
    tables = []
    for name, (key, scopes, limits) in keys.items():
        lines = [f'name = "{name}"', f'sha256 = "{key_digest(key)}"', f"scopes = {scopes!r}".replace("'", '"')]
        lines += [f"{field} = {value}" for field, value in limits.items()]
        tables.append("[[keys]]\n" + "\n".join(lines) + "\n")
    return "\n".join(tables)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    path.write_text(keys_file_text(KEYS))
    return path


@pytest.fixture(scope="module")
def server(store, keys_file):
    settings = dict(api_keys_file=keys_file, warmup=False, sources_enabled=True, sources_allow=["127.0.0.1"])
    with running_server(store, api_key=SINGLE, **settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1.0)


def call(server, method: str, path: str, key: str | None, clip: Path | None = None) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        if method == "POST":
            with clip.open("rb") as body:
                return http.post(path, params={"mode": "aligned"}, files={"file": body})
        return http.get(path)


# ---------------------------------------------------------------------------------------------------------------------
# Scopes


@pytest.mark.parametrize("scope", list(FAMILIES))
def test_each_route_family_needs_its_scope(server, clip, scope):
    method, path, owner = FAMILIES[scope]
    assert_error(call(server, method, path, None, clip), 401, "unauthorized")
    assert_error(call(server, method, path, "not-a-key", clip), 401, "unauthorized")
    assert call(server, method, path, KEYS[owner][0], clip).status_code == 200
    assert call(server, method, path, SINGLE, clip).status_code == 200  # the single key has every scope
    for name, (key, scopes, _) in KEYS.items():
        if scope not in scopes and name != "limited":
            body = assert_error(call(server, method, path, key, clip), 403, "forbidden")
            assert body["error"]["details"] == {"scope": scope, "key": name}


def test_websockets_need_the_stream_or_sources_scope_and_the_key_stream_limit_holds(server):
    with Client(server.url, api_key=KEYS["reader"][0]) as reader, pytest.raises(StreamUnauthorized) as refused:
        reader.open_stream()
    assert refused.value.status == 403  # refused before the handshake, as a missing key is
    with Client(server.url, api_key=KEYS["camera"][0]) as camera:
        with pytest.raises(StreamUnauthorized):  # a source's events need `sources`
            camera.open_stream("/v1/sources/nope/events")
        first = camera.open_stream()
        try:
            with pytest.raises(S2DError) as full:
                camera.open_stream()
            assert full.value.status == 429  # the key's one stream is open
            with Client(server.url, api_key=SINGLE) as other:  # another key is not held back
                other.open_stream().close()
        finally:
            first.close()
        again = until(lambda: _opens(camera), "the key's stream slot given back", timeout=10)
        again.close()
    with Client(server.url, api_key=KEYS["sourcer"][0]) as sourcer:  # the sources scope reaches a source's events
        sourcer.open_stream("/v1/sources/nope/events").close()


def _opens(client: Client):
    try:
        return client.open_stream()
    except S2DError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Limits, logs, metrics


def test_a_key_over_its_rate_gets_429_with_retry_after(server):
    key = KEYS["limited"][0]
    assert [call(server, "GET", "/v1/models", key).status_code for _ in range(2)] == [200, 200]  # the burst
    over = call(server, "GET", "/v1/models", key)
    body = assert_error(over, 429, "rate_limited")
    assert int(over.headers["retry-after"]) >= 1 and body["error"]["details"]["retry_after_s"] >= 1
    assert call(server, "GET", "/v1/models", KEYS["reader"][0]).status_code == 200  # other keys go on


def test_the_key_name_never_the_key_in_logs_and_metrics(server):
    since = len(server.logs())
    assert call(server, "GET", "/v1/models", KEYS["reader"][0]).status_code == 200
    assert call(server, "GET", "/metrics", KEYS["reader"][0]).status_code == 403
    assert call(server, "GET", "/v1/models", "not-a-key").status_code == 401
    text = call(server, "GET", "/metrics", KEYS["scraper"][0]).text
    assert metric_value(text, "s2d_key_requests_total", key="reader", status="200") >= 1
    assert metric_value(text, "s2d_key_requests_total", key="reader", status="403") >= 1
    assert metric_value(text, "s2d_key_requests_total", key="-", status="401") >= 1
    access = [r for r in server.records(since) if r.get("logger") == "s2d.service.access"]
    assert {(r["key"], r["status"]) for r in access} >= {("reader", 200), ("reader", 403), ("scraper", 200)}
    logged = server.logs()
    for key, _, _ in KEYS.values():
        assert key not in logged and key not in text


def test_the_openapi_document_declares_each_operation_scope(server):
    spec = httpx.get(f"{server.url}/openapi.json", headers={"X-API-Key": SINGLE}, timeout=10).json()
    for scope, (method, path, _) in FAMILIES.items():
        operation = spec["paths"][path][method.lower()]
        assert operation["security"] == [{"bearer": [scope]}, {"apiKey": [scope]}]
        assert {"401", "403", "429"} <= set(operation["responses"])
    assert spec["paths"]["/healthz"]["get"]["security"] == []


# ---------------------------------------------------------------------------------------------------------------------
# Reloading


def test_keys_reload_when_the_file_changes(server, keys_file, capsys):
    before = keys_file.read_text()
    try:
        assert s2d(["keys", "add", "late", "--scopes", "models:read", "--file", str(keys_file)]) == 0
        late = capsys.readouterr().out.strip()
        assert late.startswith("s2d_") and late not in keys_file.read_text()  # the file holds its hash only
        until(lambda: call(server, "GET", "/v1/models", late).status_code == 200, "the added key accepted")
        assert s2d(["keys", "list", "--file", str(keys_file)]) == 0
        assert "late\tmodels:read" in capsys.readouterr().out
        assert s2d(["keys", "remove", "late", "--file", str(keys_file)]) == 0
        until(lambda: call(server, "GET", "/v1/models", late).status_code == 401, "the removed key refused")
        keys_file.write_text("[[keys]]\nname = 'broken'\n")  # no sha256: not a keys file
        # The file is looked at on requests (at most once a second): ask until the refusal to reload is logged.
        until(lambda: call(server, "GET", "/v1/models", SINGLE) and "not reloaded" in server.logs(), "refusal logged")
        assert call(server, "GET", "/v1/models", KEYS["reader"][0]).status_code == 200  # the keys in force stay
    finally:
        keys_file.write_text(before)


def test_keys_reload_on_sighup(server, keys_file):
    """The file changed in place with the same size and modification time: only the signal can reload it."""
    before = keys_file.read_text()
    try:
        # First a change the watch sees, waited for: the server then holds this very file's stamp.
        synced = before + "\n" + keys_file_text({"sync": ("k-sync", ["models:read"], {})})
        keys_file.write_text(synced)
        until(lambda: call(server, "GET", "/v1/models", "k-sync").status_code == 200, "the file in force")
        stamp = keys_file.stat()
        swapped = synced.replace(key_digest(KEYS["reader"][0]), key_digest("k-fresh"))
        assert len(swapped) == len(synced)
        with keys_file.open("r+") as same_inode:
            same_inode.write(swapped)
        os.utime(keys_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        time.sleep(1.5 * WATCH_EVERY_S)  # the next request makes the watch look at the file: it sees no change
        assert call(server, "GET", "/v1/models", "k-fresh").status_code == 401
        server.process.send_signal(signal.SIGHUP)
        until(lambda: call(server, "GET", "/v1/models", "k-fresh").status_code == 200, "reloaded on SIGHUP")
        assert call(server, "GET", "/v1/models", KEYS["reader"][0]).status_code == 401
        assert server.process.poll() is None  # SIGHUP no longer ends the process
    finally:
        keys_file.write_text(before)
        until(lambda: call(server, "GET", "/v1/models", KEYS["reader"][0]).status_code == 200, "restored")


# ---------------------------------------------------------------------------------------------------------------------
# Without a server


def test_keys_files_are_checked(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(keys_file_text(KEYS))
    assert [k.name for k in read_keys_file(path)] == list(KEYS)
    bad = {
        "[[keys]]\nname = 'x'\nsha256 = 'k-plain'\n": "64 hex digits",  # a key, not its hash
        "[[keys]]\nname = 'x'\nsha256 = '" + "0" * 64 + "'\nscopes = ['admin']\n": "scopes",
        "[[keys]]\nname = 'api_key'\nsha256 = '" + "0" * 64 + "'\n": "unique",
        "keys = 3\n": "holds .* tables only",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_keys_file(path)


def test_without_keys_nothing_is_checked():
    from s2d.service.settings import Settings

    ring = KeyRing.from_settings(Settings(model_store="/nonexistent", warmup=False))
    assert not ring.enabled and ring.keys == ()
    single = KeyRing.from_settings(Settings(model_store="/nonexistent", api_key="one"))
    assert single.enabled and single.authenticate("one").scopes == frozenset(SCOPES)
