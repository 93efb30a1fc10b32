"""Official weights: pinned, verified downloads from a local HTTP server, conversion into the store, fast offline
failure with instructions, and import of a file fetched by hand. Never the internet."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models import create_model
from s2d.store import ModelStore
from tests.helpers import randomize_
from training.export import synthetic_clips
from training.weights import DEFAULT_REGISTRY, WeightsError, import_file, load_registry, pull, sha256_file

REV = "0123456789abcdef0123456789abcdef01234567"
# The export path itself is tested in test_export.py; here one variant besides fp32 is enough.
FAST = {"variants": ("fp32", "int8"), "timing": False}
FP32 = {"variants": ("fp32",), "timing": False}


def official_files(root):
    """A tiny S2D in the official checkpoint layout and a MobileFaceNet checkpoint, laid out like the mirrors."""
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=1)).eval()
    hf = root / "cyinen/S2D/resolve" / REV
    drive = root / "gdrive/lm"
    hf.mkdir(parents=True)
    drive.mkdir(parents=True)
    args = argparse.Namespace(model="s2d_tiny", nb_classes=7, num_frames=2)
    torch.save({"model": model.s2d.state_dict(), "optimizer": {}, "epoch": 1, "args": args}, hf / "dfew.pth")
    torch.save({"state_dict": model.landmark.net.state_dict()}, drive / "mobilefacenet_model_best.pth.tar")
    (hf / "tampered.pth").write_bytes((hf / "dfew.pth").read_bytes() + b"x")
    (hf / "login.html").write_text("<html>Sign in to continue</html>")  # what some hosts send instead of a file
    return model


def write_registry(path, files_root, **changes) -> dict:
    def entry(name, kind, filename, mirror, sha, **kw):
        return {
            "name": name,
            "kind": kind,
            "filename": filename,
            "url": "https://example.invalid/{filename}",
            "mirror_path": mirror + "/{filename}",
            "revision": REV,
            "sha256": sha,
            "licence": "test licence",
            "manual": "https://huggingface.co/cyinen/S2D/tree/main",
            "architecture": "s2d_tiny",
            **kw,
        }

    hf = f"cyinen/S2D/resolve/{REV}"
    good = sha256_file(files_root / hf / "dfew.pth")
    rows = [
        entry("s2d-dfew", "s2d", "dfew.pth", hf, good, dataset="dfew", metrics={"war": 76.16}),
        entry("s2d-tampered", "s2d", "tampered.pth", hf, good, dataset="dfew"),  # the server sends other bytes
        entry("s2d-unpinned", "s2d", "dfew.pth", hf, None, dataset="dfew"),
        entry("s2d-page", "s2d", "login.html", hf, None, dataset="dfew"),
        entry(
            "mobilefacenet",
            "landmark",
            "mobilefacenet_model_best.pth.tar",
            "gdrive/lm",
            sha256_file(files_root / "gdrive/lm/mobilefacenet_model_best.pth.tar"),
            needs=[],
        ),
    ]
    path.write_text(json.dumps(rows))
    return load_registry(path)


@pytest.fixture
def server(tmp_path, monkeypatch):
    root = tmp_path / "served"
    model = official_files(root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("S2D_WEIGHTS_DIR", str(tmp_path / "weights"))
    registry = write_registry(tmp_path / "registry.json", root)
    yield registry, model, tmp_path
    httpd.shutdown()


def test_a_good_file_is_verified_converted_and_exported(server):
    registry, model, tmp = server
    clips = synthetic_clips(4, 2, seed=3)
    result = pull("s2d-dfew", registry=registry, store_root=tmp / "store", evaluation=clips, **FAST)
    stored = ModelStore(tmp / "store").get("s2d-dfew")
    assert result.store_path == stored.path and all(f.verified for f in result.files)
    card = stored.card
    assert card.classes == ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    assert card.source_checkpoint.sha256 == registry["s2d-dfew"].sha256 and card.licence == "test licence"
    assert card.metrics == {"war": 76.16} and not card.demo and set(card.variants) == {"fp32", "int8"}
    assert card.training["provenance"]["revision"] == REV
    # the served graph gives the released network's logits (landmark weights included)
    session = ort.InferenceSession(str(stored.variant_path("fp32")), providers=["CPUExecutionProvider"])
    from training.export import torch_logits

    np.testing.assert_allclose(session.run(["logits"], {"frames": clips})[0], torch_logits(model, clips), atol=1e-4)


def test_a_pinned_hash_mismatch_is_refused_and_nothing_is_kept(server):
    registry, _, tmp = server
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        pull("s2d-tampered", registry=registry, store_root=tmp / "store", **FAST)
    assert not list((tmp / "weights").rglob("tampered.pth*")) and ModelStore(tmp / "store").list() == []


def test_unpinned_files_are_refused_unless_trusted(server):
    registry, _, tmp = server
    with pytest.raises(WeightsError, match=r"no pinned sha256.*--trust-unpinned.*s2d weights import"):
        pull("s2d-unpinned", registry=registry, store_root=tmp / "store")


def test_a_web_page_is_not_taken_for_weights(server):
    registry, _, tmp = server
    with pytest.raises(WeightsError, match="web page"):
        pull("s2d-page", registry=registry, store_root=tmp / "store", trust_unpinned=True)
    assert not list((tmp / "weights").rglob("login.html*"))


def test_offline_fails_fast_with_what_to_do_by_hand(server, monkeypatch):
    registry, _, tmp = server
    with socket.socket() as s:  # a port nobody listens on: connection refused, like a machine without network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "s2d",
        "weights",
        "pull",
        "s2d-dfew",
        "--registry",
        str(tmp / "registry.json"),
        "--store",
        str(tmp / "store"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert time.monotonic() - start < 30  # interpreter start-up included; the network part fails at once
    message = result.stderr
    assert "cannot reach" in message and "offline" in message
    assert "s2d weights import FILE --name s2d-dfew" in message and "huggingface.co/cyinen/S2D" in message
    with pytest.raises(WeightsError, match="cannot reach"):  # DNS failure is reported the same way
        monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", "http://no-such-host.invalid")
        pull("s2d-dfew", registry=registry, store_root=tmp / "store")


def test_import_checks_the_pin_and_needs_no_network(server, monkeypatch):
    registry, _, tmp = server
    monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", "http://127.0.0.1:9")  # nothing may be downloaded
    served = tmp / "served"
    with pytest.raises(WeightsError, match="not the pinned s2d-dfew release"):
        import_file(served / f"cyinen/S2D/resolve/{REV}/tampered.pth", "s2d-dfew", registry=registry)
    lm = import_file(served / "gdrive/lm/mobilefacenet_model_best.pth.tar", registry=registry)  # named by file
    assert lm.store_path is None and lm.files[0].verified
    # the landmark weights are now in the weights dir, so the S2D file converts without any download
    result = import_file(
        served / f"cyinen/S2D/resolve/{REV}/dfew.pth",
        "s2d-dfew",
        registry=registry,
        store_root=tmp / "store",
        evaluation=synthetic_clips(2, 2, seed=4),
        **FP32,
    )
    assert ModelStore(tmp / "store").get("s2d-dfew").path == result.store_path


def test_the_default_registry_pins_nothing_it_does_not_know():
    for entry in DEFAULT_REGISTRY:
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert entry.licence and entry.manual.startswith("https://")
    names = {e.name: e for e in DEFAULT_REGISTRY}
    assert {"s2d-affectnet7", "s2d-dfew", "s2d-ferv39k", "s2d-mafw", "mobilefacenet"} <= set(names)
    assert "commercial" in names["s2d-mafw"].licence
    assert names["s2d-affectnet7"].resolved_url().startswith("https://huggingface.co/cyinen/S2D/resolve/")
    with pytest.raises(WeightsError, match="does not know this file's name"):
        pull("s2d-dfew", registry={"s2d-dfew": dataclasses.replace(names["s2d-dfew"])})
