"""The live face pipeline's per-frame savings (issue 28): lazy alignment gives exactly the windows of eager alignment
while aligning only the frames windows pick; a detection restricted to the tracked faces' sizes still finds a new
small face at the next full-range detection."""

from __future__ import annotations

import numpy as np
import pytest

from s2d.service.faces import DeferredImage, FacePipeline, create_detector
from s2d.service.faces.windows import WindowBuilder
from s2d.service.media import Frame
from tests.faces_helpers import astronaut_face, backdrop, moving_faces, paste


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn")


def _same_windows(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x.track_id, x.t_start, x.t_end, x.padded) == (y.track_id, y.t_start, y.t_end, y.padded)
        np.testing.assert_array_equal(x.timestamps, y.timestamps)
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        if x.keypoints is None or y.keypoints is None:
            assert x.keypoints is None and y.keypoints is None
        else:
            np.testing.assert_array_equal(x.keypoints, y.keypoints)


def _timestamps(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "15fps":
        return np.arange(70) / 15
    if kind == "jitter":  # a live stream: uneven arrival, frames dropped when behind
        return np.cumsum(rng.uniform(0.02, 0.2, 80))
    return np.arange(40) / 3  # slower than the window's sampling: frames repeat


@pytest.mark.parametrize("kind", ["15fps", "jitter", "slow"])
@pytest.mark.parametrize(("num_frames", "window", "hop"), [(8, 1.0, 1.0), (16, 2.0, 0.5), (4, 1.0, 1.5)])
def test_lazy_crops_give_the_same_windows_and_are_made_only_when_picked(kind, num_frames, window, hop):
    rng = np.random.default_rng(7)
    times = _timestamps(kind, rng)
    made = []

    def crop(i: int) -> np.ndarray:
        return np.full((4, 4, 3), i % 251, np.uint8)

    def lazy(i: int):
        def make() -> np.ndarray:
            made.append(i)
            return crop(i)

        return make

    eager, deferred = WindowBuilder(num_frames, window, hop), WindowBuilder(num_frames, window, hop)
    out_eager, out_lazy = [], []
    for i, t in enumerate(times):
        box, points = np.float32([i, i, i + 9, i + 9]), np.full((5, 2), i, np.float32)
        out_eager += eager.push(3, float(t), crop(i), box, points)
        out_lazy += deferred.push(3, float(t), lazy(i), box, points)
        if i == len(times) // 2:  # a track that ends (left the scene) mid-way, another one goes on
            out_eager += eager.end(3)
            out_lazy += deferred.end(3)
    out_eager += eager.flush()
    out_lazy += deferred.flush()
    _same_windows(out_eager, out_lazy)
    picked = {round(float(t) * 1e6) for w in out_lazy for t in w.timestamps}
    assert len(made) == len(set(made)) == len(picked)  # each picked frame made once, no other frame
    if kind == "15fps" and num_frames / window < 15:
        assert len(made) < len(times)


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_lazily_aligned_pipeline_gives_the_same_windows_on_real_faces(detector, fps):
    frames = moving_faces(40, crossing=True)

    def run(lazy: bool) -> list:
        pipeline = FacePipeline(detector, num_frames=8, window_seconds=1.0, detect_every=3, lazy_align=lazy)
        out = []
        for i, image in enumerate(frames):
            out += pipeline.push(Frame(index=i, t=i / fps, image=image))[1]
        return out + pipeline.flush()

    windows = run(lazy=True)
    _same_windows(run(lazy=False), windows)
    assert {w.track_id for w in windows} == {1, 2}


def _deferred(image: np.ndarray, decoded: list[int], index: int) -> DeferredImage:
    def decode() -> np.ndarray:
        decoded.append(index)
        return image

    return DeferredImage(decode)


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_a_stream_decodes_and_refines_only_the_frames_it_uses_and_keeps_the_same_tracks(detector, fps):
    """Deferred frames: decoded on detection frames and where a window will likely pick the frame (ONet refines
    the tracks there), coasting elsewhere. The same two faces keep their ids through a crossing, the windows start
    and end as with every frame decoded, and the picked frames' boxes stay within 15% of the face's width of those."""
    frames = moving_faces(45, crossing=True)

    def run(deferred: bool) -> tuple[list, list[int]]:
        pipeline = FacePipeline(detector, num_frames=8, window_seconds=1.0, detect_every=round(fps / 2),
                                frame_interval_s=1 / fps if deferred else None)  # fmt: skip
        out, decoded = [], []
        for i, image in enumerate(frames):
            frame = _deferred(image, decoded, i) if deferred else image
            out += pipeline.push(Frame(index=i, t=i / fps, image=frame))[1]
        return out + pipeline.flush(), decoded

    every, _ = run(deferred=False)
    windows, decoded = run(deferred=True)
    assert len(decoded) == len(set(decoded)) < 0.8 * len(frames)  # each at most once, and not all
    assert [(w.track_id, w.t_start, w.t_end, w.padded) for w in windows] == [
        (w.track_id, w.t_start, w.t_end, w.padded) for w in every
    ]
    assert {w.track_id for w in windows} == {1, 2}
    for a, b in zip(windows, every, strict=True):
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        # ONet refines from another starting box (a coasted prediction, not the last frame's): up to 8.7 px on these
        # ~69 px faces where they cross
        assert np.abs(a.boxes - b.boxes).max() < 0.15 * (b.boxes[:, 2] - b.boxes[:, 0]).min()


def test_a_picked_frame_that_fails_to_decode_gives_a_grey_crop_and_is_reported(detector):
    """A frame decoded only when a window picks it (no frame is expected to be picked here, so none is refined) and
    whose data then fails: that window holds a mid-grey crop in its place and `undecodable` names the frame."""
    frames = moving_faces(12)
    pipeline = FacePipeline(detector, num_frames=4, window_seconds=1.0, detect_every=6, frame_interval_s=1e-9)

    def broken() -> np.ndarray:
        raise ValueError("not a JPEG after all")

    windows = []
    for i, image in enumerate(frames):
        frame = DeferredImage(broken) if i == 4 else image
        windows += pipeline.push(Frame(index=i, t=i / 4, image=frame))[1]
    windows += pipeline.flush()
    assert [index for index, _ in pipeline.undecodable] == [4]
    grey = [w for w in windows if 1.0 in w.timestamps]
    assert grey and all((w.frames[list(w.timestamps).index(1.0)] == 128).all() for w in grey)


def _scene(small: bool) -> np.ndarray:
    face = astronaut_face()
    frame = paste(backdrop(seed=2), face, 40, 20, 300)  # a close face (~180 px)
    return paste(frame, face, 470, 200, 110) if small else frame  # a far one (~65 px) joins


def test_a_new_small_face_is_found_at_the_next_full_range_detection(detector):
    detect_every, full_every, ratio = 2, 3, 0.7
    pipeline = FacePipeline(
        detector, num_frames=8, window_seconds=1.0, detect_every=detect_every, detect_size_ratio=ratio,
        full_detect_every=full_every,
    )  # fmt: skip
    for i in range(3):  # the close face is tracked; its detections (0 and 2) were full range and restricted
        (close,) = pipeline.push(Frame(index=i, t=i / 15, image=_scene(small=False)))[0]
    floor = pipeline._size_floor()
    assert floor is not None and floor > 80
    with_small = _scene(small=True)
    # The restricted detection does not see the small face, the full one does: the test tells the two apart.
    assert len(detector.detect_larger(with_small, floor)) == 1
    assert len(detector.detect(with_small)) == 2
    appeared = 3
    found_at = None
    for i in range(appeared, appeared + detect_every * full_every + 1):
        tracks = pipeline.push(Frame(index=i, t=i / 15, image=with_small))[0]
        assert close.track_id in {tr.track_id for tr in tracks}
        if len(tracks) == 2:
            found_at = i
            break
    assert found_at is not None and found_at - appeared < detect_every * full_every


def test_restricted_detection_keeps_the_pyramid_from_the_floor_and_never_below_the_configured_size(detector):
    image = _scene(small=True)
    assert [round(float(d.size)) for d in detector.detect_larger(image, 0)] == [
        round(float(d.size)) for d in detector.detect(image)
    ]
    big = detector.detect_larger(image, 120)
    assert len(big) == 1 and big[0].size > 150
    with pytest.raises(ValueError, match="detect_size_ratio"):
        FacePipeline(detector, num_frames=8, window_seconds=1.0, detect_size_ratio=1.5)


def test_chained_pyramid_finds_the_same_faces_with_keypoints_within_5_percent_of_the_face():
    """Each pyramid level resized from the one before (the default) against each from the frame: the same faces on
    real photographs, keypoints within 5% of the face size (measured: at most 4%), nothing on non-faces."""
    from s2d.service.faces.mtcnn import MTCNNDetector
    from tests.faces_helpers import lfw_patches, reference_photos

    chained, direct = MTCNNDetector(chained_pyramid=True), MTCNNDetector(chained_pyramid=False)
    faces, non_faces = lfw_patches()
    photos = reference_photos()
    images = [*faces[::4], *moving_faces(6, crossing=True), photos["astronaut"], photos["grace_hopper"]]
    worst = 0.0
    for image in images:
        a = sorted(chained.detect(image), key=lambda d: d.box[0])
        b = sorted(direct.detect(image), key=lambda d: d.box[0])
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            worst = max(worst, float(np.abs(x.keypoints - y.keypoints).max()) / y.size)
    assert worst < 0.05, worst
    assert not any(chained.detect(image) for image in non_faces[::4])


@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_with_all_overlaps_at_once_keeps_exactly_what_the_loop_keeps(mode):
    from s2d.service.faces.boxes import _nms_loop, _nms_matrix

    rng = np.random.default_rng(3)
    for n in (1, 2, 40, 400):
        corner = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(5, 80, (n, 2))], 1).astype(np.float32)
        scores = rng.choice([0.7, 0.8, 0.9], n) if n > 2 else rng.uniform(size=n)  # ties: the stable order decides
        order = np.argsort(-scores, kind="stable")
        for threshold in (0.3, 0.5, 0.7):
            kept = _nms_matrix(boxes, order, threshold, mode)
            np.testing.assert_array_equal(kept, _nms_loop(boxes, order, threshold, mode))
            assert len(kept) >= 1
