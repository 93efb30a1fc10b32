"""`s2d predict` and `s2d serve` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import av

from s2d.harness.server import REPO
from tests.service_helpers import TEST_CLASSES, make_video
from tests.test_service import _two_faces_video


def s2d(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2d", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_predict_writes_json_timeline_and_annotated_video(store, tmp_path):
    video = _two_faces_video(tmp_path / "people.mp4")
    result = s2d("predict", str(video), "--store", str(store), "-o", str(tmp_path / "out"), "--annotate",
                 "--smoothing", "ema")  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads((tmp_path / "out" / "people.json").read_text())
    assert body["mode"] == "faces" and len([p for p in body["persons"] if p["summary"]["num_windows"] >= 2]) == 2
    assert all(set(w["probs"]) == set(TEST_CLASSES) and w["smoothed"] for p in body["persons"] for w in p["windows"])
    png = (tmp_path / "out" / "people_timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with av.open(str(tmp_path / "out" / "people_annotated.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == body["video"]["frames_decoded"] and frames[0].width == 640
    assert "person" in result.stdout


def test_predict_a_video_without_faces_answers_no_persons_with_a_note(store, tmp_path):
    blank = make_video(tmp_path / "blank.mp4", seconds=0.5, fps=8, size=(240, 320))
    result = s2d("predict", str(blank), "--store", str(store), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    body = json.loads((tmp_path / "out" / "blank.json").read_text())
    assert body["persons"] == [] and body["notes"] == ["no face was found in 4 frames"]
    assert (tmp_path / "out" / "blank_timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_aligned_frame_folder_and_errors(store, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    with av.open(str(make_video(tmp_path / "a.mp4", seconds=1.0, fps=8, size=(112, 112)))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(folder / f"{i + 1:05d}.jpg")  # a dataset clip: numbered JPEG frames
    result = s2d("predict", str(folder), "--store", str(store), "--mode", "aligned", "--fps", "8", "--no-plot",
                 "-o", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert body["video"]["frames_decoded"] == 8 and body["persons"][0]["windows"][0]["t_end"] == 1.0
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    bad = s2d("predict", str(garbage), "--store", str(store), "--mode", "aligned")
    assert bad.returncode == 2 and "undecodable" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_refuses_cuda_it_does_not_have(store):
    result = s2d("serve", "--store", str(store), "--providers", "cuda")
    assert result.returncode == 2
    assert "CUDAExecutionProvider" in result.stderr and "Traceback" not in result.stderr
