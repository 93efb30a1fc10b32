"""The released files: where each lives, what it holds, its licence; and which repository file is which release."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

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
