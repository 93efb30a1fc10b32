"""Official weights: huggingface_hub and the pinned landmark download run for real against a local server that
answers like the Hugging Face Hub and GitHub's raw host; the lock, the checks, the name mapping, conversion into the
store, fast offline failure with instructions, and import of a file fetched by hand. Never the internet."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from s2d.cli import build_parser, main
from s2d.models import create_model
from s2d.store import ModelStore
from s2d.training.export import synthetic_clips
from s2d.training.weights import (
    DEFAULT_REGISTRY,
    HF_REPO,
    LOCK_FILE,
    MOBILEFACENET_FILE,
    S2D_COMMIT,
    S2D_GITHUB,
    Lock,
    Pin,
    Release,
    WeightsError,
    digests,
    fetch,
    import_file,
    pull,
    release_of,
)
from tests.helpers import randomize_

REV_A = "0123456789abcdef0123456789abcdef01234567"
REV_B = "89abcdef0123456789abcdef0123456789abcdef"
DFEW = "DFEW-fold1.pth"
LANDMARK_RAW = f"{S2D_GITHUB}/{S2D_COMMIT}/{MOBILEFACENET_FILE}"
# The export path and its variants are tested in test_export.py; here fp32 is enough.
FP32 = {"variants": ("fp32",), "timing": False}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """The few answers huggingface_hub's `model_info(files_metadata=True)` and `hf_hub_download` read (see
    huggingface_hub/hf_api.py and file_download.py), plus files under GitHub's raw layout."""

    main: str
    commits: dict[str, dict[str, bytes]]  # commit -> file -> the bytes the listing and headers describe
    raw: dict[str, bytes]
    served: dict[tuple[str, str], bytes] = field(default_factory=dict)  # other bytes sent for (commit, file)
    requests: list[str] = field(default_factory=list)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hub.answer(self, body=True)

            def do_HEAD(self):
                hub.answer(self, body=False)

            def log_message(self, *args):
                pass

        return Handler

    def answer(self, req, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(req.path).path)
        self.requests.append(f"{req.command} {path}")
        if m := re.fullmatch(rf"/api/models/{HF_REPO}/revision/([^/]+)", path):
            return self.info(req, m[1])
        if m := re.fullmatch(rf"/{HF_REPO}/resolve/([^/]+)/(.+)", path):
            return self.file(req, m[1], m[2], body)
        if path.lstrip("/") in self.raw:
            kind = "text/html" if path.endswith(".html") else "application/octet-stream"
            return send(req, 200, {"Content-Type": kind}, self.raw[path.lstrip("/")], body)
        return send(req, 404, {"X-Error-Code": "EntryNotFound"}, b"not found", body)

    def commit(self, req, revision: str) -> str | None:
        commit = self.main if revision == "main" else revision
        if commit not in self.commits:
            send(req, 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b"{}", True)
            return None
        return commit

    def info(self, req, revision: str) -> None:
        if (commit := self.commit(req, revision)) is None:
            return
        siblings = [sibling(name, data) for name, data in self.commits[commit].items()]
        data = json.dumps({"id": HF_REPO, "sha": commit, "siblings": siblings}).encode()
        send(req, 200, {"Content-Type": "application/json"}, data, True)

    def file(self, req, revision: str, name: str, body: bool) -> None:
        if (commit := self.commit(req, revision)) is None:
            return
        if name not in self.commits[commit]:
            return send(req, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"", body)
        listed = self.commits[commit][name]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob(listed)}"'}
        if is_lfs(name):  # the Hub gives an LFS file's sha256 and size in these headers
            headers |= {"X-Linked-Etag": f'"{sha256(listed)}"', "X-Linked-Size": str(len(listed))}
        send(req, 200, headers, self.served.get((commit, name), listed), body)


def is_lfs(name: str) -> bool:
    return name.endswith(".pth")


def sibling(name: str, data: bytes) -> dict:
    row = {"rfilename": name, "size": len(data), "blobId": git_blob(data)}
    if is_lfs(name):
        row["lfs"] = {"sha256": sha256(data), "size": len(data), "pointerSize": 134}
    return row


