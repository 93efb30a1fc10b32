"""`s2d analyze` as a user runs it (subprocesses, real videos of real faces, the tiny model on ONNX Runtime): rows and
statuses, the same probabilities as POST /v1/classify, memory bounded by the window, resumption after a real SIGINT,
and accuracy on labelled videos for two models."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from s2d.batch import accuracy, inputs, load
from s2d.harness.batch import face_clip
from s2d.harness.server import REPO, running_server
from tests.service_helpers import TEST_CLASSES, TEST_MODEL, build_store, make_audio_only, make_video
from tests.test_service import _two_faces_video

OTHER_MODEL = "tiny_other"  # a second model (another depth: other random weights) for side-by-side accuracy


@pytest.fixture(scope="module")
def store(store, tmp_path_factory) -> Path:
    """The shared store's tiny model and a second one, in a store of their own."""
    root = tmp_path_factory.getbasetemp() / "analyze-store"
    if not (root / TEST_MODEL).is_dir():
        shutil.copytree(store / TEST_MODEL, root / TEST_MODEL)
    return build_store(str(root), name=OTHER_MODEL, depth=2)


def analyze(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "s2d", "analyze", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Real faces, nobody, and broken files, one level nested."""
    root = tmp_path_factory.mktemp("videos")
    _two_faces_video(root / "two.mp4")
    make_video(root / "blank.mp4", seconds=0.5, fps=8, size=(240, 320))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (root / "nested").mkdir()
    data = (root / "two.mp4").read_bytes()
    (root / "nested" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("not a video: the folder scan skips it")
    return root


def statuses(videos: pd.DataFrame) -> dict[str, tuple]:
    return {Path(p).name: (s, c if isinstance(c, str) else None) for p, s, c in
            zip(videos["path"], videos["status"], videos["error_code"], strict=True)}  # fmt: skip


def test_a_folder_becomes_rows_and_statuses_and_a_second_run_skips_what_was_done(store, folder, tmp_path):
    out = tmp_path / "out"
    audio = make_audio_only(tmp_path / "sound.mp4")  # a valid media file with no video stream, named like a video
    first = analyze(folder, audio, "-o", out, "--store", store, "--model", TEST_MODEL, "--workers", "2")
    assert first.returncode == 1, first.stderr  # some failed: the exit status says so, the batch went on
    windows, videos = load(out)
    assert statuses(videos) == {
        "two.mp4": ("ok", None), "blank.mp4": ("no_face", None), "corrupt.mp4": ("failed", "undecodable"),
        "truncated.mp4": ("failed", "undecodable"), "sound.mp4": ("failed", "unsupported_media"),
    }  # fmt: skip
    two = videos.set_index("status").loc["ok"]
    assert two["persons"] >= 2 and two["frames_decoded"] == 30 and two["faces_detected"] >= 50
    assert two["windows"] == len(windows) and math.isclose(two["duration_s"], 1.5)
    assert set(windows["video_key"]) == {two["video_key"]} and (windows["model"] == TEST_MODEL).all()
    assert (windows["model_family"] == "s2d-video").all() and (windows["model_variant"] == "fp32").all()
    # Each worker timed the engines at its start (ONNX Runtime's variants, OpenVINO) and says which one ran.
    assert videos["engine"].str.fullmatch(r"(onnxruntime|openvino)/\w+").all(), videos["engine"]
    probs = windows[[f"p_{c}" for c in TEST_CLASSES]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (windows["label"] == np.array(TEST_CLASSES)[probs.argmax(axis=1)]).all()
    # The box and the five keypoints of the window's middle frame: the eyes above the mouth, inside the box.
    x = windows[["left_eye_x", "right_eye_x", "nose_x", "left_mouth_x", "right_mouth_x"]].to_numpy()
    y = windows[["left_eye_y", "right_eye_y", "nose_y", "left_mouth_y", "right_mouth_y"]].to_numpy()
    assert ((x >= windows[["box_x1"]].to_numpy() - 5) & (x <= windows[["box_x2"]].to_numpy() + 5)).all()
    assert (y[:, :2].max(axis=1) < y[:, 3:].min(axis=1)).all()
    assert ((windows["frame_t"] > windows["t_start"]) & (windows["frame_t"] < windows["t_end"])).all()
    failed = videos[videos["status"] == "failed"]
    assert failed["error_message"].str.len().gt(10).all() and failed["windows"].isna().all()

    parts = {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    second = analyze(folder, audio, "-o", out, "--store", store, "--model", TEST_MODEL, "--workers", "2")
    assert second.returncode == 1, second.stderr
    assert "3 failed; 2 done before" in second.stdout, second.stdout  # the failed ones are tried again
    again = {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    ok_parts = {f"{k}-{r}.parquet" for k, r, s in zip(videos["video_key"], videos["run_key"], videos["status"],
                                                     strict=True) if s != "failed"}  # fmt: skip
    assert {n: again[n] for n in ok_parts} == {n: parts[n] for n in ok_parts}  # untouched
    windows2, videos2 = load(out)
    assert len(videos2) == 5 and windows2.equals(windows)  # nothing written twice

    options = analyze(folder / "two.mp4", "-o", out, "--store", store, "--model", TEST_MODEL, "--hop-seconds", "1")
    assert options.returncode == 0 and "1 ok; 0 done before" in options.stdout  # other options: another part
    assert len(load(out).videos) == 6

    # A file recorded with the same path, size and modification time is not read again (as make and rsync judge):
    # here its bytes changed behind the timestamp's back and it still counts as done; touched, it is hashed again
    # (other bytes: another key, analysed anew).
    blank = folder / "blank.mp4"
    stat, data = blank.stat(), bytearray(blank.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blank.write_bytes(bytes(data))
    os.utime(blank, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    same = analyze(blank, "-o", out, "--store", store, "--model", TEST_MODEL)
    assert same.returncode == 0 and "nothing new; 1 done before" in same.stdout, same.stdout + same.stderr
    os.utime(blank)
    touched = analyze(blank, "-o", out, "--store", store, "--model", TEST_MODEL)
    assert "; 0 done before" in touched.stdout and len(load(out).videos) == 7, touched.stdout + touched.stderr


def test_the_same_probabilities_as_the_rest_api(store, tmp_path):
    """...and without torch: a `torch` package that refuses to import comes first on the path of the command and of
    the worker processes it starts."""
    video = _two_faces_video(tmp_path / "people.mp4")
    blocked = tmp_path / "no-torch" / "torch"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('s2d analyze imported torch')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(REPO)])}
    result = analyze(video, "-o", tmp_path / "out", "--store", store, "--model", TEST_MODEL, "--workers", "1",
                     "--smoothing", "ema", "--no-engine-trial", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    windows, videos = load(tmp_path / "out")
    assert videos["engine"].tolist() == ["onnxruntime/fp32"]
    # Without warm-up the server keeps the card's variant on ONNX Runtime's CPU provider, as `s2d analyze
    # --no-engine-trial` does (with the trial, either may time the engines and pick one whose float rounding differs).
    with running_server(store, models=[TEST_MODEL], warmup=False) as server, server.client() as client:
        params = {"mode": "faces", "model": TEST_MODEL, "smoothing": "ema"}
        files = {"file": (video.name, video.read_bytes(), "video/mp4")}
        response = client.post("/v1/classify", params=params, files=files)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["provider"] == "CPUExecutionProvider"
    rest = [(p["track_id"], w["t_start"], w["probs"][c], w["smoothed"]["label"], w["middle"]["keypoints"][2][0])
            for p in response.json()["persons"] for w in p["windows"] for c in TEST_CLASSES]  # fmt: skip
    batch = [(r.track_id, r.t_start, getattr(r, f"p_{c}"), r.smoothed_label, r.nose_x)
             for r in windows.sort_values(["track_id", "t_start"]).itertuples() for c in TEST_CLASSES]  # fmt: skip
    assert len(batch) == len(rest) >= 4 * len(TEST_CLASSES)
    for (track, start, p, label, nose), (track2, start2, p2, label2, nose2) in zip(batch, rest, strict=True):
        assert (track, start, label) == (track2, start2, label2)
        assert abs(p - p2) < 1e-6 and abs(nose - nose2) < 1e-4


def test_memory_is_bounded_by_the_window_not_the_video(store, tmp_path):
    """The worker's peak resident memory after a 60 s video is within 100 MiB of that after a 4 s one (the 600
    decoded frames alone would be 400 MiB if they were kept). ONNX Runtime's fp32, untimed (the same engine for
    both runs, whatever the timings), one window per engine call: with dynamic batching the
    engine's memory grows with the largest batch it met, which depends on how fast the pipeline fills the queue, so
    on the machine's speed (a clean run on a quiet machine once grew 134 MiB that way)."""
    settings = tmp_path / "one-window-per-call.toml"
    settings.write_text("max_batch = 1\n")
    peaks = {}
    for name, frames in (("short", 40), ("long", 600)):
        video = face_clip(tmp_path / f"{name}.mp4", frames)
        result = analyze(video, "-o", tmp_path / name, "--store", store, "--model", TEST_MODEL, "--workers", "1",
                         "--settings", settings, "--no-engine-trial")  # fmt: skip
        assert result.returncode == 0, result.stderr
        (row,) = load(tmp_path / name).videos.itertuples()
        assert row.frames_decoded == frames and row.windows >= 0.8 * frames / 10 * 2  # 1 s windows, 0.5 s hop
        peaks[name] = row.peak_rss_mib
    assert peaks["long"] - peaks["short"] < 100, peaks


