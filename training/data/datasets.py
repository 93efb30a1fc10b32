"""torch Datasets over a `DatasetIndex`, plus the split and sampler helpers the training recipe needs.

Randomness is a pure function of (seed, epoch, index): the temporal window comes from a numpy Generator seeded with
it, and the transform gets its own seeded Generator as `rng=` when it takes one (the augmentation module's
transforms do); a transform without an `rng` parameter runs with torch/numpy/random global RNGs seeded the same way
(restored afterwards, so the caller's RNG streams are untouched). Any number of DataLoader workers therefore gives
the same batches.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.context import get_spawning_popen

import numpy as np
import torch

from .frames import FrameError, load_clip, read_frame, test_windows, train_window
from .layouts import DatasetIndex, Sample

log = logging.getLogger(__name__)
Transform = Callable[[np.ndarray], torch.Tensor]


def item_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed, independent for every (seed, epoch, index, stream); stream 0 picks frames, 1+ transforms."""
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seeds torch, numpy's legacy and Python's global RNGs for the block, then restores them."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _accepts_rng(transform: Callable) -> bool:
    """Whether `transform` takes an `rng=` keyword (then it gets a seeded Generator instead of seeded globals)."""
    try:
        params = inspect.signature(transform).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "rng" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class _SharedCounter:
    """A counter that DataLoader workers add to and the main process reads (shared memory, fork or spawn)."""

    def __init__(self, value: int = 0) -> None:
        self._value = multiprocessing.Value("q", value)

    def add(self, n: int) -> None:
        if n:
            with self._value.get_lock():
                self._value.value += n

    @property
    def value(self) -> int:
        return int(self._value.value)

    def __getstate__(self) -> dict:
        # Shared memory travels only to a process being started; a plain pickle/deepcopy gets a fresh copy.
        return {"shared": self._value} if get_spawning_popen() is not None else {"value": self.value}

    def __setstate__(self, state: dict) -> None:
        self._value = state["shared"] if "shared" in state else multiprocessing.Value("q", state["value"])


class _IndexedDataset(torch.utils.data.Dataset):
    """What the clip and image datasets share: the index, its classes and labels, the epoch and the bad-read count."""

    def __init__(self, index: DatasetIndex, transform: Transform, on_error: str, seed: int) -> None:
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', not {on_error!r}")
        self.index, self.transform, self.on_error, self.seed = index, transform, on_error, seed
        self.samples: list[Sample] = list(index.samples)
        self.classes: tuple[str, ...] = index.classes
        self.labels: list[int] = [s.label for s in self.samples]
        self.epoch = 0
        self._bad = _SharedCounter()
        self._takes_rng = _accepts_rng(transform)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (as with DistributedSampler) so each epoch draws new, reproducible randomness."""
        self.epoch = int(epoch)

    @property
    def bad_frames(self) -> int:
        """Frames (or images) that could not be read and were replaced, over all workers since construction."""
        return self._bad.value

    def _transform(self, array: np.ndarray, index: int, view: int = 0) -> torch.Tensor:
        seed = item_seed(self.seed, self.epoch, index, stream=1 + view)
        if self._takes_rng:
            return self.transform(array, rng=np.random.default_rng(seed))
        with seeded_globals(seed):
            return self.transform(array)


class ClipDataset(_IndexedDataset):
    """Clips of `num_frames` frames: a random window when training, `temporal_views` evenly spaced windows otherwise.

    Train items are (transform(uint8 [T, H, W, 3]), label); eval items are (stack of the views' tensors [V, ...],
    label), the official 2-view test (first and last 16 frames). An image sample becomes a clip of that image.
    """

    def __init__(
        self,
        index: DatasetIndex,
        transform: Transform,
        *,
        num_frames: int = 16,
        train: bool,
        temporal_views: int = 2,
        on_error: str = "skip",
        seed: int = 0,
    ) -> None:
        super().__init__(index, transform, on_error, seed)
        self.num_frames, self.train, self.temporal_views = num_frames, train, temporal_views

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        frames = sample.frames or ((sample.image,) if sample.image is not None else ())
        if not frames:
            raise FrameError(f"sample {sample.id} has no frames")
        if self.train:
            rng = np.random.default_rng(item_seed(self.seed, self.epoch, index))
            clip = self._read(sample, frames, train_window(len(frames), self.num_frames, rng))
            return self._transform(clip, index), sample.label
        windows = test_windows(len(frames), self.num_frames, self.temporal_views)
        clip = self._read(sample, frames, np.concatenate(windows))
        views = np.split(clip, len(windows))
        return torch.stack([self._transform(v, index, k) for k, v in enumerate(views)]), sample.label

    def _read(self, sample: Sample, frames: Sequence, indices: np.ndarray) -> np.ndarray:
        clip, bad = load_clip(frames, indices, clip_id=sample.id, on_error=self.on_error)
        self._bad.add(bad)
        return clip


def _crop(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The AffectNet face box clipped to the image; the whole image when the box falls outside it."""
    if box is None:
        return image
    x, y, w, h = box
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, image.shape[1]), min(y + h, image.shape[0])
    return image[y0:y1, x0:x1] if x1 - x0 >= 2 and y1 - y0 >= 2 else image


class ImageDataset(_IndexedDataset):
    """Still images (files, or FERPlus pixels made RGB), face-box cropped; items are (transform([1, H, W, 3]), label).

    With on_error="skip" an unreadable image is replaced by the next readable sample (counted in `bad_frames`),
    because an image has no neighbouring frame to stand in for it.
    """

    def __init__(self, index: DatasetIndex, transform: Transform, *, on_error: str = "skip", seed: int = 0) -> None:
        super().__init__(index, transform, on_error, seed)

    def load(self, sample: Sample) -> np.ndarray:
        """uint8 RGB [H, W, 3] of one sample (FrameError if it cannot be read)."""
        if sample.pixels is not None:
            grey = np.asarray(sample.pixels, dtype=np.uint8)
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
        if sample.image is None:
            raise FrameError(f"sample {sample.id} has neither an image nor pixels")
        return np.ascontiguousarray(_crop(read_frame(sample.image), sample.box))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(min(len(self.samples), 32)):
            sample = self.samples[(index + offset) % len(self.samples)]
            try:
                image = self.load(sample)
            except FrameError as error:
                if self.on_error == "fail":
                    raise
                self._bad.add(1)
                log.warning("unreadable image replaced by the next sample: %s", error)
                continue
            return self._transform(image[None], index), sample.label
        raise FrameError(f"no readable image among 32 samples from index {index} ({self.samples[index].id})")


# ---------------------------------------------------------------------------------------------------------------------
# Splits and sampling


def stratified_split(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train indices, val indices), `fraction` of each class to val; seeded.

    Every class with at least 2 samples keeps at least one sample on each side (so per-class recall is defined on
    the validation split); a class with a single sample stays in train.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels_arr):
        members = rng.permutation(np.flatnonzero(labels_arr == label))
        n_val = min(max(round(fraction * len(members)), 1), len(members) - 1) if len(members) >= 2 else 0
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def class_balanced_weights(labels: Sequence[int]) -> list[float]:
    """Per-sample weights 1 / (samples of its class): a WeightedRandomSampler then draws every class equally often."""
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.size == 0:
        return []
    return (1.0 / np.bincount(labels_arr)[labels_arr]).tolist()
