"""The service chooses its variant per machine (issue 19): at warm-up it times the CPU variants whose card agreement
meets the bar and serves the fastest; a setting pins one. Timings are given to the decision, never measured speed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from s2d.card import load_card
from s2d.machine import isa_summary
from s2d.service import registry as registry_module
from s2d.service.inference import fastest_variant, time_variants
from s2d.service.registry import ModelRegistry
from s2d.service.settings import Settings
from s2d.store import MIN_AGREEMENT
from tests.service_helpers import TEST_MODEL, build_store


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """The tiny test model with two more CPU variants (copies of its graph): int8, agreeing with fp32, and int8-bad,
    below the agreement bar."""
    root = tmp_path_factory.mktemp("store")
    shutil.copytree(build_store(str(tmp_path_factory.getbasetemp() / "built")) / TEST_MODEL, root / TEST_MODEL)
    folder = root / TEST_MODEL
    card = json.loads((folder / "card.json").read_text())
    fp32 = card["variants"]["fp32"]
    for name, agrees in (("int8", 1.0), ("int8-bad", MIN_AGREEMENT - 0.05)):
        shutil.copy(folder / "model.onnx", folder / f"model.{name}.onnx")
        card["variants"][name] = {
            **fp32,
            "file": f"model.{name}.onnx",
            "precision": "int8",
            "top1_agreement": agrees,
        }
    (folder / "card.json").write_text(json.dumps(card))
    load_card(folder)  # still a valid card
    return root


def timings(seconds: dict[str, float], offered: list[list[str]]):
    """A stand-in for time_variants: records which variants were offered and returns the given seconds per clip."""

    def fake(sessions):
        offered.append(sorted(sessions))
        return {v: seconds[v] for v in sessions}

    return fake


def load(store: Path, **settings) -> ModelRegistry:
    registry = ModelRegistry(Settings(model_store=store, models=[TEST_MODEL], **settings))
    registry.load()
    return registry


def test_fastest_variant_decides_on_the_timings_given():
    assert fastest_variant({"fp32": 2.0, "int8": 0.5, "int8-fused": 0.3}) == "int8-fused"
    assert fastest_variant({"fp32": 0.4, "int8": 0.5}) == "fp32"
    assert fastest_variant({"fp32": 0.5, "int8": 0.5}) == "fp32"  # a tie goes to the first: the reference
    assert fastest_variant({"fp32": 0.5, "int8": 0.46}) == "fp32"  # 8% faster: under the margin, fp32 stays
    assert fastest_variant({"fp32": 0.5, "int8": 0.44}) == "int8"


class _Fake:
    frame_shape = (1, 2, 2, 3)

    def __init__(self, delay_s: float):
        self.delay_s, self.calls = delay_s, 0

    def run(self, frames: np.ndarray) -> None:
        self.calls += 1
        time.sleep(self.delay_s)


def test_time_variants_times_every_candidate_and_finds_the_slowed_one():
    fast, slowed = _Fake(0.0), _Fake(0.05)  # fault injection: one variant 50 ms slower per call
    seconds = time_variants({"fp32": slowed, "int8": fast}, rounds=3)
    assert fast.calls == slowed.calls == 4  # one untimed call, then 3 timed, interleaved
    assert seconds["fp32"] >= 0.05 and fastest_variant(seconds) == "int8"


def test_a_variant_failing_the_agreement_bar_is_never_timed_and_the_fastest_other_serves(store, monkeypatch):
    offered: list[list[str]] = []
    monkeypatch.setattr(registry_module, "time_variants", timings({"fp32": 1.0, "int8": 0.25}, offered))
    model = load(store).models[TEST_MODEL]
    assert offered == [["fp32", "int8"]]  # int8-bad agrees too little with fp32 to be a candidate
    assert model.classifier.variant == "int8"
    described = model.describe()
    assert described["variant"] == "int8"
    choice = described["variant_choice"]
    assert choice["how"] == "measured" and choice["seconds_per_clip"] == {"fp32": 1.0, "int8": 0.25}
    assert choice["isa"] == isa_summary() and choice["min_agreement"] == MIN_AGREEMENT

    monkeypatch.setattr(registry_module, "time_variants", timings({"fp32": 0.2, "int8": 0.25}, offered))
    assert load(store).models[TEST_MODEL].classifier.variant == "fp32"  # by this machine's timings, not the card's


def test_a_pinned_variant_is_served_untimed(store, monkeypatch):
    def never(sessions):
        raise AssertionError("a pinned variant is not timed")

    monkeypatch.setattr(registry_module, "time_variants", never)
    for pinned in ("fp32", "int8", "int8-bad"):  # a pin is the operator's decision, even below the bar
        model = load(store, variant=pinned).models[TEST_MODEL]
        assert model.classifier.variant == pinned
        assert model.describe()["variant_choice"]["how"] == "pinned"


def test_without_warm_up_the_card_chooses(store, monkeypatch):
    monkeypatch.setattr(registry_module, "time_variants", timings({}, []))
    model = load(store, warmup=False).models[TEST_MODEL]
    assert model.describe()["variant_choice"] == {**model.choice.describe(), "how": "card", "seconds_per_clip": {}}
    assert model.classifier.variant in ("fp32", "int8")
