"""Synthetic clips: the DFEW layout they are written in, class balance, the temporal-order construction, determinism."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from s2d.training.data.layouts import DATASET_CLASSES, load_index
from s2d.training.data.synthetic import draw_face, intensity_curve, make_synthetic_dfew

SMALL = {"clips_per_class": 3, "num_frames": 4, "size": 48}


def clip_bytes(root: Path, vid: str) -> list[bytes]:
    folder = root / "Clip" / "clip_224x224_16f" / vid
    return [(folder / f"{k}.jpg").read_bytes() for k in range(1, len(list(folder.iterdir())) + 1)]


@pytest.mark.parametrize("label_base", [0, 1])
def test_expression_set_reads_as_dfew(tmp_path, label_base):
    made = make_synthetic_dfew(tmp_path, **SMALL, folds=2, label_base=label_base, seed=1)
    assert made.classes == DATASET_CLASSES["dfew"]
    for fold in (1, 2):
        train = load_index("dfew", tmp_path, "train", fold=fold, on_error="fail")
        test = load_index("dfew", tmp_path, "test", fold=fold, on_error="fail")
        assert train.problems == [] and test.problems == []
        assert len(train) + len(test) == 21
        assert {s.id for s in train.samples}.isdisjoint(s.id for s in test.samples)
        assert all(len(s.frames) == 4 and len(s.id) == 5 for s in train.samples)
        assert all(made.labels[s.id] == s.label for s in train.samples + test.samples)
    assert Counter(made.labels.values()) == {c: 3 for c in range(7)}
    tests = [set(test_ids) for _, test_ids in made.folds]
    assert tests[0].isdisjoint(tests[1]) and len(tests[0] | tests[1]) == 21  # each clip in exactly one test fold
    folder = load_index("folder", tmp_path, "train")
    assert folder.classes == DATASET_CLASSES["dfew"] and sorted(folder.labels) == sorted(made.load("train").labels)


def test_folds_1_test_split_is_balanced_and_expressions_develop_from_neutral(tmp_path):
    made = make_synthetic_dfew(tmp_path, clips_per_class=1, num_frames=8, size=64, seed=2)
    assert made.load("test").class_counts() == [1] * 7  # folds=1: a class-balanced fifth is the test split
    for seed in range(20):
        curve = intensity_curve(16, np.random.default_rng(seed))
        assert curve[0] == 0.0 and curve[-1] >= 0.75 and np.all(np.diff(curve) >= 0)


def test_temporal_order_pairs_hold_the_same_frames_reversed(tmp_path):
    made = make_synthetic_dfew(tmp_path, **SMALL, task="temporal_order", seed=0)
    assert made.classes == ("onset", "offset")
    assert (tmp_path / "classes.txt").read_text().split() == ["onset", "offset"]
    assert len(made.pairs) == 3 and Counter(made.labels.values()) == {0: 3, 1: 3}
    for onset, offset in made.pairs:
        assert made.labels[onset] == 0 and made.labels[offset] == 1
        assert clip_bytes(tmp_path, onset) == clip_bytes(tmp_path, offset)[::-1]
        assert clip_bytes(tmp_path, onset)[0] != clip_bytes(tmp_path, onset)[-1]
    for split in ("train", "test"):
        folder = load_index("folder", tmp_path, split, on_error="fail")
        via_dfew = made.load(split)
        assert folder.classes == via_dfew.classes == ("onset", "offset")
        assert sorted(folder.labels) == sorted(via_dfew.labels)
        assert Counter(folder.labels)[0] == Counter(folder.labels)[1]  # pairs stay together in one split


def test_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_dfew(tmp_path / "a", **SMALL, seed=7)
    b = make_synthetic_dfew(tmp_path / "b", **SMALL, seed=7)
    make_synthetic_dfew(tmp_path / "c", **SMALL, seed=8)
    assert a.labels == b.labels and a.folds == b.folds
    assert all(clip_bytes(tmp_path / "a", v) == clip_bytes(tmp_path / "b", v) for v in a.labels)
    assert any(clip_bytes(tmp_path / "a", v) != clip_bytes(tmp_path / "c", v) for v in a.labels)


def test_draw_face():
    faces = {e: draw_face(e, 1.0, np.random.default_rng(0), 96) for e in DATASET_CLASSES["dfew"]}
    assert all(f.shape == (96, 96, 3) and f.dtype == np.uint8 for f in faces.values())
    neutral = faces["neutral"].astype(int)
    for name, face in faces.items():
        if name != "neutral":
            assert np.abs(face.astype(int) - neutral).mean() > 0.5, name  # same person, visibly different face
    assert np.array_equal(draw_face("sad", 0.0, np.random.default_rng(0), 96), faces["neutral"])
    centre = faces["neutral"][30:66, 30:66].astype(int)
    corner = faces["neutral"][:8, :8].astype(int)
    assert abs(centre.mean() - corner.mean()) > 5 or centre.std() > corner.std()  # a face, not background
    with pytest.raises(ValueError, match="unknown expression"):
        draw_face("smug", 1.0, np.random.default_rng(0), 64)