def _videos(root: Path, count: int) -> list[Path]:
    """`count` different short face clips (different lengths and starts: different content)."""
    root.mkdir(exist_ok=True)
    return [face_clip(root / f"clip{i}.mp4", 12 + i, start=20 + 9 * i) for i in range(count)]


def _interrupt(command: list, out: Path, env: dict, signals: int) -> tuple[int, str]:
    """Start `s2d analyze`, wait for its first finished video, then Ctrl-C (SIGINT to the process group) `signals`
    times, each once the previous one was taken (two at once would be one: signals do not queue); the exit status
    and stderr."""
    log = out.parent / "stderr.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240

    def wait_for(condition) -> None:
        while not condition():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    wait_for(lambda: list((out / "videos").glob("*.parquet")))
    os.killpg(process.pid, signal.SIGINT)
    if signals == 2:
        wait_for(lambda: "interrupted: finishing the videos in flight" in log.read_text())
        os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=240)
    return process.returncode, log.read_text()


@pytest.mark.parametrize("signals", [1, 2], ids=["finish-in-flight", "abandon-in-flight"])
def test_ctrl_c_stops_cleanly_and_the_next_run_finishes_the_rest(store, tmp_path, signals):
    """Every window's inference is held 1.5 s (the fault-injection setting), so the first run cannot be done when
    Ctrl-C comes: once, the video in flight finishes and is written; twice, it is abandoned and nothing of it is."""
    videos = _videos(tmp_path / "videos", 5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "s2d", "analyze", str(tmp_path / "videos"), "-o", str(out), "--store",
               str(store), "--model", TEST_MODEL, "--workers", "1"]  # fmt: skip
    slow = {**os.environ, "S2D_FAULT_INFERENCE_DELAY_MS": "1500"}
    returncode, stderr = _interrupt(command, out, slow, signals)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    written = sorted((out / "videos").iterdir())
    assert 1 <= len(written) <= (2 if signals == 1 else 1), written  # one worker: at most one video in flight
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in written}

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(videos) - len(written)} ok; {len(written)} done before" in result.stdout, result.stdout
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == first[p.name] for p in written)  # not written again
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file left
    windows, table = load(out)
    assert sorted(table["path"]) == sorted(map(str, videos)) and (table["status"] == "ok").all()
    assert not windows.duplicated(["video_key", "model", "track_id", "t_start"]).any()
    assert windows.groupby("video_key").size().to_dict() == dict(zip(table["video_key"], table["windows"], strict=True))


