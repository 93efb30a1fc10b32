"""Every dataset loader against a small tree in the dataset's real on-disk layout, bad rows included."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from s2d.training.data.layouts import DATASET_CLASSES, DatasetError, list_frames, load_index

_JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
_PNG = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()


def frames(folder: Path, count: int = 3, ext: str = ".jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        (folder / f"{i}{ext}").write_bytes(_PNG if ext == ".png" else _JPEG)
    return folder


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_JPEG)
    return path


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Frame order


def test_frames_sorted_numerically_and_non_images_ignored(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for name in ["10.jpg", "2.jpg", "1.jpg", "cover.jpg", "frame_003.JPG", "notes.txt", "11.png"]:
        (folder / name).write_bytes(_JPEG)
    names = [p.name for p in list_frames(folder)]
    assert names == ["1.jpg", "2.jpg", "frame_003.JPG", "10.jpg", "11.png", "cover.jpg"]


# ---------------------------------------------------------------------------------------------------------------------
# DFEW


def dfew_tree(root: Path, rows: str, split: str = "train", fold: int = 1) -> Path:
    clips = root / "Clip" / "clip_224x224_16f"
    for vid in ("00001", "00002", "00007"):
        frames(clips / vid, 12)
    (clips / "00005").mkdir(parents=True)
    (clips / "00005" / "readme.txt").write_text("no frames here")
    return write(root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"{split}_set_{fold}.csv", rows)


def test_dfew_one_based_padded_and_unpadded_ids_with_problems(tmp_path):
    source = dfew_tree(tmp_path, "video_name,label\n00001,1\n2,7\n00003,x\n00004,3\n00005,2\n00007,9\n")
    index = load_index("dfew", tmp_path, "train", fold=1)
    assert (
        index.classes == DATASET_CLASSES["dfew"] == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    )
    assert [s.id for s in index.samples] == ["00001", "00002"]
    assert index.labels == [0, 6]
    assert [p.name for p in index.samples[0].frames][:3] == ["1.jpg", "2.jpg", "3.jpg"]
    assert index.samples[0].frames[-1].name == "12.jpg"
    assert any("1-7" in n for n in index.notes)
    assert len(index.problems) == 4
    for line, word in zip((4, 5, 6, 7), ("not an integer", "not found", "no frames", "outside 1-7"), strict=True):
        assert f"{source}:{line}:" in "\n".join(index.problems)
        assert any(p.startswith(f"{source}:{line}:") and word in p for p in index.problems), (line, index.problems)


def test_dfew_zero_based_copies(tmp_path):
    dfew_tree(tmp_path, "video_name,label\n00001,0\n00002,6\n00007,2\n", split="test", fold=3)
    index = load_index("dfew", tmp_path, "test", fold=3)
    assert index.labels == [0, 6, 2]
    assert any("0-6" in n for n in index.notes)
    assert index.problems == []


def test_dfew_ambiguous_labels_assumed_one_based(tmp_path):
    dfew_tree(tmp_path, "video_name,label\n00001,1\n00002,6\n")
    index = load_index("dfew", tmp_path, "train", fold=1)
    assert index.labels == [0, 5]
    assert any("ambiguous" in n for n in index.notes)


def test_dfew_fail_mode_and_missing_files(tmp_path):
    source = dfew_tree(tmp_path, "video_name,label\n00001,1\n00004,7\n")
    with pytest.raises(DatasetError, match=re.escape(f"{source}:3: ") + ".*not found"):
        load_index("dfew", tmp_path, "train", fold=1, on_error="fail")
    with pytest.raises(DatasetError, match=r"test\(single-labeled\)/test_set_1\.csv"):
        load_index("dfew", tmp_path, "test", fold=1)
    with pytest.raises(DatasetError, match="fold"):
        load_index("dfew", tmp_path, "train")
    with pytest.raises(DatasetError, match="does-not-exist"):
        load_index("dfew", tmp_path / "does-not-exist", "train", fold=1)
    with pytest.raises(DatasetError, match="splits"):
        load_index("dfew", tmp_path, "val", fold=1)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_index("dfew2", tmp_path, "train", fold=1)


def test_dfew_bad_header_names_the_file(tmp_path):
    source = dfew_tree(tmp_path, "name,emotion\n00001,1\n")
    with pytest.raises(DatasetError, match=re.escape(f"{source}:1: ") + ".*video_name"):
        load_index("dfew", tmp_path, "train", fold=1)


# ---------------------------------------------------------------------------------------------------------------------
# FERV39k and MAFW


@pytest.mark.parametrize("where", ["Annotation", "."])
def test_ferv39k(tmp_path, where):
    crops = tmp_path / "2_ClipsforFaceCrop"
    frames(crops / "Interview" / "Happy" / "0118", 5)
    frames(crops / "DailyLife" / "Angry" / "0094", 2)
    rows = "path,id\nInterview/Happy/0118,3\nDailyLife/Angry/0094,0\nSocial/Angry/0005,0\nInterview/Happy/0118,7\n"
    source = write(tmp_path / where / "test.csv", rows)
    index = load_index("ferv39k", tmp_path, "test")
    assert index.classes == ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
    assert [(s.id, s.label, len(s.frames)) for s in index.samples] == [
        ("Interview/Happy/0118", 3, 5),
        ("DailyLife/Angry/0094", 0, 2),
    ]
    assert [p.split(": ")[0] for p in index.problems] == [f"{source}:4", f"{source}:5"]


def mafw_tree(root: Path) -> Path:
    for vid in ("03747", "00025", "00108"):
        frames(root / "frames_crop_align_224" / vid, 4, ext=".png")
    return root / "anno" / "single" / "no_caption" / "set_2"


def test_mafw_csv(tmp_path):
    source = write(mafw_tree(tmp_path) / "train.csv", "video_name,labels\n03747,0\n00025,10\n00108,11\n09999,3\n")
    index = load_index("mafw", tmp_path, "train", fold=2)
    assert len(index.classes) == 11 and index.classes[2] == "Contempt"
    assert [(s.id, s.label) for s in index.samples] == [("03747", 0), ("00025", 10)]
    assert index.samples[0].frames[0].suffix == ".png"
    assert [p.split(": ")[0] for p in index.problems] == [f"{source}:4", f"{source}:5"]


def test_mafw_txt_crlf_with_names(tmp_path):
    source = write(
        mafw_tree(tmp_path) / "test.txt", "03747.mp4 anger\n00025.mp4 contempt\n00108.mp4 joy\n", newline="\r\n"
    )
    index = load_index("mafw", tmp_path, "test", fold=2)
    assert [(s.id, s.label) for s in index.samples] == [("03747", 0), ("00025", 2)]
    assert index.problems == [f"{source}:3: unknown emotion 'joy'"]


# ---------------------------------------------------------------------------------------------------------------------
# Images


def test_rafdb(tmp_path):
    aligned = tmp_path / "basic" / "Image" / "aligned"
    for name in ("train_00001", "train_00002", "test_0001"):
        image(aligned / f"{name}_aligned.jpg")
    source = write(
        tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt",
        "train_00001.jpg 5\ntrain_00002.jpg 7\ntrain_00003.jpg 1\ntest_0001.jpg 1\ntrain_00004.jpg\n",
    )
    train = load_index("rafdb", tmp_path, "train")
    assert train.classes[4] == "Sadness"
    assert [(s.id, s.label) for s in train.samples] == [("train_00001", 4), ("train_00002", 6)]
    assert train.samples[0].image == aligned / "train_00001_aligned.jpg"
    assert [p.split(": ")[0] for p in train.problems] == [f"{source}:3", f"{source}:5"]
    test = load_index("rafdb", tmp_path, "test")
    assert [(s.id, s.label) for s in test.samples] == [("test_0001", 0)]


_AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
)


def affectnet_tree(root: Path) -> Path:
    for name in ("1/a.jpg", "1/b.jpg", "2/c.jpg", "2/d.jpg"):
        image(root / "Manually_Annotated_Images" / name)
    rows = [
        '1/a.jpg,10,12,100,90,"1.0;2.0;3.0",1,0.5,0.1',
        "1/b.jpg,0,0,50,50,,7,0,0",  # Contempt
        "2/c.jpg,0,0,50,50,,8,0,0",  # None: excluded
        "2/d.jpg,0,0,50,50,,10,0,0",  # Non-face: excluded
        "2/e.jpg,0,0,50,50,,3,0,0",  # missing image
        "2/d.jpg,0,0,50,50,,happy,0,0",  # bad expression
        "2/d.jpg,x,0,50,50,,2,0,0",  # bad box
    ]
    return write(root / "Manually_Annotated_file_lists" / "validation.csv", _AFFECTNET_HEADER + "\n".join(rows) + "\n")


def test_affectnet8_and_7(tmp_path):
    source = affectnet_tree(tmp_path)
    eight = load_index("affectnet8", tmp_path, "test")
    assert eight.classes[-1] == "Contempt" and len(eight.classes) == 8
    assert [(s.id, s.label, s.box) for s in eight.samples] == [
        ("1/a.jpg", 1, (10, 12, 100, 90)),
        ("1/b.jpg", 7, (0, 0, 50, 50)),
    ]
    assert [p.split(": ")[0] for p in eight.problems] == [f"{source}:6", f"{source}:7", f"{source}:8"]
    assert any("excluded 2 rows with expression 8-10" in n for n in eight.notes)
    seven = load_index("affectnet7", tmp_path, "test")
    assert len(seven.classes) == 7 and "Contempt" not in seven.classes
    assert [s.id for s in seven.samples] == ["1/a.jpg"]
    assert any("excluded 1 Contempt" in n for n in seven.notes)
    with pytest.raises(DatasetError, match=r"training\.csv"):
        load_index("affectnet8", tmp_path, "train")


def test_ferplus_majority_vote_and_dropped_rows(tmp_path):
    pixels = " ".join(["7"] * 2304)
    fer = ["emotion,pixels,Usage"] + [f"0,{pixels},Training"] * 4 + [f"0,{pixels},PublicTest", "0,1 2 3,PrivateTest"]
    write(tmp_path / "fer2013.csv", "\n".join(fer) + "\n")
    votes = [
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF",
        "Training,fer0000000.png,4,0,0,0,0,6,0,0,0,0",  # disgust
        "Training,fer0000001.png,0,0,0,0,0,0,0,0,2,8",  # NF wins: dropped
        "Training,,0,0,0,0,0,0,0,0,0,10",  # no face: dropped
        "Training,fer0000003.png,0,5,5,0,0,0,0,0,0,0",  # tie: first in class order (happiness)
        "PublicTest,fer0000004.png,0,0,0,0,0,0,0,10,0,0",
        "PrivateTest,fer0000005.png,10,0,0,0,0,0,0,0,0,0",  # bad pixels
    ]
    source = write(tmp_path / "fer2013new.csv", "\n".join(votes) + "\n")
    train = load_index("ferplus", tmp_path, "train")
    assert train.classes == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    assert [(s.id, s.label) for s in train.samples] == [("fer0000000.png", 5), ("fer0000003.png", 1)]
    assert train.samples[0].pixels.shape == (48, 48) and train.samples[0].pixels.dtype == np.uint8
    assert any("dropped 2" in n for n in train.notes)
    assert any("PublicTest -> val" in n for n in train.notes)
    assert [s.label for s in load_index("ferplus", tmp_path, "val").samples] == [7]
    test = load_index("ferplus", tmp_path, "test")
    assert test.samples == [] and test.problems[0].startswith(f"{source}:7: pixels")


# ---------------------------------------------------------------------------------------------------------------------
# Your own folders


def test_folder_tree_of_clips_and_images(tmp_path):
    frames(tmp_path / "happy" / "clip_a", 3)
    frames(tmp_path / "sad" / "clip_b", 2)
    image(tmp_path / "sad" / "photo.jpg")
    (tmp_path / "sad" / "empty").mkdir()
    (tmp_path / "sad" / ".DS_Store").write_text("")
    index = load_index("folder", tmp_path, "train")
    assert index.classes == ("happy", "sad")
    assert [(s.id, s.label, len(s.frames), s.image is not None) for s in index.samples] == [
        ("happy/clip_a", 0, 3, False),
        ("sad/clip_b", 1, 2, False),
        ("sad/photo.jpg", 1, 0, True),
    ]
    assert len(index.problems) == 1 and "no frames" in index.problems[0]
    assert any("whole tree" in n for n in index.notes)


def test_folder_csv_with_classes_txt_names_and_indices(tmp_path):
    frames(tmp_path / "clips" / "a", 2)
    frames(tmp_path / "clips" / "b", 2)
    write(tmp_path / "classes.txt", "onset\noffset\n")
    source = write(
        tmp_path / "train.csv", "path,label\nclips/a,offset\nclips/b,0\nclips/c,1\nclips/a,2\nclips/b,smile\n"
    )
    index = load_index("folder", tmp_path, "train")
    assert index.classes == ("onset", "offset")
    assert [(s.id, s.label) for s in index.samples] == [("clips/a", 1), ("clips/b", 0)]
    assert [p.split(": ")[0] for p in index.problems] == [f"{source}:4", f"{source}:5", f"{source}:6"]
    with pytest.raises(DatasetError, match=re.escape(f"{source}:4")):
        load_index("folder", tmp_path, "train", on_error="fail")


def test_folder_csv_without_classes_txt_agrees_across_splits(tmp_path):
    frames(tmp_path / "a", 1)
    write(tmp_path / "train.csv", "path,label\na,sad\na,happy\n")
    write(tmp_path / "test.csv", "path,label\na,sad\n")
    assert load_index("folder", tmp_path, "test").classes == ("happy", "sad")
    assert load_index("folder", tmp_path, "test").labels == [1]
