"""Optimiser groups, the learning-rate schedule, metrics and configuration files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from s2d.models import create_model
from s2d.training.config import load_config
from s2d.training.metrics import confusion_matrix, summarize, write_report
from s2d.training.optim import CosineSchedule, build_optimizer, parameter_groups, scaled_lr

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_no_weight_decay_on_biases_1d_and_embeddings():
    model = create_model("s2d_tiny", num_frames=2, depth=2)
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "s2d.temporal_embedding" in skipped and "s2d.head.fc_cls.bias" in skipped
    assert "s2d.prompt_norms.0.weight" in skipped and "s2d.prompt_blocks.0.fovea.smooth" in skipped
    assert "s2d.head.fc_cls.weight" in decayed and "s2d.prompt_blocks.1.TMA.T_Adapter.D_fc1.weight" in decayed
    assert not any("blocks.0.attn" in n and "prompt" not in n for n in decayed | skipped)  # frozen ViT excluded
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_lr_scaling_and_schedule_follow_the_released_formulas():
    assert scaled_lr(1e-5, 16) == pytest.approx(2e-5)  # 2 GPUs x 8 clips
    model = create_model("s2d_tiny", num_frames=2, depth=1)
    optimizer = build_optimizer(model, 1.0, 0.05)
    schedule = CosineSchedule(optimizer, total_steps=10, warmup_steps=4, base_lr=1.0, min_lr=0.0, warmup_lr=0.1)
    lrs = [schedule.step() for _ in range(10)]
    assert lrs[:4] == pytest.approx([0.1, 0.4, 0.7, 1.0])  # linspace(warmup_lr, base_lr, warmup_steps)
    cosine = [0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(6)]
    assert lrs[4:] == pytest.approx(cosine)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine[-1])
    state = schedule.state_dict()
    schedule.load_state_dict({"step_count": 2})
    assert schedule.step() == pytest.approx(0.7) and state == {"step_count": 10}


def test_lr_scales_give_named_parameters_a_multiple_of_the_scheduled_lr():
    cfg = load_config(None, ["optim.lr_scales.head=0.1", "optim.lr_scales.temporal_embedding=3"])
    assert cfg.optim.lr_scales == {"head": 0.1, "temporal_embedding": 3.0}
    model = create_model("s2d_tiny", num_frames=2, depth=1)
    optimizer = build_optimizer(model, 1.0, 0.05, lr_scales=cfg.optim.lr_scales)
    CosineSchedule(optimizer, total_steps=10, warmup_steps=1, base_lr=1.0, min_lr=0.0, warmup_lr=0.5).step()
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert lr_of["s2d.head.fc_cls.weight"] == (pytest.approx(0.05), 0.05)
    assert lr_of["s2d.head.fc_cls.bias"] == (pytest.approx(0.05), 0.0)
    assert lr_of["s2d.temporal_embedding"] == (pytest.approx(1.5), 0.0)
    assert lr_of["s2d.ln_post.weight"] == (pytest.approx(0.5), 0.0)
    with pytest.raises(ValueError, match="hed match no trainable parameter"):
        build_optimizer(model, 1.0, 0.05, lr_scales={"hed": 2.0})
    with pytest.raises(ValueError, match=r"optim\.lr_scales: .*valid dictionary"):
        load_config(None, ["optim.lr_scales=3"])


def test_uar_is_mean_recall_and_war_is_accuracy(tmp_path):
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    matrix = confusion_matrix(preds, labels, 3)
    assert matrix.tolist() == [[3, 1, 0], [0, 1, 0], [1, 0, 1]]
    summary = summarize(matrix, ["a", "b", "c"])
    assert summary["uar"] == pytest.approx(100 * (0.75 + 1 + 0.5) / 3)
    assert summary["war"] == pytest.approx(100 * 5 / 7)
    assert summary["per_class_recall"] == {"a": 75.0, "b": 100.0, "c": 50.0}
    json_path, png_path = write_report(summary, tmp_path, "test")
    assert json_path.is_file() and png_path.read_bytes()[:4] == b"\x89PNG"


def test_every_paper_experiment_has_a_config_and_overrides_apply():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    expected = {"static_affectnet7", "static_affectnet8", "static_rafdb", "static_ferplus", "ferv39k", "ferv39k_os"}
    expected |= {f"{d}_fold{k}{os}" for d in ("dfew", "mafw") for k in range(1, 6) for os in ("", "_os")}
    assert expected <= names
    for name in sorted(names):
        load_config(CONFIGS / f"{name}.yaml")  # every file parses into a valid config
    cfg = load_config(CONFIGS / "mafw_fold3_os.yaml", ["optim.lr=2e-5", "sdl.enabled=true"])
    assert cfg.data.dataset == "mafw" and cfg.data.fold == 3 and cfg.data.oversample and cfg.model.num_classes == 11
    assert cfg.optim.lr == 2e-5 and cfg.sdl.enabled
    ferv = load_config(CONFIGS / "ferv39k.yaml")
    assert ferv.sdl.enabled and ferv.model.head_dropout == 0 and ferv.augment.mixup == 0 and ferv.augment.smoothing == 0
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(CONFIGS / "dfew_fold1.yaml", ["optim.learning_rate=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage=videos", r"config key stage: Input should be 'video' or 'image'"),
        ("optim.precision=fp8", r"config key optim\.precision"),
        ("data.on_error=ignore", r"config key data\.on_error"),
        ("sdl.mode=magic", r"config key sdl\.mode"),
        ("model.train_backbone=maybe", r"config key model\.train_backbone"),  # a string is not a switch
        ("log_every=20", r"unknown config key log_every"),  # nothing read it, so it is no longer a key
        ("sdl.top_k=40", r"top_k must be in 1\.\.size"),
    ],
)
def test_a_typo_or_a_bad_choice_in_a_recipe_is_an_error(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(CONFIGS / "dfew_fold1.yaml", [override])


def test_model_num_classes_is_checked_against_the_dataset():
    from s2d.training.train import build_model

    cfg = load_config(None, ["model.name=s2d_tiny", "model.depth=1", "model.num_classes=11", "model.num_frames=2"])
    with pytest.raises(ValueError, match=r"model\.num_classes=11, the dataset has 7"):
        build_model(cfg, num_classes=7)
