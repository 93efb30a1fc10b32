"""Datasets for training S2D: layout indexes, frame reading and temporal sampling, torch Datasets, synthetic clips.

`load_index` reads the real layouts (DFEW, FERV39k, MAFW, RAF-DB, AffectNet-7/8, FERPlus, your own folders);
`ClipDataset` / `ImageDataset` turn an index into training items; `make_synthetic_dfew` writes test data.
"""

from .datasets import ClipDataset, ImageDataset, class_balanced_weights, stratified_split
from .frames import FrameError, load_clip, read_frame, test_windows, train_window, uniform_indices, uniform_times
from .layouts import DATASET_CLASSES, DATASETS, DatasetError, DatasetIndex, Sample, list_frames, load_index
from .synthetic import SyntheticSet, draw_face, make_synthetic_dfew

__all__ = [
    "DATASETS",
    "DATASET_CLASSES",
    "ClipDataset",
    "DatasetError",
    "DatasetIndex",
    "FrameError",
    "ImageDataset",
    "Sample",
    "SyntheticSet",
    "class_balanced_weights",
    "draw_face",
    "list_frames",
    "load_clip",
    "load_index",
    "make_synthetic_dfew",
    "read_frame",
    "stratified_split",
    "test_windows",
    "train_window",
    "uniform_indices",
    "uniform_times",
]
