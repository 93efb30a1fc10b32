"""Face pipeline on real photographs (scikit-image): detection recall, close-ups, tracking, alignment, windows."""

from __future__ import annotations

import numpy as np
import pytest

from s2d.service.faces import (
    TEMPLATE_224,
    Detection,
    FacePipeline,
    ModelPackError,
    Tracker,
    WindowBuilder,
    align_face,
    create_detector,
    find_pack,
    similarity_transforms,
)
from s2d.service.media import iter_frames
from tests.faces_helpers import astronaut_face, backdrop, lfw_patches, moving_faces, paste, write_video


@pytest.fixture(scope="module")
def detector():
    return create_detector()


def _inside(det: Detection, box) -> bool:
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def test_astronaut(detector):
    from skimage import data

    dets = detector.detect(data.astronaut())
    assert len(dets) == 1 and dets[0].score > 0.95
    d = dets[0]
    assert 170 < d.box[0] < 195 and 250 < d.box[2] < 280  # the face, not the flag or the suit
    le, re, nose, lm, rm = d.keypoints
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0]  # image-left first
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])


def test_lfw_recall_and_no_detections_on_non_faces(detector):
    faces, non_faces = lfw_patches()
    recall = np.mean([len(detector.detect(img)) > 0 for img in faces])
    false_hits = sum(len(detector.detect(img)) for img in non_faces)
    assert recall >= 0.9, recall  # measured 1.00
    assert false_hits <= 2, false_hits  # measured 0


@pytest.mark.parametrize(
    ("size", "height", "x", "y"),
    [
        ((640, 360), 140, 20, 20),  # small, top-left
        ((640, 360), 200, 420, 150),  # bottom-right, partly cut by the border
        ((1280, 720), 120, 600, 300),  # small face in a large frame
        ((640, 360), 360, 200, 0),  # close-up: the head fills the height (face ~80% of it)
        ((640, 480), 560, 60, -60),  # webcam close-up: face ~80% of the frame height, head cut at the edges
    ],
)
def test_pasted_at_positions_and_scales(detector, size, height, x, y):
    patch = astronaut_face()
    frame = paste(backdrop(*size), patch, x, y, height)
    dets = detector.detect(frame)
    scale = height / patch.shape[0]
    face = (x + 30 * scale, y + 30 * scale, x + 120 * scale, y + 145 * scale)  # the face inside the patch
    assert any(_inside(d, face) for d in dets), [d.box for d in dets]
    assert len(dets) == 1


def test_no_detection_on_background(detector):
    assert detector.detect(backdrop(640, 360, seed=3)) == []


def test_min_face_size_is_an_option():
    frame = paste(backdrop(), astronaut_face(), 100, 100, 90)  # face ~45 px tall
    assert create_detector(min_face_size=30).detect(frame)
    assert not create_detector(min_face_size=120).detect(frame)


def test_synthetic_faces_are_found(detector):
    from s2d.training.data.synthetic import EXPRESSIONS, draw_face

    rng = np.random.default_rng(0)
    found = 0
    for i in range(14):
        face = draw_face(EXPRESSIONS[i % 7], 1.0, rng, size=224)
        found += bool(detector.detect(paste(backdrop(seed=i), face, 200, 60)))
    # Measured 7 of 14 on textured backdrops since the drawn faces carry colour cues (tints, tears): MTCNN misses
    # about half of the surprise / fear / tinted faces at full intensity. Raising this is tracked work.
    assert found >= 6, found


def test_alignment_maps_keypoints_onto_the_template(detector):
    from skimage import data

    image = data.astronaut()
    det = detector.detect(image)[0]
    crop = align_face(image, det.keypoints)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    m = similarity_transforms(det.keypoints)[0]
    mapped = det.keypoints @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - TEMPLATE_224).max() < 10  # 5 points, 4 degrees of freedom: measured 8.6 px
    # The aligned crop is still a face, centred, upright.
    again = detector.detect(crop)
    assert len(again) == 1 and np.abs(again[0].keypoints - TEMPLATE_224).max() < 12


