"""Temporal sampling, frame reading, the torch Datasets and the split/sampler helpers."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from s2d.training.data import frames as sampling
from s2d.training.data.datasets import (
    ClipDataset,
    ImageDataset,
    class_balanced_weights,
    stratified_split,
)
from s2d.training.data.frames import FrameError, load_clip, read_frame, train_window, uniform_indices, uniform_times
from s2d.training.data.layouts import DatasetError, DatasetIndex, Sample, list_frames
from tests.helpers import resize_to_tensor

# ---------------------------------------------------------------------------------------------------------------------
# Sampling


def test_train_window_consecutive_in_range_and_reproducible():
    for start_seed in range(20):
        window = train_window(40, 16, np.random.default_rng(start_seed))
        assert window.tolist() == list(range(window[0], window[0] + 16))
        assert 0 <= window[0] <= 24
    starts = {int(train_window(20, 16, np.random.default_rng(s))[0]) for s in range(200)}
    assert starts == {0, 1, 2, 3, 4}  # every valid start, the last window included
    assert (
        train_window(40, 16, np.random.default_rng(3)).tolist()
        == train_window(40, 16, np.random.default_rng(3)).tolist()
    )


def test_train_window_pads_short_clips_with_last_frame():
    assert train_window(5, 8, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert train_window(16, 16, np.random.default_rng(0)).tolist() == list(range(16))


def test_test_windows_first_and_last():
    first, last = sampling.test_windows(30, 16, views=2)
    assert first.tolist() == list(range(16)) and last.tolist() == list(range(14, 30))
    assert [w[0] for w in sampling.test_windows(30, 16, views=3)] == [0, 7, 14]
    assert [w.tolist() for w in sampling.test_windows(3, 5, views=2)] == [[0, 1, 2, 2, 2]] * 2
    assert sampling.test_windows(30, 16, views=1)[0][0] == 7


def test_uniform_indices_and_times():
    assert uniform_indices(16, 16).tolist() == list(range(16))
    assert uniform_indices(32, 4).tolist() == [4, 12, 20, 28]
    assert uniform_indices(2, 4).tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(uniform_times(8.0, 4), [1.0, 3.0, 5.0, 7.0])
    with pytest.raises(ValueError):
        uniform_indices(0, 4)


# ---------------------------------------------------------------------------------------------------------------------
# Reading


def write_clip(folder: Path, count: int, size: int = 12) -> tuple[Path, ...]:
    """Frame k (1-based) is a flat grey of 10 * k, so the order of a loaded clip is visible in its pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, count + 1):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((size, size, 3), 10 * k, np.uint8))
    return list_frames(folder)


def grey_levels(clip: np.ndarray) -> list[int]:
    return [round(v) // 10 for v in clip.reshape(len(clip), -1).mean(axis=1)]


def test_read_frame_is_rgb_and_errors_name_the_path(tmp_path):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((4, 6), 77, np.uint8))
    assert read_frame(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]
    grey = read_frame(tmp_path / "grey.png")
    assert grey.shape == (4, 6, 3) and grey.dtype == np.uint8
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    for name in ("missing.jpg", "broken.jpg"):
        with pytest.raises(FrameError, match=name):
            read_frame(tmp_path / name)


def test_load_clip_replaces_unreadable_frames_by_nearest_neighbour(tmp_path, caplog):
    frames = write_clip(tmp_path / "clip", 6)
    frames[2].write_bytes(b"")  # frame 3 unreadable
    frames[3].unlink()  # frame 4 missing
    with caplog.at_level(logging.WARNING):
        clip, bad = load_clip(frames, [0, 1, 2, 3, 4, 5, 3], clip_id="c1")
    assert grey_levels(clip) == [1, 2, 2, 5, 5, 6, 5]  # 3 -> its left neighbour 2; 4 -> 5 (3 is bad too)
    assert bad == 3
    assert sum(str(frames[3]) in r.getMessage() for r in caplog.records) == 1  # logged once per file
    with pytest.raises(FrameError, match=str(frames[2])):
        load_clip(frames, [2], clip_id="c1", on_error="fail")
    for f in frames:
        f.unlink(missing_ok=True)
    with pytest.raises(DatasetError, match="clip c1"):
        load_clip(frames, [0, 1], clip_id="c1")


# ---------------------------------------------------------------------------------------------------------------------
# ClipDataset


@pytest.fixture
def clip_index(tmp_path) -> DatasetIndex:
    samples = [Sample(id=f"v{i}", label=i % 2, frames=write_clip(tmp_path / f"v{i}", n)) for i, n in enumerate((20, 9))]
    return DatasetIndex(name="toy", classes=("a", "b"), samples=samples, problems=[], notes=[])