def _worker_processes(parent: int) -> list[int]:
    """The pool's worker processes among the children of `parent` (not multiprocessing's resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def test_a_worker_killed_mid_video_fails_that_video_only(store, tmp_path):
    """SIGKILL to the worker process as soon as it exists: it already holds the first video (the pool starts its
    workers when a video is handed out; that video takes >= 1.5 s a window). That video is recorded as failed, a new
    worker does the rest, the exit status says so, and the next run redoes it."""
    videos = _videos(tmp_path / "videos", 3)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "s2d", "analyze", str(tmp_path / "videos"), "-o", str(out), "--store",
               str(store), "--model", TEST_MODEL, "--workers", "1"]  # fmt: skip
    slow = {**os.environ, "S2D_FAULT_INFERENCE_DELAY_MS": "1500"}
    process = subprocess.Popen(command, cwd=REPO, env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (workers := _worker_processes(process.pid)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 1, stderr
    table = load(out).videos
    assert sorted(table["status"]) == ["failed", "ok", "ok"], table[["path", "status", "error_code"]]
    assert table.loc[table["status"] == "failed", "error_code"].tolist() == ["worker_died"]
    assert f":{workers[0]}" not in " ".join(table["worker"].dropna())  # the rest: a new worker process
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "1 ok; 2 done before" in again.stdout, again.stderr
    assert sorted(load(out).videos["path"]) == sorted(map(str, videos))


def test_progress_is_one_line_on_a_terminal_and_log_lines_otherwise():
    from s2d.batch.progress import Progress
    from s2d.batch.worker import Record

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    records = [Record("a", {"status": "ok", "duration_s": 4.0, "windows": 7, "path": "a.mp4"}),
               Record("b", {"status": "failed", "error_code": "undecodable", "path": "b.mp4"})]  # fmt: skip
    for stream in (Terminal(), io.StringIO()):
        progress = Progress(total=3, skipped=1, stream=stream)
        for record in records:
            progress.update(record)
        progress.close()
        text = stream.getvalue()
        assert "2/3 videos (1 failed, 1 done before)" in text and "video-s/s, ETA" in text
        if isinstance(stream, Terminal):
            assert text.count("\r") == 2 and text.count("\n") == 1  # one line, rewritten
        else:
            assert text.splitlines()[1].startswith("[2/3] failed (undecodable) b.mp4")


def test_a_manifest_carries_its_columns_and_csv_tables_load_the_same(store, tmp_path):
    two = _two_faces_video(tmp_path / "two.mp4")
    blank = make_video(tmp_path / "blank.mp4", seconds=0.5, fps=8, size=(240, 320))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,participant,session\ntwo.mp4,p01,1\n{blank},p02,2\nmissing.mp4,p03,3\n")
    result = analyze(manifest, "-o", tmp_path / "out", "--store", store, "--format", "csv", "--workers", "1")
    assert result.returncode == 1, result.stderr  # the missing file is recorded as failed, never dropped
    assert sorted(p.suffix for p in (tmp_path / "out" / "videos").iterdir()) == [".csv"] * 3
    windows, videos = load(tmp_path / "out")
    by_name = videos.set_index(videos["path"].map(lambda p: Path(p).name))
    assert by_name.loc["two.mp4", ["participant", "status"]].tolist() == ["p01", "ok"]
    assert by_name.loc["blank.mp4", ["participant", "status"]].tolist() == ["p02", "no_face"]
    assert by_name.loc["missing.mp4", ["status", "error_code"]].tolist() == ["failed", "not_found"]
    assert by_name.loc["two.mp4", "path"] == str(two) and len(windows) == by_name.loc["two.mp4", "windows"]
    assert windows["left_eye_x"].notna().all() and windows["track_id"].dtype == "Int64"

    clash = tmp_path / "clash.csv"
    clash.write_text("path,status\ntwo.mp4,x\n")
    refused = analyze(clash, "-o", tmp_path / "out2", "--store", store)
    assert refused.returncode == 2 and "status" in refused.stderr and not (tmp_path / "out2").exists()


def test_inputs_expand_folders_globs_and_lists(tmp_path):
    for name in ("a.mp4", "b.MOV", "sub/c.mkv", "sub/deeper/d.webm", "readme.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# a comment\na.mp4\n\nsub/c.mkv\n")
    names = lambda args: [v.path.relative_to(tmp_path).as_posix() for v in inputs.expand_inputs(args)]  # noqa: E731
    assert names([str(tmp_path)]) == ["a.mp4", "b.MOV", "sub/c.mkv", "sub/deeper/d.webm"]
    assert names([str(tmp_path / "**" / "*.mkv"), str(tmp_path / "a.mp4")]) == ["sub/c.mkv", "a.mp4"]
    assert names([str(listing), str(tmp_path / "a.mp4")]) == ["a.mp4", "sub/c.mkv"]  # each path once
    with pytest.raises(inputs.InputError, match="matches nothing"):
        inputs.expand_inputs([str(tmp_path / "*.avi")])
    with pytest.raises(inputs.InputError, match="no such file"):
        inputs.expand_inputs([str(tmp_path / "nothing.mp4")])


def test_scores_of_a_hand_computed_case():
    """Three classes, six samples: happy 2/3 right, sad 1/2, angry 1/1 -> WAR 4/6, UAR (2/3 + 1/2 + 1) / 3."""
    pairs = [("happy", "happy"), ("happy", "happy"), ("happy", "sad"), ("sad", "sad"), ("sad", "angry"),
             ("angry", "angry"), ("angry", None)]  # fmt: skip
    m = accuracy.scores(pairs, ["happy", "sad", "angry"])
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]] and (m["samples"], m["unscored"]) == (6, 1)
    assert math.isclose(m["war"], 4 / 6) and math.isclose(m["uar"], (2 / 3 + 1 / 2 + 1) / 3)
    assert accuracy.match_label(" Happiness ", ["angry", "happy"], "m") == "happy"
    with pytest.raises(ValueError, match="'joy' is not a class of model 'm'; its classes: angry, happy"):
        accuracy.match_label("joy", ["angry", "happy"], "m")


def _check_metrics(m: dict, rows: pd.DataFrame, clips: list[Path], truth: list[str]) -> None:
    """`m` is what the rows imply: per clip the argmax of its windows' mean probabilities against the truth."""
    predicted = []
    for clip in clips:
        mine = rows[rows["path"] == str(clip)]
        predicted.append(TEST_CLASSES[int(np.argmax([mine[f"p_{c}"].mean() for c in TEST_CLASSES]))])
    right = [t == p for t, p in zip(truth, predicted, strict=True)]
    recalls = [np.mean([r for r, t in zip(right, truth, strict=True) if t == c]) for c in sorted(set(truth))]
    assert m["samples"] == len(clips) and math.isclose(m["war"], sum(right) / len(clips))
    assert math.isclose(m["uar"], np.mean(recalls))
    confusion = np.array(m["confusion"])
    for t, p in zip(truth, predicted, strict=True):
        confusion[TEST_CLASSES.index(t), TEST_CLASSES.index(p)] -= 1
    assert not confusion.any()


