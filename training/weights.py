"""The authors' released weights: found on the Hugging Face Hub, pinned by a lock, verified, converted into the store.

`pull(name)` fetches a release and the MobileFaceNet landmark weights it needs, checks the bytes, converts the
checkpoint to our model and exports it into the model store with a card (classes of its dataset, licence, source
sha256, reported metrics). `import_file(path, name)` does the same from a file the user fetched by hand, which is how
an offline machine gets real weights.

Where the files come from:

- S2D checkpoints: the Hugging Face repository `cyinen/S2D`, through `huggingface_hub` (its cache, `$HF_ENDPOINT` for
  mirrors, `$HF_HUB_OFFLINE`). The authors do not publish the fine-tuned files' names, so a pull lists the repository
  and maps names to dataset and fold (`release_of`); `file=` (`--file`) picks one by hand.
- MobileFaceNet: `landmark/mobilefacenet_model_best.pth.tar` inside the authors' GitHub repository, pinned by commit
  and git blob id (`$S2D_WEIGHTS_BASE_URL` replaces the host with a mirror of the same layout).

Pinning: the registry pins nothing on the Hub, because nothing could be read from it when this project was written
(it is built offline). The first pull trusts what the Hub lists (its commit, and the LFS sha256 or git blob id of the
file: trust on first use) and writes `weights.lock.json` in the store root with repo, commit, file, size and sha256.
Every later pull given that lock fetches exactly that commit and file and refuses other bytes. A file that fails a
check is removed: neither the Hub cache nor the model store keeps it.

A registry of other entries can be given as a JSON file (`--registry FILE`, `$S2D_WEIGHTS_REGISTRY`): a list of
`WeightsEntry` fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from s2d.files import user_cache_dir

log = logging.getLogger(__name__)

HF_REPO = "cyinen/S2D"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
LOCK_FILE = "weights.lock.json"
# Timeout for connecting and for each read: offline fails in seconds, not after the OS's TCP timeout.
TIMEOUT_S = 10.0

# The landmark checkpoint as committed to the authors' repository (not Git LFS: the repository has no
# .gitattributes, so the raw URL serves the file itself and its git blob id is the file's).
S2D_GITHUB = "MSA-LMC/S2D"
S2D_COMMIT = "e1b5e5dfb57ab15f70103c933b346bfa62943159"
MOBILEFACENET_FILE = "landmark/mobilefacenet_model_best.pth.tar"
MOBILEFACENET_BLOB = "3f7d78be085b0dc33ec914bc1d70fc991ba04bfa"  # the same blob as in cunjian/pytorch_face_landmark

LICENCE_S2D = (
    "S2D code: Apache-2.0 (MSA-LMC/S2D). The released weights carry no separate licence; they were trained on "
    "{data}, whose terms bind their use."
)
DATA_TERMS = {
    "affectnet7": "AffectNet (academic research use only under its licence agreement; no commercial use)",
    "dfew": "DFEW (academic research use only under its licence agreement)",
    "ferv39k": "FERV39k (academic research use only under its licence agreement)",
    "mafw": "MAFW (the MAFW licence forbids any commercial use; research only)",
}


class WeightsError(RuntimeError):
    """A weights file that cannot be fetched, verified or converted; the message says what to do by hand."""


@dataclass(frozen=True)
class WeightsEntry:
    """One released file: where it lives, what it holds, and its licence."""

    name: str
    kind: Literal["s2d", "landmark"]
    licence: str
    manual: str  # where a person finds the file in a browser
    repo: str = HF_REPO
    filename: str | None = None  # None: found by listing the repository (`release_of`)
    url: str | None = None  # a direct download instead of the Hub; {repo}, {revision}, {filename} are filled in
    mirror_path: str | None = None  # the same below $S2D_WEIGHTS_BASE_URL
    revision: str | None = None  # Hub: the branch the first pull resolves (default main); url: the pinned commit
    sha256: str | None = None
    git_blob: str | None = None  # git's blob id of the file (url entries)
    dataset: str | None = None  # class names come from this dataset (training.data.layouts.DATASET_CLASSES)
    fold: int | None = None  # the dataset's cross-validation fold (DFEW, MAFW)
    architecture: str = "s2d_base"  # the model config whose non-inferable fields (heads, ...) the file uses
    window_seconds: float = 2.0
    metrics: dict[str, Any] | None = None
    description: str = ""
    needs: tuple[str, ...] = ("mobilefacenet",)

    @property
    def on_hub(self) -> bool:
        return self.url is None

    def resolved_url(self) -> str:
        """The download URL of a url entry (a mirror's under $S2D_WEIGHTS_BASE_URL)."""
        base = os.environ.get("S2D_WEIGHTS_BASE_URL", "").rstrip("/")
        template = f"{base}/{self.mirror_path}" if base and self.mirror_path else self.url
        return template.format(repo=self.repo, revision=self.revision, filename=self.filename)

    @property
    def label(self) -> str:
        fold = f" fold {self.fold}" if self.fold else ""
        return f"{self.dataset}{fold}" if self.dataset else self.name


def _hf(name: str, dataset: str, description: str, **kw) -> WeightsEntry:
    return WeightsEntry(
        name=name,
        kind="s2d",
        licence=LICENCE_S2D.format(data=DATA_TERMS[dataset]),
        manual=f"https://huggingface.co/{HF_REPO}/tree/main",
        dataset=dataset,
        description=description,
        **kw,
    )


# Figures: the authors' README (MSA-LMC/S2D), fold 1 / whole set, without oversampling.
DEFAULT_REGISTRY: tuple[WeightsEntry, ...] = (
    _hf(
        "s2d-affectnet7",
        "affectnet7",
        "static (image) stage trained on AffectNet-7: the initialisation of the video models; T=1",
        filename="pretrain-AffectNet-7.pth",  # named by the official README's download link
    ),
    _hf(
        "s2d-dfew",
        "dfew",
        "video model fine-tuned on DFEW fold 1",
        fold=1,
        metrics={"dataset": "DFEW fold 1", "uar": 61.56, "war": 76.16, "source": "authors' README"},
    ),
    _hf(
        "s2d-ferv39k",
        "ferv39k",
        "video model fine-tuned on FERV39k",
        metrics={"dataset": "FERV39k", "uar": 41.28, "war": 52.56, "source": "authors' README"},
    ),
    _hf(
        "s2d-mafw",
        "mafw",
        "video model fine-tuned on MAFW fold 1 (11 classes); MAFW forbids commercial use",
        fold=1,
        metrics={"dataset": "MAFW fold 1", "uar": 32.78, "war": 46.76, "source": "authors' README"},
    ),
    WeightsEntry(
        name="mobilefacenet",
        kind="landmark",
        licence=(
            "MobileFaceNet landmark weights from cunjian/pytorch_face_landmark (no licence stated by their authors), "
            "as redistributed in MSA-LMC/S2D"
        ),
        manual=f"https://github.com/{S2D_GITHUB}/blob/{S2D_COMMIT}/{MOBILEFACENET_FILE}",
        repo=S2D_GITHUB,
        filename=MOBILEFACENET_FILE,
        url="https://raw.githubusercontent.com/{repo}/{revision}/{filename}",
        mirror_path="{repo}/{revision}/{filename}",
        revision=S2D_COMMIT,
        git_blob=MOBILEFACENET_BLOB,
        description="the frozen landmark network every S2D model uses (MCP inputs)",
        needs=(),
    ),
)


def load_registry(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """The default registry, or the entries of a JSON file (a list of WeightsEntry fields) when one is given."""
    path = path or os.environ.get("S2D_WEIGHTS_REGISTRY")
    if not path:
        return {e.name: e for e in DEFAULT_REGISTRY}
    try:
        rows = json.loads(Path(path).read_text())
        entries = [WeightsEntry(**{**row, "needs": tuple(row.get("needs", ("mobilefacenet",)))}) for row in rows]
    except (OSError, ValueError, TypeError) as err:
        raise WeightsError(f"cannot read the weights registry {path}: {err}") from None
    return {e.name: e for e in entries}


# ---- which file of the repository is which release ------------------------------------------------------------

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors")
VIDEO_SETS = {"dfew": r"dfew", "ferv39k": r"fer[-_ ]?v[-_ ]?39", "mafw": r"mafw"}
FOLDED = {"dfew", "mafw"}  # five-fold protocols
FOLD_PATTERNS = (r"(?:fold|split|set)[-_ #]?0?([1-5])(?!\d)", r"(?:dfew|mafw)[-_ ]?f?0?([1-5])(?![\dk])")


class Release(NamedTuple):
    dataset: str
    fold: int | None


def release_of(path: str) -> Release | None:
    """The dataset (and fold) a checkpoint's repository path names, or None when it names none or several.

    Liberal in spelling (`DFEW-fold1.pth`, `dfew/split01/checkpoint-best.pth`, `FERV39k.pth`, `mafw_set_2.pth`,
    `pretrain-AffectNet-7.pth`); strict in ambiguity: two video datasets, two different folds, or a DFEW / MAFW file
    without a fold map to nothing. A video dataset wins over AffectNet / "pretrain", which fine-tuned names may cite
    as their initialisation."""
    name = path.lower()
    if not name.endswith(WEIGHT_SUFFIXES):
        return None
    videos = [d for d, pattern in VIDEO_SETS.items() if re.search(pattern, name)]
    if len(videos) > 1:
        return None
    if not videos:
        other_affectnet = re.search(r"affect[-_ ]?net[-_ ]?8", name)
        is_affectnet7 = re.search(r"affect[-_ ]?net", name) or "pretrain" in name
        return Release("affectnet7", None) if is_affectnet7 and not other_affectnet else None
    dataset = videos[0]
    if dataset not in FOLDED:
        return Release(dataset, None)
    folds = {int(m) for pattern in FOLD_PATTERNS for m in re.findall(pattern, name)}
    return Release(dataset, folds.pop()) if len(folds) == 1 else None


def pick_file(entry: WeightsEntry, files: list[str], where: str) -> str:
    """The repository file of `entry`: its registered name if present, else the one file that maps to its release."""
    if entry.filename in files:
        return entry.filename
    found = [f for f in files if release_of(f) == (entry.dataset, entry.fold)]
    if len(found) == 1:
        return found[0]
    problem = f"{len(found)} files of {where} look like" if found else f"no file of {where} looks like"
    raise WeightsError(
        f"{entry.name}: {problem} {entry.label} ({', '.join(found) or 'names are mapped by dataset and fold'}). "
        f"The repository has: {', '.join(files) or 'no files'}. Pick one with "
        f"`s2d weights pull {entry.name} --file FILE`."
    )


# ---- the lock ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """What one pull fetched: the lock's row for one entry."""

    repo: str
    revision: str | None  # None only for a file imported by hand (never written to the lock)
    file: str
    size: int
    sha256: str


@dataclass
class Lock:
    """`weights.lock.json`: per entry the repo, commit, file, size and sha256 the first pull saw."""

    path: Path
    pins: dict[str, Pin] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Lock:
        path = Path(path).expanduser()
        if not path.is_file():
            return cls(path)
        try:
            rows = json.loads(path.read_text())["entries"]
            return cls(path, {name: Pin(**row) for name, row in rows.items()})
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise WeightsError(f"cannot read the weights lock {path}: {err}") from None

    def save(self) -> None:
        rows = {name: dataclasses.asdict(pin) for name, pin in sorted(self.pins.items())}
        text = json.dumps({"version": 1, "written_by": "s2d weights pull", "entries": rows}, indent=2) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.part")
        tmp.write_text(text)
        tmp.replace(self.path)


def default_lock_path(store_root: str | Path | None = None) -> Path:
    """`weights.lock.json` in the model store's root folder."""
    from s2d.store import default_store_dir

    return (Path(store_root).expanduser() if store_root else default_store_dir()) / LOCK_FILE


# ---- checking bytes ---------------------------------------------------------------------------------------------


class Digests(NamedTuple):
    size: int
    sha256: str
    git_blob: str


def digests(path: str | Path) -> Digests:
    """Size, sha256 and git blob id (sha1 of `blob <size>\\0` + bytes) in one read."""
    size = os.path.getsize(path)
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            blob.update(block)
    return Digests(size, sha256.hexdigest(), blob.hexdigest())


@dataclass(frozen=True)
class Expected:
    """What the bytes must match, and who says so (for messages and the card)."""

    source: str
    size: int | None = None
    sha256: str | None = None
    git_blob: str | None = None

    @property
    def anything(self) -> bool:
        return (self.size, self.sha256, self.git_blob) != (None, None, None)


def check(path: Path, expected: Expected, what: str) -> Digests:
    got = digests(path)
    for key in ("size", "sha256", "git_blob"):
        want = getattr(expected, key)
        if want is not None and want != getattr(got, key):
            raise WeightsError(
                f"{what}: {key.replace('_', ' ')} mismatch: {expected.source} says {want}, the file has "
                f"{getattr(got, key)}. The file was not kept; it is not the pinned release (a changed upload, a "
                "proxy's error page, or tampering)."
            )
    return got


def _expect_pin(pin: Pin, lock: Lock) -> Expected:
    return Expected(f"the lock {lock.path}", size=pin.size, sha256=pin.sha256)


def _expect_registry(entry: WeightsEntry, pin: Pin | None, lock: Lock) -> Expected:
    if pin is not None and (pin.revision, pin.file) != (entry.revision, entry.filename):
        raise WeightsError(
            f"{entry.name}: the lock {lock.path} pins {pin.file}@{pin.revision} but the registry pins "
            f"{entry.filename}@{entry.revision}; remove the entry from the lock to follow the registry"
        )
    pinned = [s for s, v in (("the registry", entry.git_blob or entry.sha256), (f"the lock {lock.path}", pin)) if v]
    return Expected(
        " and ".join(pinned) or "nothing",
        size=pin.size if pin else None,
        sha256=entry.sha256 or (pin.sha256 if pin else None),
        git_blob=entry.git_blob,
    )


# ---- fetching ---------------------------------------------------------------------------------------------------


@dataclass
class Fetched:
    entry: WeightsEntry
    path: Path
    pin: Pin  # what was fetched; goes into the lock
    url: str
    checked: str | None  # what the bytes matched; None: nothing to check them against

    @property
    def sha256(self) -> str:
        return self.pin.sha256

    @property
    def verified(self) -> bool:
        return self.checked is not None


def weights_dir() -> Path:
    """Direct downloads and files imported by hand: `$S2D_WEIGHTS_DIR`, else `~/.cache/s2d/weights`."""
    if os.environ.get("S2D_WEIGHTS_DIR"):
        return Path(os.environ["S2D_WEIGHTS_DIR"]).expanduser()
    return user_cache_dir("s2d", "weights")


def hub_endpoint() -> str:
    # Read at call time: huggingface_hub reads $HF_ENDPOINT once, at import.
    return os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hugging Face cache as huggingface_hub finds it ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or user_cache_dir("huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or constants.is_offline_mode()


def _by_hand(entry: WeightsEntry, file: str | None, target: Path | None = None) -> str:
    copy = f" (or copy it to {target} and rerun `s2d weights pull {entry.name}`)" if target else ""
    return (
        f"Download {file or entry.filename or f'the {entry.label} checkpoint'} by hand from {entry.manual} (on a "
        f"machine with internet), then run `s2d weights import FILE --name {entry.name}`{copy}."
    )


def _offline_error(entry: WeightsEntry, file: str | None, target: Path | None = None) -> WeightsError:
    return WeightsError(
        f"{entry.name}: offline (HF_HUB_OFFLINE is set) and the file is not in the cache. "
        + _by_hand(entry, file, target)
    )


@contextlib.contextmanager
def _hub_errors(entry: WeightsEntry, file: str | None) -> Iterator[None]:
    """huggingface_hub's and its HTTP client's errors as a WeightsError that says what to do by hand."""
    import httpx2
    from huggingface_hub import errors

    endpoint = hub_endpoint()
    try:
        yield
    except errors.OfflineModeIsEnabled:
        raise _offline_error(entry, file) from None
    except (httpx2.TransportError, errors.LocalEntryNotFoundError) as err:
        raise WeightsError(
            f"{entry.name}: cannot reach {endpoint} ({err}); offline? " + _by_hand(entry, file)
        ) from None
    except (errors.HfHubHTTPError, errors.FileMetadataError) as err:
        first_line = str(err).splitlines()[0]
        raise WeightsError(f"{entry.name}: {endpoint} refused ({first_line}). " + _by_hand(entry, file)) from None
    except OSError as err:  # huggingface_hub's size check of the bytes against the Hub's metadata, a full disk, ...
        first_line = str(err).splitlines()[0]
        raise WeightsError(f"{entry.name}: download from {endpoint} failed ({first_line}); nothing was kept") from None


def _listing(entry: WeightsEntry, revision: str, file: str | None):
    """The repository at `revision` with its files' sizes and hashes (one API call: fails fast when offline)."""
    from huggingface_hub import HfApi

    with _hub_errors(entry, file):
        return HfApi(endpoint=hub_endpoint()).model_info(
            entry.repo, revision=revision, files_metadata=True, timeout=TIMEOUT_S
        )


def _sibling(entry: WeightsEntry, info, file: str):
    for sibling in info.siblings or ():
        if sibling.rfilename == file:
            return sibling
    names = ", ".join(s.rfilename for s in info.siblings or ()) or "no files"
    raise WeightsError(f"{entry.name}: {entry.repo}@{info.sha} has no file {file}. The repository has: {names}.")


def _expect_listing(entry: WeightsEntry, info, sibling) -> Expected:
    log.warning(
        "%s: no lock entry, trusting %s@%s as the Hub lists it (trust on first use); the lock will pin it",
        entry.name,
        entry.repo,
        info.sha,
    )
    source = f"the Hub's listing of {entry.repo}@{info.sha} (trust on first use: no lock entry yet)"
    if sibling.lfs is not None:
        return Expected(source, size=sibling.lfs.size, sha256=sibling.lfs.sha256)
    return Expected(source, size=sibling.size, git_blob=sibling.blob_id)


def _evict(path: Path) -> None:
    """Remove a cached file that failed its check: the snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _hub_fetched(entry: WeightsEntry, revision: str, file: str, path: Path, expected: Expected) -> Fetched:
    try:
        got = check(path, expected, f"{entry.name} ({entry.repo}@{revision}/{file})")
    except WeightsError:
        _evict(path)
        raise
    url = f"{hub_endpoint()}/{entry.repo}/resolve/{revision}/{file}"
    pin = Pin(entry.repo, revision, file, got.size, got.sha256)
    return Fetched(entry, path, pin, url, expected.source if expected.anything else None)


def _hub_download(entry: WeightsEntry, revision: str, file: str) -> Path:
    from huggingface_hub import hf_hub_download

    with _hub_errors(entry, file):
        return Path(
            hf_hub_download(
                entry.repo,
                file,
                revision=revision,
                cache_dir=hub_cache_dir(),
                endpoint=hub_endpoint(),
                etag_timeout=TIMEOUT_S,
            )
        )


def _fetch_hub(entry: WeightsEntry, lock: Lock, file: str | None) -> Fetched:
    pin = lock.pins.get(entry.name)
    if pin is not None:
        cached = _cached(entry, pin, lock, file)
        if cached is not None:
            return _hub_fetched(entry, pin.revision, pin.file, cached, _expect_pin(pin, lock))
    if offline():
        raise _offline_error(entry, pin.file if pin else file)
    info = _listing(entry, pin.revision if pin else entry.revision or "main", file)
    files = [s.rfilename for s in info.siblings or ()]
    name = pin.file if pin else file or pick_file(entry, files, f"{entry.repo}@{info.sha}")
    sibling = _sibling(entry, info, name)
    expected = _expect_pin(pin, lock) if pin else _expect_listing(entry, info, sibling)
    return _hub_fetched(entry, info.sha, name, _hub_download(entry, info.sha, name), expected)


def _cached(entry: WeightsEntry, pin: Pin, lock: Lock, file: str | None) -> Path | None:
    """The locked file in the Hub cache (no network needed), after checking the request agrees with the lock."""
    from huggingface_hub import try_to_load_from_cache

    if (pin.repo, pin.file) != (entry.repo, file or pin.file):
        raise WeightsError(
            f"{entry.name}: the lock {lock.path} pins {pin.repo}/{pin.file}, not {entry.repo}/{file or pin.file}; "
            "remove the entry from the lock (or pass another --lock) to pick another file"
        )
    cached = try_to_load_from_cache(pin.repo, pin.file, cache_dir=hub_cache_dir(), revision=pin.revision)
    return Path(cached) if isinstance(cached, str) else None


def download(url: str, target: Path, expected: Expected, what: str, timeout: float = TIMEOUT_S) -> Digests:
    """Fetch `url` into a temp file next to `target`; rename it into place only if it matches `expected`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "s2d-weights/2"})
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            if response.headers.get_content_type() == "text/html":  # a login / virus-scan / error page, not weights
                raise WeightsError(f"{url} sent a web page instead of the file (a confirmation or error page)")
            shutil.copyfileobj(response, out, 1 << 20)
        got = check(tmp, expected, what)
        tmp.replace(target)
        return got
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_url(entry: WeightsEntry, lock: Lock, directory: Path | None, trust_unpinned: bool) -> Fetched:
    expected = _expect_registry(entry, lock.pins.get(entry.name), lock)
    target = (directory or weights_dir()) / entry.name / Path(entry.filename).name
    url = entry.resolved_url()
    if target.is_file():
        try:
            got = check(target, expected, f"{entry.name} ({target})")
        except WeightsError as err:
            raise WeightsError(f"{err} Remove {target} and pull again.") from None
    elif not expected.anything and not trust_unpinned:
        raise WeightsError(
            f"{entry.name}: the registry pins no git blob id or sha256 for {url}, so a download cannot be verified; "
            "pass --trust-unpinned to accept what the server sends (the lock then pins it). "
            + _by_hand(entry, None, target)
        )
    elif offline():
        raise _offline_error(entry, entry.filename, target)
    else:
        got = _download_url(entry, url, target, expected)
    pin = Pin(entry.repo, entry.revision, entry.filename, got.size, got.sha256)
    return Fetched(entry, target, pin, url, expected.source if expected.anything else None)


def _download_url(entry: WeightsEntry, url: str, target: Path, expected: Expected) -> Digests:
    log.info("downloading %s from %s", entry.name, url)
    try:
        return download(url, target, expected, f"{entry.name} ({url})")
    except urllib.error.HTTPError as err:
        raise WeightsError(
            f"{entry.name}: {url} answered HTTP {err.code} {err.reason}. " + _by_hand(entry, None, target)
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(
            f"{entry.name}: cannot reach {url} ({reason}); offline? " + _by_hand(entry, None, target)
        ) from None


def fetch(
    entry: WeightsEntry,
    lock: Lock,
    *,
    file: str | None = None,
    directory: Path | None = None,
    trust_unpinned: bool = False,
) -> Fetched:
    """The entry's file, verified: from the Hub (its cache first when the lock pins it) or a pinned URL."""
    if entry.on_hub:
        return _fetch_hub(entry, lock, file)
    if file not in (None, entry.filename):
        raise WeightsError(f"{entry.name} is pinned to {entry.filename} by the registry; --file does not apply")
    return _fetch_url(entry, lock, directory, trust_unpinned)


def place(entry: WeightsEntry, file: str | Path, lock: Lock, directory: Path | None = None) -> Fetched:
    """Copy a file fetched by hand into the weights directory after checking it against the lock / registry pin."""
    file = Path(file)
    if not file.is_file():
        raise WeightsError(f"{file} is not a file")
    pin = lock.pins.get(entry.name)
    if entry.on_hub:
        expected = _expect_pin(pin, lock) if pin else Expected("the registry", sha256=entry.sha256)
    else:
        expected = _expect_registry(entry, pin, lock)
    got = check(file, expected, f"{file} as {entry.name}")
    target = (directory or weights_dir()) / entry.name / (Path(pin.file).name if pin else file.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if file.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(file, tmp)
        tmp.replace(target)
    revision = pin.revision if pin else entry.revision
    fetched_pin = Pin(entry.repo, revision, pin.file if pin else file.name, got.size, got.sha256)
    return Fetched(
        entry, target, fetched_pin, f"file://{file.resolve()}", expected.source if expected.anything else None
    )


# ---- conversion and the two commands ----------------------------------------------------------------------------


@dataclass
class PullResult:
    name: str
    store_path: Path | None  # None for landmark weights, which are an input, not a served model
    files: list[Fetched] = field(default_factory=list)
    lock: Path | None = None  # the lock a pull wrote


def _landmark(
    entry: WeightsEntry,
    registry: dict[str, WeightsEntry],
    lock: Lock,
    trust_unpinned: bool,
    landmark: str | Path | None,
    directory: Path | None,
) -> Fetched | None:
    if "mobilefacenet" not in entry.needs:
        return None
    lm_entry = registry.get("mobilefacenet")
    if lm_entry is None:
        raise WeightsError("the registry has no 'mobilefacenet' entry, which S2D models need")
    if landmark is not None:
        return place(lm_entry, landmark, lock, directory)
    return fetch(lm_entry, lock, directory=directory, trust_unpinned=trust_unpinned)


def convert(
    fetched: Fetched,
    landmark: Fetched | None,
    store_root: str | Path | None = None,
    **export_options,
):
    """Official checkpoint (+ MobileFaceNet) -> our model -> the model store, with a card saying where it came from."""
    from s2d.card import SourceCheckpoint
    from s2d.models import get_config
    from s2d.models.checkpoint import CheckpointError, load_mobilefacenet_checkpoint, model_from_official
    from s2d.training.data.layouts import DATASET_CLASSES
    from s2d.training.export import export_to_store

    entry = fetched.entry
    try:
        landmark_sd = load_mobilefacenet_checkpoint(landmark.path) if landmark else None
        model, args = model_from_official(fetched.path, get_config(entry.architecture), landmark_sd)
    except CheckpointError as err:
        raise WeightsError(f"{entry.name}: {err}") from None
    classes = (
        list(DATASET_CLASSES[entry.dataset]) if entry.dataset else [str(i) for i in range(model.config.num_classes)]
    )
    provenance = {
        "release": entry.name,
        "url": fetched.url,
        "repo": fetched.pin.repo,
        "revision": fetched.pin.revision,
        "file": fetched.pin.file,
        "checked_against": fetched.checked,
        "landmark_sha256": landmark.sha256 if landmark else None,
        "official_args": {k: v for k, v in args.items() if isinstance(v, str | int | float | bool)},
    }
    return export_to_store(
        model,
        store_root,
        entry.name,
        classes,
        source=SourceCheckpoint(path=fetched.path.name, sha256=fetched.sha256),
        licence=entry.licence,
        description=entry.description,
        window_seconds=entry.window_seconds,
        metrics=entry.metrics,
        training={"dataset": entry.dataset, "provenance": provenance},
        **export_options,
    )


def _finish(
    fetched: Fetched,
    landmark: Fetched | None,
    store_root: str | Path | None,
    export_options: dict,
) -> PullResult:
    files = [fetched, *([landmark] if landmark else [])]
    if fetched.entry.kind == "landmark":
        return PullResult(fetched.entry.name, None, files)
    stored = convert(fetched, landmark, store_root, **export_options)
    return PullResult(fetched.entry.name, stored.path, files)


def pull(
    name: str,
    *,
    registry: dict[str, WeightsEntry] | None = None,
    store_root: str | Path | None = None,
    lock_path: str | Path | None = None,
    file: str | None = None,
    trust_unpinned: bool = False,
    directory: Path | None = None,
    **export_options,
) -> PullResult:
    """Fetch (verified against the lock, or trusted on first use and then locked) and convert one release."""
    registry = registry or load_registry()
    entry = _entry(registry, name)
    lock = Lock.load(lock_path or default_lock_path(store_root))
    fetched = fetch(entry, lock, file=file, directory=directory, trust_unpinned=trust_unpinned)
    landmark = None if entry.kind == "landmark" else _landmark(entry, registry, lock, trust_unpinned, None, directory)
    result = _finish(fetched, landmark, store_root, export_options)
    lock.pins.update({f.entry.name: f.pin for f in result.files})
    lock.save()
    result.lock = lock.path
    return result


def import_file(
    file: str | Path,
    name: str | None = None,
    *,
    registry: dict[str, WeightsEntry] | None = None,
    store_root: str | Path | None = None,
    lock_path: str | Path | None = None,
    landmark: str | Path | None = None,
    trust_unpinned: bool = False,
    directory: Path | None = None,
    **export_options,
) -> PullResult:
    """A file fetched by hand: checked against the lock / registry pin (if any), kept in the weights dir, converted."""
    registry = registry or load_registry()
    entry = _entry(registry, name) if name else _match(registry, Path(file))
    lock = Lock.load(lock_path or default_lock_path(store_root))
    fetched = place(entry, file, lock, directory)
    lm = None if entry.kind == "landmark" else _landmark(entry, registry, lock, trust_unpinned, landmark, directory)
    return _finish(fetched, lm, store_root, export_options)


def describe_pin(entry: WeightsEntry, lock: Lock) -> str:
    """How `entry` is pinned, for `s2d weights list`."""
    pin = lock.pins.get(entry.name)
    if pin is not None:
        return f"locked: {pin.file} @ {pin.revision}, sha256 {pin.sha256}"
    if entry.git_blob or entry.sha256:
        return f"pinned by the registry: {entry.filename} @ {entry.revision}, git blob {entry.git_blob or '-'}"
    return "not locked yet: the first pull trusts the Hub's listing and writes the lock"


def _entry(registry: dict[str, WeightsEntry], name: str) -> WeightsEntry:
    if name not in registry:
        raise WeightsError(f"no weights named {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def _match(registry: dict[str, WeightsEntry], file: Path) -> WeightsEntry:
    got = digests(file) if file.is_file() else None
    hashes = {got.sha256, got.git_blob} if got else set()
    for entry in registry.values():
        if hashes & {entry.sha256, entry.git_blob} or (entry.filename and Path(entry.filename).name == file.name):
            return entry
    raise WeightsError(f"cannot tell which release {file.name} is: pass --name (one of {', '.join(sorted(registry))})")