def send(req, status: int, headers: dict, data: bytes, body: bool) -> None:
    req.send_response(status)
    for key, value in {"Content-Length": str(len(data)), **headers}.items():
        req.send_header(key, value)
    req.end_headers()
    if body:
        req.wfile.write(data)


@dataclass
class Env:
    hub: FakeHub
    model: torch.nn.Module
    registry: dict
    tmp: Path
    url: str
    dfew: bytes

    @property
    def store(self) -> Path:
        return self.tmp / "store"

    @property
    def lock_path(self) -> Path:
        return self.store / LOCK_FILE

    def write_lock(self, data: bytes | None = None) -> Lock:
        """A lock as another machine's first pull wrote it, pinning DFEW-fold1.pth at REV_A."""
        data = self.dfew if data is None else data
        lock = Lock(self.lock_path, {"s2d-dfew": Pin(HF_REPO, REV_A, DFEW, len(data), sha256(data))})
        lock.save()
        return lock


def official_checkpoints(root: Path):
    """A tiny S2D in the official checkpoint layout and its MobileFaceNet checkpoint, as bytes."""
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=1)).eval()
    args = argparse.Namespace(model="s2d_tiny", nb_classes=7, num_frames=2)
    torch.save({"model": model.s2d.state_dict(), "optimizer": {}, "epoch": 1, "args": args}, root / "s2d.pth")
    torch.save({"state_dict": model.landmark.net.state_dict()}, root / "landmark.pth.tar")
    return model, (root / "s2d.pth").read_bytes(), (root / "landmark.pth.tar").read_bytes()


def tiny_registry(landmark: bytes) -> dict:
    """The shipped registry, for the tiny architecture and with the landmark pinned to the served file's blob id."""
    rows = [
        dataclasses.replace(e, architecture="s2d_tiny")
        if e.kind == "s2d"
        else dataclasses.replace(e, git_blob=git_blob(landmark))
        for e in DEFAULT_REGISTRY
    ]
    return {e.name: e for e in rows}


@pytest.fixture
def env(tmp_path, monkeypatch):
    model, dfew, landmark = official_checkpoints(tmp_path)
    repository = {"README.md": b"# S2D\n", "pretrain-AffectNet-7.pth": b"static", DFEW: dfew, "dfew_fold2.pth": b"2"}
    hub = FakeHub(main=REV_A, commits={REV_A: repository}, raw={LANDMARK_RAW: landmark})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "S2D_WEIGHTS_REGISTRY", "S2D_MODEL_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", url)
    monkeypatch.setenv("S2D_WEIGHTS_DIR", str(tmp_path / "weights"))
    yield Env(hub, model, tiny_registry(landmark), tmp_path, url, dfew)
    httpd.shutdown()
    httpd.server_close()


def test_the_first_pull_trusts_the_hub_once_writes_the_lock_and_exports(env, caplog):
    clips = synthetic_clips(4, 2, seed=3)
    result = pull("s2d-dfew", registry=env.registry, store_root=env.store, **FP32)
    assert "GET /api/models/cyinen/S2D/revision/main" in env.hub.requests  # main resolved to its commit once
    assert f"GET /cyinen/S2D/resolve/{REV_A}/{DFEW}" in env.hub.requests
    s2d, landmark = result.files
    assert "trust on first use" in s2d.checked and "trust on first use" in caplog.text
    assert landmark.checked == "the registry" and s2d.path.is_relative_to(env.tmp / "hf" / "hub")
    entries = json.loads(env.lock_path.read_text())["entries"]
    assert result.lock == env.lock_path
    assert entries["s2d-dfew"] == {
        "repo": HF_REPO,
        "revision": REV_A,
        "file": DFEW,
        "size": len(env.dfew),
        "sha256": sha256(env.dfew),
    }
    assert entries["mobilefacenet"]["repo"] == S2D_GITHUB and entries["mobilefacenet"]["revision"] == S2D_COMMIT
    stored = ModelStore(env.store).get("s2d-dfew")
    card = stored.card
    assert card.classes == ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    assert card.source_checkpoint.sha256 == sha256(env.dfew) and set(card.variants) == {"fp32"}
    assert card.training["provenance"]["revision"] == REV_A and card.training["provenance"]["file"] == DFEW
    # the served graph gives the released network's logits (landmark weights included)
    session = ort.InferenceSession(str(stored.variant_path("fp32")), providers=["CPUExecutionProvider"])
    from s2d.training.export import torch_logits

    np.testing.assert_allclose(session.run(["logits"], {"frames": clips})[0], torch_logits(env.model, clips), atol=1e-4)


