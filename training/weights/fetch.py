"""Fetching a release's file: the Hugging Face Hub (huggingface_hub, its cache and mirrors) or a pinned URL, offline
failing fast with what to download by hand."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s2d.files import user_cache_dir
from s2d.training.weights.lock import Digests, Expected, Lock, Pin, _expect_pin, _expect_registry, check
from s2d.training.weights.registry import HF_DEFAULT_ENDPOINT, TIMEOUT_S, WeightsEntry, WeightsError, pick_file

log = logging.getLogger(__name__)


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