def test_similarity_transform_recovers_rotation_and_scale():
    angle, scale, shift = np.deg2rad(20), 0.6, np.array([30.0, -12.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE_224 - shift) @ np.linalg.inv(rot).T  # points that the true map sends onto the template
    m = similarity_transforms(np.stack([src, src + 5]))
    np.testing.assert_allclose(m[0, :, :2], rot, atol=1e-6)
    np.testing.assert_allclose(src @ m[0, :, :2].T + m[0, :, 2], TEMPLATE_224, atol=1e-4)


def _moving_video(tmp_path, n=45, crossing=False, fps=30.0):
    return write_video(tmp_path / "move.mp4", moving_faces(n, crossing), fps=fps)


def test_track_id_stable_for_a_moving_face(tmp_path, detector):
    pipeline = FacePipeline(detector, num_frames=8, window_seconds=1.0, detect_every=3)
    ids, xs = [], []
    for frame in iter_frames(_moving_video(tmp_path)):
        tracks, _ = pipeline.push(frame)
        ids += [t.track_id for t in tracks]
        xs += [t.box[0] for t in tracks]
    assert set(ids) == {1} and len(ids) >= 43
    assert np.all(np.diff(xs) > -3)  # follows the motion


def test_two_faces_crossing_keep_their_ids(tmp_path, detector):
    pipeline = FacePipeline(detector, num_frames=8, window_seconds=1.0, detect_every=2)
    paths: dict[int, list[tuple[float, float]]] = {}
    for frame in iter_frames(_moving_video(tmp_path, crossing=True)):
        for t in pipeline.push(frame)[0]:
            paths.setdefault(t.track_id, []).append((frame.t, (t.box[0] + t.box[2]) / 2))
    long_tracks = {k: np.array(v) for k, v in paths.items() if len(v) > 10}
    assert len(long_tracks) == 2, {k: len(v) for k, v in paths.items()}
    directions = sorted(np.sign(np.polyfit(v[:, 0], v[:, 1], 1)[0]) for v in long_tracks.values())
    assert directions == [-1, 1]  # one goes right, the other left: no id swap
    for v in long_tracks.values():
        steps = np.diff(v[:, 1])
        assert np.all(np.sign(steps[np.abs(steps) > 2]) == np.sign(np.median(steps)))


def test_tracker_survives_short_occlusion_ends_tracks_and_caps_count():
    tracker = Tracker(max_age_s=0.3, max_tracks=2)
    box = np.array([100, 100, 180, 180], np.float32)
    kps = np.zeros((5, 2), np.float32)

    def det(dx):
        return Detection(box + np.float32([dx, 0, dx, 0]), 0.99, kps)

    for i in range(5):
        assert [t.track_id for t in tracker.update([det(4 * i)], i / 30)] == [1]
    for i in range(5, 11):  # hidden 0.2 s
        assert tracker.update([], i / 30) == []
    assert [t.track_id for t in tracker.update([det(44)], 11 / 30)] == [1]  # back near its predicted place
    tracker.update([], 1.0)  # unseen for > 0.3 s
    assert tracker.tracks == [] and [t.track_id for t in tracker.ended] == [1]
    faces = [Detection(np.float32([x, 0, x + 50 + x / 10, 60]), 0.9, kps) for x in (0, 200, 400)]
    assert len(tracker.update(faces, 2.0)) == 2  # capped; the largest faces are kept
    assert sorted(t.box[0] for t in tracker.tracks) == [200, 400]


@pytest.mark.parametrize("fps", [24.0, 30.0, "vfr"])
def test_windows_timestamps(tmp_path, fps):
    if fps == "vfr":
        times = np.concatenate([[0], np.cumsum(np.tile([0.02, 0.05, 0.033, 0.08], 25))])  # ~4.6 s
    else:
        times = np.arange(int(4.5 * fps)) / fps
    builder = WindowBuilder(num_frames=16, window_seconds=2.0, hop_seconds=1.0)
    crop, windows = np.zeros((224, 224, 3), np.uint8), []
    for t in times:
        windows += builder.push(7, t, crop + np.uint8(int(t * 50)), np.float32([0, 0, 10, 10]))
    windows += builder.flush()
    starts = [w.t_start for w in windows]
    np.testing.assert_allclose(starts[:3], [0.0, 1.0, 2.0])
    for w in windows:
        assert w.track_id == 7 and w.t_end == pytest.approx(w.t_start + 2.0)
        assert w.frames.shape == (16, 224, 224, 3) and w.boxes.shape == (16, 4) and w.timestamps.shape == (16,)
        assert np.all(np.diff(w.timestamps) >= 0)
        targets = w.t_start + (np.arange(16) + 0.5) * 0.125
        gap = np.abs(w.timestamps - targets)
        real = targets <= times[-1]
        assert gap[real].max() <= 0.05 + 1e-9  # nearest frame: at most half the longest frame gap away
        assert w.padded == (not real.all())
    assert not windows[0].padded and windows[-1].padded  # the tail after the last full window is padded
    assert windows[-1].timestamps[-1] == times[-1]


def test_short_track_gives_one_padded_window():
    builder = WindowBuilder(num_frames=16, window_seconds=2.0)
    crop = np.zeros((224, 224, 3), np.uint8)
    for t in np.arange(10) / 30:
        assert builder.push(1, t, crop, np.zeros(4)) == []
    (window,) = builder.flush()
    assert window.padded and window.frames.shape[0] == 16 and window.timestamps[-1] == pytest.approx(9 / 30)


def test_pipeline_windows_from_a_video(tmp_path, detector):
    pipeline = FacePipeline(detector, num_frames=16, window_seconds=1.0, hop_seconds=0.5, detect_every=5)
    windows = []
    for frame in iter_frames(_moving_video(tmp_path, n=60)):
        windows += pipeline.push(frame)[1]
    windows += pipeline.flush()
    # 60 frames at 30 fps (0 .. 1.967 s): [0, 1] and [0.5, 1.5] complete; [1, 2] lacks its last bin -> padded.
    assert [round(w.t_start, 3) for w in windows] == [0.0, 0.5, 1.0]
    assert all(w.track_id == 1 and w.frames.shape == (16, 224, 224, 3) for w in windows)
    assert windows[-1].padded and not windows[0].padded
    # The crops are aligned faces: the detector finds the face where the template puts it.
    det = create_detector(min_face_size=60).detect(windows[0].frames[8])
    assert det and np.abs(det[0].keypoints - TEMPLATE_224).max() < 15


def test_insightface_missing_pack_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelPackError) as info:
        create_detector("insightface", pack="buffalo_l", root=tmp_path)
    msg = str(info.value)
    assert "buffalo_l" in msg and str(tmp_path) in msg and "non-commercial" in msg and "S2D_INSIGHTFACE_ROOT" in msg
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    ("pack", "files", "nested", "detector_name"),
    [
        ("buffalo_l", ["det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx"], False, "det_10g.onnx"),
        ("buffalo_s", ["det_500m.onnx", "2d106det.onnx", "w600k_mbf.onnx"], False, "det_500m.onnx"),
        ("antelopev2", ["scrfd_10g_bnkps.onnx", "2d106det.onnx", "glintr100.onnx"], True, "scrfd_10g_bnkps.onnx"),
    ],
)
def test_insightface_pack_layouts(tmp_path, pack, files, nested, detector_name):
    folder = tmp_path / pack / pack if nested else tmp_path / pack
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"")  # discovery only looks at names; nothing is loaded here
    found = find_pack(pack, root=tmp_path)
    assert found.detector == folder / detector_name and found.landmark_106 == folder / "2d106det.onnx"
    assert find_pack(str(tmp_path / pack)).detector == found.detector  # a path works too


def test_unknown_backend():
    with pytest.raises(ValueError, match="mtcnn"):
        create_detector("nope")
