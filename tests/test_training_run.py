"""Whole training runs on small synthetic data: resumption is exact, and 2 gloo processes equal 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from s2d.models.checkpoint import load_checkpoint
from s2d.training.config import load_config
from s2d.training.data.synthetic import make_synthetic_dfew
from s2d.training.train import run


@pytest.fixture(scope="module")
def dfew_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfew")
    make_synthetic_dfew(root, clips_per_class=3, num_frames=4, task="expression", seed=0)
    return root


def overrides(root, out, **extra) -> list[str]:
    values = {
        "stage": "video",
        "model.name": "s2d_tiny",
        "model.depth": 1,
        "model.num_frames": 4,
        "model.head_dropout": 0.0,
        "model.init": "null",
        "model.landmark": "null",
        "data.dataset": "dfew",
        "data.root": str(root),
        "data.fold": 1,
        "data.num_workers": 0,
        "data.val_fraction": 0.3,
        "data.test_views": 2,
        "data.test_crops": 1,
        "optim.batch_size": 4,
        "optim.epochs": 3,
        "optim.warmup_epochs": 1,
        "optim.lr": 1e-3,
        "optim.precision": "fp32",
        "output_dir": str(out),
        "device": "cpu",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def last_state(out) -> dict:
    return torch.load(out / "last.pt", map_location="cpu", weights_only=True)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(dfew_root, tmp_path):
    # Mixup, RandAugment, erasing and the SDL memory are all on, so every random stream must be restored.
    extra = {"sdl.enabled": "true", "sdl.start_epoch": 1, "augment.mixup": 0.8}
    straight = run(load_config(None, overrides(dfew_root, tmp_path / "straight", **extra)))
    stopped = run(load_config(None, overrides(dfew_root, tmp_path / "resumed", stop_after_epoch=0, **extra)))
    assert stopped == {"stopped_after_epoch": 0, "validation": stopped["validation"]}
    resumed = run(load_config(None, overrides(dfew_root, tmp_path / "resumed", **extra)))

    a, b = last_state(tmp_path / "straight"), last_state(tmp_path / "resumed")
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["anchors"]["filled"].sum() > 0  # the SDL memory holds real features
    for key in a["anchors"]:
        assert torch.equal(a["anchors"][key], b["anchors"][key]), key
    assert straight["confusion_matrix"] == resumed["confusion_matrix"]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_the_best_checkpoint_is_chosen_on_validation_and_tested_once(dfew_root, tmp_path):
    summary = run(load_config(None, overrides(dfew_root, tmp_path)))
    model, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["selected_on"].startswith("validation") and meta["classes"][0] == "happy"
    assert summary["selected_epoch"] == meta["validation"]["epoch"]
    report = json.loads((tmp_path / "test.json").read_text())
    assert report["num_samples"] == summary["num_samples"] > 0
    assert (tmp_path / "test_confusion.png").is_file()
    assert model.config.num_frames == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_result_as_one_with_the_same_global_batch(dfew_root, tmp_path):
    common = {"augment.mixup": 0.0, "augment.cutmix": 0.0}
    single = run(load_config(None, overrides(dfew_root, tmp_path / "one", **common)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        "-m", "s2d", "train", *overrides(dfew_root, tmp_path / "two", **{**common, "optim.batch_size": 2}),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "test.json").read_text())
    assert double["confusion_matrix"] == single["confusion_matrix"]
    assert double["uar"] == pytest.approx(single["uar"]) and double["war"] == pytest.approx(single["war"])
    one, two = last_state(tmp_path / "one"), last_state(tmp_path / "two")
    for key in one["model"]:
        torch.testing.assert_close(one["model"][key], two["model"][key], atol=1e-5, rtol=1e-4, msg=key)
