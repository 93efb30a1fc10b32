"""Model card: the schema the service validates against; clear errors naming the file and the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from s2d.card import SCHEMA_PATH, CardError, ModelCard, card_json_schema, load_card, parse_card


def card_dict(**changes) -> dict:
    card = {
        "name": "demo_tiny",
        "version": "2026.11.24",
        "classes": ["happy", "sad", "neutral"],
        "num_frames": 4,
        "window_seconds": 2.0,
        "variants": {
            "fp32": {"file": "model.onnx", "precision": "fp32", "providers": ["CPUExecutionProvider"], "size_bytes": 9},
            "int8": {
                "file": "model.int8.onnx",
                "precision": "int8",
                "providers": ["CPUExecutionProvider"],
                "size_bytes": 5,
                "top1_agreement": 1.0,
                "agreement_clips": 64,
            },
        },
        "demo": True,
        "licence": "Apache-2.0",
        "source_checkpoint": {"path": "best.safetensors", "sha256": "0" * 64},
        "architecture": {"name": "s2d_tiny"},
    }
    card.update(changes)
    return card


def test_a_valid_card_round_trips_through_json(tmp_path):
    card = parse_card(card_dict())
    assert card.input.layout == "BTHWC" and card.input.dtype == "uint8" and card.input_shape == [None, 4, 224, 224, 3]
    path = card.save(tmp_path / "card.json")
    assert load_card(tmp_path) == card  # a folder or the file itself
    assert json.loads(path.read_text())["schema_version"] == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"classes": ["a", "a"]}, "classes"),
        ({"num_frames": 0}, "num_frames"),
        ({"window_seconds": -1}, "window_seconds"),
        ({"variants": {}}, "variants"),
        ({"colour": "RGB"}, "colour"),  # unknown keys are typos, not extensions
        ({"licence": ""}, "licence"),
        ({"source_checkpoint": {"path": "x.pth", "sha256": "abc"}}, "source_checkpoint.sha256"),
        ({"family": "video"}, "family"),  # s2d-video, frame-baseline or demo
        ({"family": "frame-baseline"}, "<card>"),  # demo: true contradicts it
    ],
)
def test_invalid_cards_name_the_file_and_the_field(tmp_path, changes, field):
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card_dict(**changes)))
    with pytest.raises(CardError) as err:
        load_card(path)
    assert str(path) in str(err.value) and field in str(err.value)
    assert err.value.field == field and isinstance(err.value, ValueError)


def test_variant_files_stay_inside_the_model_folder():
    bad = card_dict()
    bad["variants"]["fp32"]["file"] = "../../etc/model.onnx"
    with pytest.raises(CardError, match=r"variants\.fp32\.file"):
        parse_card(bad)
    no_fp32 = card_dict()
    del no_fp32["variants"]["fp32"]
    with pytest.raises(CardError, match="fp32"):
        parse_card(no_fp32)


def test_unreadable_cards_are_card_errors(tmp_path):
    with pytest.raises(CardError, match="no model card"):
        load_card(tmp_path / "missing.json")
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(CardError, match="not JSON"):
        load_card(tmp_path / "card.json")


def test_committed_schema_is_the_generated_one():
    assert json.loads(SCHEMA_PATH.read_text()) == card_json_schema(), "run: python -m s2d.card"
    assert set(ModelCard.model_json_schema()["required"]) >= {"name", "classes", "variants", "licence"}


def test_card_and_store_import_without_torch():
    code = "import sys, s2d.card, s2d.store; assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
