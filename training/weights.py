"""The authors' released weights: a pinned registry, a verified download, and conversion into the model store.

`pull(name)` downloads a registered checkpoint (and the MobileFaceNet landmark weights it needs), checks its sha256
while streaming, converts it to our model and exports it into the model store with a card (classes of its dataset,
licence, source sha256, reported metrics). `import_file(path, name)` does the same from a file the user fetched by
hand, which is how an offline machine gets real weights.

Pinning: every entry names a revision and a sha256. Where the value could not be read from the published files
while this registry was written (this project is built offline), the field is `None` and says so: such an entry is
refused by `pull` unless the caller passes `trust_unpinned=True` (`--trust-unpinned`), and `import_file` records the
file's own sha256 in the card. No hash here is invented.

Mirrors: `$S2D_WEIGHTS_BASE_URL` replaces every host (files are then fetched from `<base>/<entry.mirror_path>`), and
`$HF_ENDPOINT` replaces https://huggingface.co for Hugging Face entries, as in huggingface_hub. A registry of other
entries can be given as a JSON file (`--registry FILE`, `$S2D_WEIGHTS_REGISTRY`): a list of `WeightsEntry` fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

HF_REPO = "cyinen/S2D"
# Socket timeout for connecting and for each read: offline fails in seconds, not after the OS's TCP timeout.
TIMEOUT_S = 10.0
UNKNOWN = None  # a revision or sha256 that could not be read offline; see the module docstring

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
    """One released file: where it lives (pinned), what it holds, and its licence."""

    name: str
    kind: Literal["s2d", "landmark"]
    filename: str | None  # None: the file name in the repository is not known here
    url: str  # the canonical download URL, with {revision} and {filename} filled in by `resolved_url`
    mirror_path: str  # path below $S2D_WEIGHTS_BASE_URL
    revision: str | None
    sha256: str | None
    licence: str
    manual: str  # where a person finds the file in a browser
    dataset: str | None = None  # class names come from this dataset (training.data.layouts.DATASET_CLASSES)
    architecture: str = "s2d_base"  # the model config whose non-inferable fields (heads, ...) the file uses
    window_seconds: float = 2.0
    metrics: dict[str, Any] | None = None
    description: str = ""
    needs: tuple[str, ...] = ("mobilefacenet",)

    @property
    def pinned(self) -> bool:
        return self.revision is not None and self.sha256 is not None and self.filename is not None

    def resolved_url(self) -> str:
        if os.environ.get("S2D_WEIGHTS_BASE_URL"):
            base = os.environ["S2D_WEIGHTS_BASE_URL"].rstrip("/")
            return f"{base}/{self._fill(self.mirror_path)}"
        url = self._fill(self.url)
        if os.environ.get("HF_ENDPOINT") and url.startswith("https://huggingface.co/"):
            url = os.environ["HF_ENDPOINT"].rstrip("/") + url.removeprefix("https://huggingface.co")
        return url

    def _fill(self, template: str) -> str:
        return template.format(revision=self.revision or "main", filename=self.filename or "")


def _hf(name: str, filename: str | None, dataset: str, description: str, **kw) -> WeightsEntry:
    return WeightsEntry(
        name=name,
        kind="s2d",
        filename=filename,
        url=f"https://huggingface.co/{HF_REPO}/resolve/{{revision}}/{{filename}}",
        mirror_path=f"{HF_REPO}/resolve/{{revision}}/{{filename}}",
        revision=kw.pop("revision", UNKNOWN),
        sha256=kw.pop("sha256", UNKNOWN),
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
        "pretrain-AffectNet-7.pth",  # named by the official README's download link
        "affectnet7",
        "static (image) stage trained on AffectNet-7: the initialisation of the video models; T=1",
    ),
    _hf(
        "s2d-dfew",
        None,  # the fine-tuned files' names are not in the official README; see the repository listing
        "dfew",
        "video model fine-tuned on DFEW fold 1",
        metrics={"dataset": "DFEW fold 1", "uar": 61.56, "war": 76.16, "source": "authors' README"},
    ),
    _hf(
        "s2d-ferv39k",
        None,
        "ferv39k",
        "video model fine-tuned on FERV39k",
        metrics={"dataset": "FERV39k", "uar": 41.28, "war": 52.56, "source": "authors' README"},
    ),
    _hf(
        "s2d-mafw",
        None,
        "mafw",
        "video model fine-tuned on MAFW fold 1 (11 classes); MAFW forbids commercial use",
        metrics={"dataset": "MAFW fold 1", "uar": 32.78, "war": 46.76, "source": "authors' README"},
    ),
    WeightsEntry(
        name="mobilefacenet",
        kind="landmark",
        filename="mobilefacenet_model_best.pth.tar",
        url="https://drive.google.com/uc?export=download&id=1T8J73UTcB25BEJ_ObAJczCkyGKW5VaeY",
        mirror_path="gdrive/1T8J73UTcB25BEJ_ObAJczCkyGKW5VaeY/{filename}",
        revision="1T8J73UTcB25BEJ_ObAJczCkyGKW5VaeY",  # a Drive file id names one upload
        sha256=UNKNOWN,
        licence="MobileFaceNet landmark weights from cunjian/pytorch_face_landmark (no licence stated by the authors)",
        manual="https://drive.google.com/file/d/1T8J73UTcB25BEJ_ObAJczCkyGKW5VaeY/view",
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


def weights_dir() -> Path:
    """Downloaded files: `$S2D_WEIGHTS_DIR`, else `$XDG_CACHE_HOME/s2d/weights` (`~/.cache/s2d/weights`)."""
    if os.environ.get("S2D_WEIGHTS_DIR"):
        return Path(os.environ["S2D_WEIGHTS_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s2d" / "weights"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(entry: WeightsEntry, target: Path) -> str:
    return (
        f"Download {entry.filename or 'the file'} by hand from {entry.manual} (on a machine with internet), then run "
        f"`s2d weights import FILE --name {entry.name}` (or copy it to {target} and rerun `s2d weights pull "
        f"{entry.name}`)."
    )


@dataclass
class Fetched:
    entry: WeightsEntry
    path: Path
    sha256: str
    verified: bool  # True: matched the registry's pinned sha256; False: the registry pins none


def download(url: str, target: Path, expected_sha256: str | None, timeout: float = TIMEOUT_S) -> str:
    """Stream `url` into `target` via a temp file, hashing on the way; rename only if the sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "s2d-weights/1"})
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            if response.headers.get_content_type() == "text/html":  # a login / virus-scan / error page, not weights
                raise WeightsError(f"{url} sent a web page instead of the file (a confirmation or error page)")
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise WeightsError(
                f"sha256 mismatch for {url}: expected {expected_sha256}, got {actual}. The file was not kept; it is "
                "not the pinned release (a changed upload, a proxy's error page, or tampering)."
            )
        tmp.replace(target)
        return actual
    finally:
        tmp.unlink(missing_ok=True)


