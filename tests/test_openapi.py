"""The OpenAPI description is the API: schemathesis (a schema fuzzer) against a real server process, with and without
the API key, finds no server error and no response that breaks the spec; the spec carries the security schemes, the
401 of protected routes and the settings' parameter limits; a 405 names the allowed methods."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from s2d.harness.server import running_server

API_KEY = "openapi-key-1"
ST = Path(sys.executable).with_name("st")
needs_schemathesis = pytest.mark.skipif(
    not ST.exists() and shutil.which("st") is None, reason="schemathesis is missing: pip install -e '.[dev]'"
)


@pytest.fixture(scope="module", params=[API_KEY, None], ids=["with-key", "without-key"])
def server(store, request):
    with running_server(store, api_key=request.param, max_upload_bytes=2_000_000, min_hop_seconds=0.5) as srv:
        yield srv


def _spec(server) -> dict:
    return httpx.get(f"{server.url}/openapi.json", headers=server.headers, timeout=10).json()


@needs_schemathesis
def test_schemathesis_finds_no_server_error_and_no_schema_violation(server):
    command = [
        str(ST if ST.exists() else shutil.which("st")), "run", f"{server.url}/openapi.json",
        "--checks", "all",
        # A schema-valid upload may still hold media the decoder refuses (a 1x1 PNG: 415), and window_seconds
        # is bounded per model card: valid by the schema, refused by the server, by design.
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "20", "--seed", "1", "--generation-database", "none", "--no-color",
    ]  # fmt: skip
    if server.api_key:
        command += ["-H", f"Authorization: Bearer {server.api_key}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert server.process.poll() is None, "the server died under the fuzzer"
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.split("SUMMARY")[-1].lower(), summary


def test_the_spec_names_the_api_key_the_401s_and_the_hop_limit(server):
    spec, paths = _spec(server), _spec(server)["paths"]
    (hop,) = [p for p in paths["/v1/classify"]["post"]["parameters"] if p["name"] == "hop_seconds"]
    assert {"type": "number", "minimum": 0.5} in hop["schema"]["anyOf"]  # S2D_MIN_HOP_SECONDS, as enforced
    wrong = httpx.get(f"{server.url}/v1/classify", headers=server.headers, timeout=10)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    if server.api_key is None:
        assert "securitySchemes" not in spec.get("components", {})
        return
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert paths["/v1/classify"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert paths["/healthz"]["get"]["security"] == [] and paths["/readyz"]["get"]["security"] == []
    assert "401" in paths["/metrics"]["get"]["responses"]
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401  # what the spec now says