def test_a_lock_fetches_exactly_its_commit_and_file_then_serves_it_from_the_cache(env, monkeypatch):
    lock = env.write_lock()
    env.hub.commits[REV_B] = {**env.hub.commits[REV_A], DFEW: b"a new upload"}
    env.hub.main = REV_B  # upstream moved on; the lock does not
    fetched = fetch(env.registry["s2d-dfew"], lock)
    assert fetched.path.read_bytes() == env.dfew and fetched.pin.revision == REV_A
    assert fetched.checked == f"the lock {env.lock_path}"
    assert not [r for r in env.hub.requests if "main" in r or REV_B in r]
    env.hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub cache answers without any request
    assert fetch(env.registry["s2d-dfew"], lock).path.read_bytes() == env.dfew and env.hub.requests == []
    with pytest.raises(WeightsError, match=r"pins cyinen/S2D/DFEW-fold1.pth, not cyinen/S2D/dfew_fold2.pth"):
        fetch(env.registry["s2d-dfew"], lock, file="dfew_fold2.pth")


@pytest.mark.parametrize(
    "locked, tamper, message",
    [
        (True, flip_last_byte, f"sha256 mismatch: the lock .*{LOCK_FILE} says"),
        (False, flip_last_byte, "sha256 mismatch: the Hub's listing of cyinen/S2D@"),
        (True, lambda b: b + b"x", "download from .* failed .*Consistency check failed"),
    ],
    ids=["locked", "first-use", "longer"],
)
def test_a_tampered_file_is_refused_and_nothing_is_kept(env, locked, tamper, message):
    if locked:
        env.write_lock()
    bad = tamper(env.dfew)
    env.hub.served[(REV_A, DFEW)] = bad  # same name, same commit, same headers; other bytes
    with pytest.raises(WeightsError, match=message):
        pull("s2d-dfew", registry=env.registry, store_root=env.store, **FP32)
    cached = [p for p in (env.tmp / "hf").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert not [p for p in cached if p.read_bytes() == bad] and not list(env.store.glob("s2d-dfew*"))
    if not locked:
        assert not env.lock_path.exists()  # a failed first pull pins nothing
    else:
        assert Lock.load(env.lock_path).pins["s2d-dfew"].sha256 == sha256(env.dfew)


def test_a_locked_pull_trusts_nothing_on_first_use(env):
    """`--locked` (what a baked image build passes): no lock entry, no download; with one, the pinned bytes."""
    with pytest.raises(WeightsError, match=r"s2d-dfew: pinned by neither the lock .* nor the registry"):
        pull("s2d-dfew", registry=env.registry, store_root=env.store, locked=True, **FP32)
    assert env.hub.requests == [] and not env.lock_path.exists()
    env.write_lock()
    s2d, landmark = pull("s2d-dfew", registry=env.registry, store_root=env.store, locked=True, **FP32).files
    assert s2d.checked == f"the lock {env.lock_path}" and landmark.checked == "the registry"
    args = build_parser().parse_args(["weights", "pull", "s2d-dfew", "--locked", "--lock", str(env.lock_path)])
    assert args.locked and args.lock == str(env.lock_path)


def test_mobilefacenet_bytes_are_checked_against_the_pinned_git_blob_id(env):
    entry, lock = env.registry["mobilefacenet"], Lock(env.lock_path)
    fetched = fetch(entry, lock)
    assert fetched.checked == "the registry" and fetched.path.name == "mobilefacenet_model_best.pth.tar"
    git = subprocess.run(["git", "hash-object", str(fetched.path)], capture_output=True, text=True, check=True)
    assert digests(fetched.path).git_blob == git.stdout.strip() == entry.git_blob  # git's own definition
    fetched.path.unlink()
    env.hub.raw[LANDMARK_RAW] = b"<not the checkpoint>"
    with pytest.raises(WeightsError, match=f"git blob mismatch: the registry says {entry.git_blob}"):
        fetch(entry, lock)
    assert not list(fetched.path.parent.iterdir())  # neither the file nor its partial download


def test_the_cli_pull_says_what_it_checked_and_where_the_lock_is(env, capsys):
    registry = env.tmp / "registry.json"
    registry.write_text(json.dumps([dataclasses.asdict(e) for e in env.registry.values()]))
    args = ["weights", "pull", "mobilefacenet", "--registry", str(registry), "--store", str(env.store)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{MOBILEFACENET_FILE} @ {S2D_COMMIT}" in out and "(matches the registry)" in out
    assert f"lock: {env.lock_path}" in out and "mobilefacenet" in Lock.load(env.lock_path).pins
    assert main(["weights", "list", "--registry", str(registry), "--store", str(env.store)]) == 0
    assert f"locked: {MOBILEFACENET_FILE} @ {S2D_COMMIT}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, release",
    [
        ("DFEW-fold1.pth", Release("dfew", 1)),
        ("dfew/split03/checkpoint-best.pth", Release("dfew", 3)),
        ("s2d_DFEW_set_2.pth", Release("dfew", 2)),
        ("dfew5.pth", Release("dfew", 5)),
        ("dfew_affectnet7_pretrain_fold4.pth", Release("dfew", 4)),  # the initialisation it cites does not count
        ("FERV39k.pth", Release("ferv39k", None)),
        ("fer-v39k_best.pth", Release("ferv39k", None)),
        ("MAFW_fold1.pth.tar", Release("mafw", 1)),
        ("pretrain-AffectNet-7.pth", Release("affectnet7", None)),
        ("s2d_pretrain.pth", Release("affectnet7", None)),
        ("s2d_dfew_best.pth", None),  # DFEW, but which fold?
        ("dfew_fold1_vs_fold2.pth", None),
        ("dfew_mafw_fold1.pth", None),
        ("affectnet-8.pth", None),
        ("README.md", None),
    ],
)
def test_release_names_map_to_dataset_and_fold(name, release):
    assert release_of(name) == release


def test_a_name_that_does_not_map_lists_the_repository_and_asks_for_file(env):
    entry, lock = env.registry["s2d-dfew"], Lock(env.lock_path)
    env.hub.commits[REV_A] = {"README.md": b"x", "s2d_dfew_best.pth": env.dfew, "dfew_fold2.pth": b"2"}
    with pytest.raises(WeightsError, match=r"no file .* looks like dfew fold 1.*README.md, s2d_dfew_best.pth.*--file"):
        pull("s2d-dfew", registry=env.registry, store_root=env.store)
    env.hub.commits[REV_A] |= {"a_dfew_fold1.pth": b"1", "b_dfew_fold1.pth": b"1"}
    with pytest.raises(WeightsError, match=r"2 files .* look like dfew fold 1 \(a_dfew_fold1.pth, b_dfew_fold1.pth"):
        fetch(entry, lock)
    with pytest.raises(WeightsError, match=r"has no file nope\.pth\. The repository has: README\.md"):
        fetch(entry, lock, file="nope.pth")
    fetched = fetch(entry, lock, file="s2d_dfew_best.pth")
    assert fetched.pin.file == "s2d_dfew_best.pth" and fetched.path.read_bytes() == env.dfew
    args = build_parser().parse_args(["weights", "pull", "s2d-dfew", "--file", "s2d_dfew_best.pth", "--lock", "x"])
    assert (args.file, args.lock) == ("s2d_dfew_best.pth", "x")


def closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on: connection refused, like a machine without network
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_fails_fast_with_what_to_do_by_hand(env, monkeypatch):
    cmd = [sys.executable, "-m", "s2d", "weights", "pull", "s2d-dfew", "--store", str(env.store)]
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 3 and time.monotonic() - start < 30  # interpreter start-up included
    assert "offline (HF_HUB_OFFLINE is set)" in result.stderr
    assert "s2d weights import FILE --name s2d-dfew" in result.stderr and "huggingface.co/cyinen/S2D" in result.stderr
    assert env.hub.requests == []
    for endpoint in (f"http://127.0.0.1:{closed_port()}", "http://no-such-host.invalid"):  # refused; DNS failure
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        start = time.monotonic()
        with pytest.raises(
            WeightsError, match=r"cannot reach .*offline\? Download .*`s2d weights import FILE --name s2d-dfew`"
        ):
            pull("s2d-dfew", registry=env.registry, store_root=env.store)
        assert time.monotonic() - start < 10
    monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(WeightsError, match=r"cannot reach .*or copy it to .*mobilefacenet_model_best.pth.tar"):
        fetch(env.registry["mobilefacenet"], Lock(env.lock_path))


def test_import_checks_the_lock_and_needs_no_network(env, monkeypatch):
    for var in ("HF_ENDPOINT", "S2D_WEIGHTS_BASE_URL"):  # nothing may be downloaded
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    env.write_lock()
    (env.tmp / "bad.pth").write_bytes(flip_last_byte(env.dfew))
    (env.tmp / DFEW).write_bytes(env.dfew)
    (env.tmp / "mobilefacenet_model_best.pth.tar").write_bytes(env.hub.raw[LANDMARK_RAW])
    with pytest.raises(WeightsError, match=r"bad\.pth as s2d-dfew: sha256 mismatch: the lock"):
        import_file(env.tmp / "bad.pth", "s2d-dfew", registry=env.registry, store_root=env.store)
    lm = import_file(env.tmp / "mobilefacenet_model_best.pth.tar", registry=env.registry, store_root=env.store)
    assert lm.store_path is None and lm.files[0].checked == "the registry"  # named by file, checked by blob id
    # the landmark weights are now in the weights dir, so the S2D file converts without any download
    result = import_file(
        env.tmp / DFEW,
        "s2d-dfew",
        registry=env.registry,
        store_root=env.store,
        evaluation=synthetic_clips(2, 2, seed=4),
        **FP32,
    )
    assert ModelStore(env.store).get("s2d-dfew").path == result.store_path
    assert result.files[0].checked == f"the lock {env.lock_path}" and result.lock is None


def test_direct_downloads_without_a_pin_need_trust_and_a_web_page_is_not_weights(env):
    page = "login.html"
    env.hub.raw[page] = b"<html>Sign in to continue</html>"  # what some hosts send instead of a file
    entry = dataclasses.replace(
        env.registry["mobilefacenet"], name="landmark-copy", filename=page, git_blob=None, mirror_path=page
    )
    with pytest.raises(WeightsError, match=r"pins no git blob id or sha256.*--trust-unpinned"):
        fetch(entry, Lock(env.lock_path))
    with pytest.raises(WeightsError, match="web page"):
        fetch(entry, Lock(env.lock_path), trust_unpinned=True)
    assert not list((env.tmp / "weights").rglob("login.html*"))


def test_the_shipped_registry_pins_the_landmark_to_the_authors_commit(monkeypatch):
    monkeypatch.delenv("S2D_WEIGHTS_BASE_URL", raising=False)
    names = {e.name: e for e in DEFAULT_REGISTRY}
    assert {"s2d-affectnet7", "s2d-dfew", "s2d-ferv39k", "s2d-mafw", "mobilefacenet"} <= set(names)
    for entry in DEFAULT_REGISTRY:
        assert entry.licence and entry.manual.startswith("https://")
        assert entry.on_hub == (entry.kind == "s2d") and entry.sha256 is None  # Hub files: pinned by the lock
    assert "commercial" in names["s2d-mafw"].licence and names["s2d-affectnet7"].filename == "pretrain-AffectNet-7.pth"
    assert (names["s2d-dfew"].fold, names["s2d-mafw"].fold, names["s2d-ferv39k"].fold) == (1, 1, None)
    lm = names["mobilefacenet"]
    assert (lm.revision, lm.git_blob) == (
        "e1b5e5dfb57ab15f70103c933b346bfa62943159",
        "3f7d78be085b0dc33ec914bc1d70fc991ba04bfa",
    )
    assert lm.resolved_url() == (
        "https://raw.githubusercontent.com/MSA-LMC/S2D/e1b5e5dfb57ab15f70103c933b346bfa62943159/"
        "landmark/mobilefacenet_model_best.pth.tar"
    )
    monkeypatch.setenv("S2D_WEIGHTS_BASE_URL", "http://mirror.example/s2d/")
    assert lm.resolved_url() == f"http://mirror.example/s2d/MSA-LMC/S2D/{S2D_COMMIT}/{MOBILEFACENET_FILE}"
