"""The lock (weights.lock.json): what the first pull saw, enforced on every later one; checking bytes against a pin."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from s2d.training.weights.registry import LOCK_FILE, WeightsEntry, WeightsError

log = logging.getLogger(__name__)


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