def fetch(entry: WeightsEntry, trust_unpinned: bool = False, directory: Path | None = None) -> Fetched:
    """The entry's file in the weights directory: reused if already there and valid, else downloaded and verified."""
    target = (directory or weights_dir()) / entry.name / (entry.filename or "unknown")
    if entry.filename is None:
        raise WeightsError(
            f"{entry.name}: the registry does not know this file's name in the release. " + _by_hand(entry, target)
        )
    if target.is_file():
        actual = sha256_file(target)
        if entry.sha256 is None or actual == entry.sha256:
            return Fetched(entry, target, actual, verified=entry.sha256 is not None)
        raise WeightsError(f"{target} does not have the pinned sha256 {entry.sha256} (it has {actual}); remove it")
    if not entry.pinned and not trust_unpinned:
        missing = [f for f in ("revision", "sha256") if getattr(entry, f) is None]
        raise WeightsError(
            f"{entry.name}: no pinned {' and '.join(missing)} is known for {entry.filename}, so a download cannot be "
            "verified; pass --trust-unpinned to accept whatever the server sends (its sha256 goes into the card). "
            + _by_hand(entry, target)
        )
    url = entry.resolved_url()
    log.info("downloading %s from %s", entry.name, url)
    try:
        actual = download(url, target, entry.sha256)
    except urllib.error.HTTPError as err:
        raise WeightsError(
            f"{entry.name}: {url} answered HTTP {err.code} {err.reason}. " + _by_hand(entry, target)
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(
            f"{entry.name}: cannot reach {url} ({reason}); offline? " + _by_hand(entry, target)
        ) from None
    return Fetched(entry, target, actual, verified=entry.sha256 is not None)


def place(entry: WeightsEntry, file: str | Path, directory: Path | None = None) -> Fetched:
    """Copy a file fetched by hand into the weights directory after checking it against the pinned sha256."""
    file = Path(file)
    if not file.is_file():
        raise WeightsError(f"no such file: {file}")
    actual = sha256_file(file)
    if entry.sha256 is not None and actual != entry.sha256:
        raise WeightsError(
            f"{file} is not the pinned {entry.name} release: sha256 {actual}, expected {entry.sha256}. Refused."
        )
    target = (directory or weights_dir()) / entry.name / (entry.filename or file.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if file.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(file, tmp)
        tmp.replace(target)
    return Fetched(dataclasses.replace(entry, filename=target.name), target, actual, verified=entry.sha256 is not None)


@dataclass
class PullResult:
    name: str
    store_path: Path | None  # None for landmark weights, which are an input, not a served model
    files: list[Fetched] = field(default_factory=list)


def _landmark(
    entry: WeightsEntry,
    registry: dict[str, WeightsEntry],
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
        return place(lm_entry, landmark, directory)
    return fetch(lm_entry, trust_unpinned, directory)


def convert(
    fetched: Fetched,
    landmark: Fetched | None,
    store_root: str | Path | None = None,
    **export_options,
):
    """Official checkpoint (+ MobileFaceNet) -> our model -> the model store, with a card saying where it came from."""
    from models import get_config
    from models.checkpoint import CheckpointError, load_mobilefacenet_checkpoint, model_from_official
    from s2d.card import SourceCheckpoint
    from training.data.layouts import DATASET_CLASSES
    from training.export import export_to_store

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
        "url": entry.resolved_url(),
        "revision": entry.revision,
        "sha256_pinned": entry.sha256 is not None,
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


def pull(
    name: str,
    *,
    registry: dict[str, WeightsEntry] | None = None,
    store_root: str | Path | None = None,
    trust_unpinned: bool = False,
    directory: Path | None = None,
    **export_options,
) -> PullResult:
    """Download (verified) and convert one registered release into the model store."""
    registry = registry or load_registry()
    entry = _entry(registry, name)
    fetched = fetch(entry, trust_unpinned, directory)
    if entry.kind == "landmark":
        return PullResult(name, None, [fetched])
    landmark = _landmark(entry, registry, trust_unpinned, None, directory)
    stored = convert(fetched, landmark, store_root, **export_options)
    return PullResult(name, stored.path, [fetched, *([landmark] if landmark else [])])


def import_file(
    file: str | Path,
    name: str | None = None,
    *,
    registry: dict[str, WeightsEntry] | None = None,
    store_root: str | Path | None = None,
    landmark: str | Path | None = None,
    trust_unpinned: bool = False,
    directory: Path | None = None,
    **export_options,
) -> PullResult:
    """A file fetched by hand: checked against the pinned sha256 (if any), kept in the weights dir, converted."""
    registry = registry or load_registry()
    entry = _entry(registry, name) if name else _match(registry, Path(file))
    fetched = place(entry, file, directory)
    if entry.kind == "landmark":
        return PullResult(entry.name, None, [fetched])
    lm = _landmark(entry, registry, trust_unpinned, landmark, directory)
    stored = convert(fetched, lm, store_root, **export_options)
    return PullResult(entry.name, stored.path, [fetched, *([lm] if lm else [])])


def _entry(registry: dict[str, WeightsEntry], name: str) -> WeightsEntry:
    if name not in registry:
        raise WeightsError(f"no weights named {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def _match(registry: dict[str, WeightsEntry], file: Path) -> WeightsEntry:
    digest = sha256_file(file) if file.is_file() else None
    for entry in registry.values():
        if (entry.sha256 and entry.sha256 == digest) or entry.filename == file.name:
            return entry
    raise WeightsError(f"cannot tell which release {file.name} is: pass --name (one of {', '.join(sorted(registry))})")
