"""A fetched checkpoint converted into the model store, and the two commands: `pull` and `import_file`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from s2d.training.weights.fetch import Fetched, fetch, place
from s2d.training.weights.lock import Lock, default_lock_path, digests
from s2d.training.weights.registry import WeightsEntry, WeightsError, load_registry

log = logging.getLogger(__name__)


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
    locked: bool = False,
    directory: Path | None = None,
    **export_options,
) -> PullResult:
    """Fetch (verified against the lock, or trusted on first use and then locked) and convert one release.

    `locked`: refuse, before any download, a release or landmark file that neither the lock nor the registry pins.
    """
    registry = registry or load_registry()
    entry = _entry(registry, name)
    lock = Lock.load(lock_path or default_lock_path(store_root))
    if locked:
        _require_pinned(entry, registry, lock)
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
    locked: bool = False,
    directory: Path | None = None,
    **export_options,
) -> PullResult:
    """A file fetched by hand: checked against the lock / registry pin (if any), kept in the weights dir, converted."""
    registry = registry or load_registry()
    entry = _entry(registry, name) if name else _match(registry, Path(file))
    lock = Lock.load(lock_path or default_lock_path(store_root))
    if locked:
        _require_pinned(entry, registry, lock)
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


def _pinned(entry: WeightsEntry, lock: Lock) -> bool:
    return entry.name in lock.pins or bool(entry.git_blob or entry.sha256)


def _require_pinned(entry: WeightsEntry, registry: dict[str, WeightsEntry], lock: Lock) -> None:
    """A locked pull or import trusts nothing on first use: the release and what it needs must all be pinned."""
    needed = [entry, *(registry[n] for n in entry.needs if n in registry)]
    loose = [e.name for e in needed if not _pinned(e, lock)]
    if loose:
        raise WeightsError(
            f"{', '.join(loose)}: pinned by neither the lock {lock.path} nor the registry, and a locked pull trusts "
            "nothing on first use. Pull once where the Hub's answer can be trusted (`s2d weights pull NAME` writes "
            "weights.lock.json), then pass that lock (--lock), or drop --locked to trust the first download"
        )


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