def test_clip_dataset_train_and_eval_shapes_and_frame_order(clip_index):
    train = ClipDataset(clip_index, resize_to_tensor(8), num_frames=16, train=True, seed=1)
    x, y = train[0]
    assert x.shape == (3, 16, 8, 8) and x.dtype == torch.float32 and y == 0
    levels = [round(float(v) * 255) // 10 for v in x[0, :, 0, 0]]
    assert levels == list(range(levels[0], levels[0] + 16))
    assert train.classes == ("a", "b") and train.labels == [0, 1] and len(train) == 2
    evaluation = ClipDataset(clip_index, resize_to_tensor(8), num_frames=16, train=False, temporal_views=2)
    x, y = evaluation[0]
    assert x.shape == (2, 3, 16, 8, 8) and y == 0
    assert [round(float(x[v, 0, t, 0, 0]) * 255) // 10 for v, t in ((0, 0), (0, 15), (1, 0), (1, 15))] == [1, 16, 5, 20]
    short, _ = evaluation[1]  # 9 frames padded with the last
    assert [round(float(v) * 255) // 10 for v in short[0, 0, :, 0, 0]] == [*range(1, 10), *[9] * 7]


def test_clip_dataset_reproducible_per_epoch(clip_index):
    def windows(ds):
        return [ds[0][0][0, :, 0, 0].tolist() for _ in range(2)]

    noisy = lambda frames: resize_to_tensor(4)(frames) + torch.rand(1)  # noqa: E731 - global-RNG transform
    ds = ClipDataset(clip_index, noisy, num_frames=4, train=True, seed=5)
    first = windows(ds)
    assert first[0] == first[1]  # same (seed, epoch, index) -> same item, transform randomness included
    assert windows(ClipDataset(clip_index, noisy, num_frames=4, train=True, seed=5)) == first
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        seen.add(tuple(windows(ds)[0]))
    assert len(seen) > 1
    before = torch.rand(1)
    torch.manual_seed(0)
    ds[0]
    assert torch.rand(1) == before  # the caller's global RNG stream is untouched


def test_transform_with_rng_parameter_gets_a_seeded_generator(clip_index):
    seen = []

    def transform(frames, rng=None):
        seen.append(rng.integers(1 << 30))
        return torch.from_numpy(frames.astype(np.float32))

    ds = ClipDataset(clip_index, transform, num_frames=4, train=False, temporal_views=2)
    ds[0]
    ds[0]
    assert len(seen) == 4 and seen[:2] == seen[2:] and seen[0] != seen[1]


def test_bad_frames_counted_across_workers(clip_index):
    clip_index.samples[1].frames[0].write_bytes(b"broken")
    ds = ClipDataset(clip_index, resize_to_tensor(4), num_frames=9, train=True)
    ds[1]
    assert ds.bad_frames == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 9, 4, 4) and y.tolist() == [0, 1]
    assert ds.bad_frames == 2
    assert copy.deepcopy(ds).bad_frames == 2
    with pytest.raises(FrameError, match=r"1\.png"):
        ClipDataset(clip_index, resize_to_tensor(4), num_frames=9, train=True, on_error="fail")[1]


# ---------------------------------------------------------------------------------------------------------------------
# ImageDataset


def test_image_dataset_pixels_box_and_unreadable(tmp_path):
    big = np.zeros((20, 30, 3), np.uint8)
    big[5:15, 10:20] = 200
    cv2.imwrite(str(tmp_path / "face.png"), big)
    (tmp_path / "broken.jpg").write_bytes(b"x")
    samples = [
        Sample(id="fer", label=3, pixels=np.full((48, 48), 9, np.uint8)),
        Sample(id="an", label=1, image=tmp_path / "face.png", box=(10, 5, 10, 10)),
        Sample(id="bad", label=2, image=tmp_path / "broken.jpg"),
    ]
    index = DatasetIndex(name="img", classes=tuple("abcd"), samples=samples, problems=[], notes=[])
    ds = ImageDataset(index, lambda a: torch.from_numpy(a.copy()))
    x, y = ds[0]
    assert x.shape == (1, 48, 48, 3) and y == 3 and int(x.max()) == 9
    x, y = ds[1]
    assert x.shape == (1, 10, 10, 3) and int(x.min()) == 200 and y == 1
    x, y = ds[2]  # unreadable: the next readable sample stands in
    assert y == 3 and ds.bad_frames == 1
    with pytest.raises(FrameError, match=r"broken\.jpg"):
        ImageDataset(index, lambda a: torch.from_numpy(a.copy()), on_error="fail")[2]


# ---------------------------------------------------------------------------------------------------------------------
# Splits and sampling


def test_stratified_split_properties():
    labels = [0] * 50 + [1] * 10 + [2] * 2 + [3]
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    val_counts = Counter(labels[i] for i in val)
    train_counts = Counter(labels[i] for i in train)
    assert val_counts == {0: 10, 1: 2, 2: 1}
    assert train_counts[2] == 1 and train_counts[3] == 1
    assert stratified_split(labels, 0.2, seed=3) == (train, val)
    assert stratified_split(labels, 0.2, seed=4) != (train, val)
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0)


def test_class_balanced_weights_draw_classes_equally():
    labels = [0] * 90 + [1] * 10
    weights = class_balanced_weights(labels)
    assert len(weights) == 100 and all(isinstance(w, float) for w in weights)
    assert sum(weights[:90]) == pytest.approx(sum(weights[90:]))
    sampler = torch.utils.data.WeightedRandomSampler(weights, 4000, generator=torch.Generator().manual_seed(0))
    drawn = Counter(labels[i] for i in sampler)
    assert abs(drawn[0] - drawn[1]) < 300