def test_labelled_videos_give_uar_war_and_confusion_for_two_models(store, tmp_path):
    """The metrics of each model are those its rows imply: recomputed here by hand from the windows table."""
    clips = _videos(tmp_path / "videos", 4)
    labels = ["happy", "Sadness", "happy", "angry"]  # a dataset's spelling is matched to the card's classes
    truth = ["happy", "sad", "happy", "angry"]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{c},{lab}\n" for c, lab in zip(clips, labels, strict=True)))
    out = tmp_path / "out"
    result = analyze(manifest, "-o", out, "--store", store, "--model", TEST_MODEL, "--model", OTHER_MODEL)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())["models"]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    windows = load(out).windows
    for model in (TEST_MODEL, OTHER_MODEL):
        _check_metrics(metrics[model], windows[windows["model"] == model], clips, truth)
        assert f"{model}: WAR {100 * metrics[model]['war']:.1f}%" in result.stdout

    # Other options into the same folder: the metrics are those of this run's windows only.
    again = analyze(manifest, "-o", out, "--store", store, "--model", TEST_MODEL, "--hop-seconds", "1")
    assert again.returncode == 0, again.stderr
    metrics = json.loads((out / "metrics.json").read_text())["models"]
    windows, videos = load(out)
    (key,) = set(videos.loc[videos["options"].str.contains('"hop_seconds": 1.0'), "run_key"])
    assert list(metrics) == [TEST_MODEL]
    _check_metrics(metrics[TEST_MODEL], windows[windows["run_key"] == key], clips, truth)

    spans = tmp_path / "spans.csv"
    spans.write_text(f"path,start,end,label\n{clips[0]},0,1,happy\n{clips[1]},0,,joy\n")
    refused = analyze(clips[0], "-o", tmp_path / "out2", "--store", store, "--labels", spans)
    assert refused.returncode == 2 and "'joy' is not a class of model" in refused.stderr
    assert not (tmp_path / "out2").exists()  # before any work
