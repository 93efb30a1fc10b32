"""Face tracks under frame drops (issue 17 item 8): an overloaded live stream hands the tracker a fifth of the frames,
with their real timestamps, and each real person must keep one id. The scenes (real photographs moved and occluded),
the seeded drops and the scoring are the benchmark's (bench/bench_tracking.py); detections are MTCNN's."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_tracking import SCENES, detect_scene, kept_frames, replay
from s2d.service.faces import Detection, Tracker, create_detector

DROP = 0.8
SEEDS = range(5)


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn")


@pytest.mark.parametrize("name", ["crossing", "speed-change"])
def test_one_id_per_person_at_80_percent_drops(detector, name):
    scene = next(s for s in SCENES if s.name == name)
    frames = {int(i) for seed in SEEDS for i in kept_frames(len(scene.times), DROP, seed)}
    detections = detect_scene(scene, detector, frames)  # only the frames some draw keeps
    for seed in SEEDS:
        r = replay(scene, detections, "service", DROP, seed)
        assert (r["ids"], r["switches"], r["shared"]) == (len(scene.people), 0, 0), (seed, r)
        assert r["lost"] == r["missed"]  # tracked wherever the detector found the face


def _face(x: float) -> Detection:
    return Detection(np.float32([x, 100, x + 80, 180]), 0.99, np.zeros((5, 2), np.float32))


@pytest.mark.parametrize(("reach", "same_id"), [(0.5, True), (0.0, False)])
def test_a_face_that_turns_back_in_a_gap_keeps_its_id_a_far_one_does_not(reach, same_id):
    tracker = Tracker(reach=reach, reach_per_s=4.0 if reach else 0.0)
    for i in range(4):  # moving right
        tracker.update([_face(100 + 10 * i)], i / 30)
    # After a gap the face is back left of where it was: its prediction ran on to the right and overlaps nothing.
    (back,) = tracker.update([_face(60)], 0.4)
    assert (back.track_id == 1) is same_id
    (far,) = tracker.update([_face(500)], 0.5)  # a face elsewhere, while the first one is not seen: someone else
    assert far.track_id != back.track_id
