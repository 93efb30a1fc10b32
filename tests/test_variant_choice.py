"""The service chooses its engine and variant per machine (issues 19, 28): at warm-up every candidate (ONNX Runtime's
CPU variants whose card agreement meets the bar, OpenVINO at its precision) runs the same warm-up clips, those that
differ from ONNX Runtime fp32 beyond the agreement bar are refused, and the fastest other serves; a setting pins one.
The engines run for real (their answers decide the agreement); timings are given to the decision, never measured
speed."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from s2d.card import load_card
from s2d.machine import isa_summary
from s2d.service import inference, openvino_engine
from s2d.service import registry as registry_module
from s2d.service.inference import MAX_TRIAL_PROB_DIFF, ModelOutput, fastest_variant, trial_candidates
from s2d.service.openvino_engine import OpenVinoClassifier, best_precision, native_bf16, warmup_precisions
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
    """A stand-in for trial_candidates: the candidates run the warm-up clips for real (their probabilities decide the
    agreement), and take the given seconds per clip; records which candidates were offered."""

    def given(classifiers):
        offered.append(sorted(classifiers))
        return {name: replace(trial, seconds_per_clip=seconds[name]) for name, trial in real_trial(classifiers).items()}

    return given


real_trial = trial_candidates


def load(store: Path, tmp_path: Path | None = None, **settings) -> ModelRegistry:
    cache = {"openvino_cache_dir": tmp_path / "openvino"} if tmp_path else {}
    registry = ModelRegistry(Settings(model_store=store, models=[TEST_MODEL], **cache, **settings))
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

    def run(self, frames: np.ndarray) -> ModelOutput:
        self.calls += 1
        time.sleep(self.delay_s)
        probs = np.full((len(frames), 2), 0.5, np.float32)
        return ModelOutput(probs, probs)


def test_trial_candidates_times_every_candidate_and_finds_the_slowed_one():
    fast, slowed = _Fake(0.0), _Fake(0.05)  # fault injection: one candidate 50 ms slower per call
    trials = trial_candidates({"fp32": slowed, "int8": fast}, rounds=3)
    assert fast.calls == slowed.calls == 4  # one untimed call, then 3 timed, interleaved
    assert trials["fp32"].seconds_per_clip >= 0.05
    assert fastest_variant({k: t.seconds_per_clip for k, t in trials.items()}) == "int8"
    assert trials["int8"].probs.shape == (4, 2)  # every clip's answer, the untimed one's too


ORT_FP32, ORT_INT8 = "onnxruntime/fp32", "onnxruntime/int8"


def test_a_variant_failing_the_agreement_bar_is_never_timed_and_the_fastest_other_serves(store, monkeypatch):
    offered: list[list[str]] = []
    monkeypatch.setattr(registry_module, "trial_candidates", timings({ORT_FP32: 1.0, ORT_INT8: 0.25}, offered))
    model = load(store, engine="onnxruntime").models[TEST_MODEL]
    assert offered == [[ORT_FP32, ORT_INT8]]  # int8-bad agrees too little with fp32 (its card) to be a candidate
    assert model.classifier.variant == "int8"
    described = model.describe()
    assert described["variant"] == "int8"
    choice = described["variant_choice"]
    assert choice["how"] == "measured" and choice["seconds_per_clip"] == {ORT_FP32: 1.0, ORT_INT8: 0.25}
    assert choice["candidate"] == ORT_INT8 and choice["engine"] == "onnxruntime" and choice["refused"] == {}
    assert choice["agreement"][ORT_INT8] == {"top1": 1.0, "max_abs_prob_diff": 0.0, "clips": 4}  # the same graph
    assert choice["isa"] == isa_summary() and choice["min_agreement"] == MIN_AGREEMENT

    monkeypatch.setattr(registry_module, "trial_candidates", timings({ORT_FP32: 0.2, ORT_INT8: 0.25}, offered))
    model = load(store, engine="onnxruntime").models[TEST_MODEL]
    assert model.classifier.variant == "fp32"  # by this machine's timings, not the card's


def never(classifiers):
    raise AssertionError("a pin is served untried")


def test_a_pinned_variant_is_served_untimed(store, monkeypatch):
    monkeypatch.setattr(registry_module, "trial_candidates", never)
    for pinned in ("fp32", "int8", "int8-bad"):  # a pin is the operator's decision, even below the bar
        model = load(store, variant=pinned).models[TEST_MODEL]  # engine auto: S2D_VARIANT pins ONNX Runtime's
        assert model.classifier.variant == pinned and model.classifier.provider == "CPUExecutionProvider"
        assert model.describe()["variant_choice"]["how"] == "pinned"


def test_without_warm_up_the_card_chooses(store, monkeypatch):
    monkeypatch.setattr(registry_module, "trial_candidates", never)
    for settings in ({"warmup": False}, {"engine_trial": False}):  # the trial follows warm-up, unless set itself
        model = load(store, **settings).models[TEST_MODEL]
        choice = model.describe()["variant_choice"]
        assert choice == {**model.choice.describe(), "how": "card", "seconds_per_clip": {}, "engine": "onnxruntime"}
        assert model.classifier.variant in ("fp32", "int8") and "the engine trial is off" in choice["why"]


def test_the_engine_trial_runs_without_warm_up_where_asked(store, monkeypatch, tmp_path):
    """`s2d analyze`'s workers: the engines timed at start, no batch size warmed (settings.engine_trial)."""
    offered: list[list[str]] = []
    given = {ORT_FP32: 1.0, ORT_INT8: 0.5, **{f"openvino/{p}": 0.9 for p in warmup_precisions()}}
    monkeypatch.setattr(registry_module, "trial_candidates", timings(given, offered))
    model = load(store, tmp_path, warmup=False, engine_trial=True).models[TEST_MODEL]
    assert len(offered) == 1 and model.choice.how == "measured" and model.choice.candidate == ORT_INT8


# ---------------------------------------------------------------------------------------------------------------------
# OpenVINO among the candidates (engine auto, the default)

OPENVINO = f"openvino/{best_precision()[0]}"  # bf16 on a CPU with AMX, else fp32
# OpenVINO's other warm-up candidate (bf16 where the CPU has AVX-512 BF16 but no AMX), timed slower than OPENVINO here
OTHER_OPENVINO = {f"openvino/{p}": 0.9 for p in list(warmup_precisions())[1:]}


def test_openvino_is_chosen_where_it_is_faster_and_agrees(store, monkeypatch, tmp_path):
    offered: list[list[str]] = []
    given = {ORT_FP32: 1.0, ORT_INT8: 0.5, OPENVINO: 0.2, **OTHER_OPENVINO}
    monkeypatch.setattr(registry_module, "trial_candidates", timings(given, offered))
    model = load(store, tmp_path).models[TEST_MODEL]
    assert offered == [sorted([ORT_FP32, ORT_INT8, OPENVINO, *OTHER_OPENVINO])]
    assert isinstance(model.classifier, OpenVinoClassifier) and model.classifier.provider == "openvino-cpu"
    described = model.describe()
    choice = described["variant_choice"]
    assert choice["candidate"] == OPENVINO and choice["engine"] == "openvino" and choice["how"] == "measured"
    assert choice["refused"] == {} and choice["seconds_per_clip"] == given
    assert choice["agreement"][OPENVINO]["top1"] == 1.0
    assert choice["agreement"][OPENVINO]["max_abs_prob_diff"] <= MAX_TRIAL_PROB_DIFF
    assert "5.00x the reference onnxruntime/fp32" in choice["why"]
    assert described["precision"] == choice["precision"] == best_precision()[0]
    assert described["engine"]["name"] == "openvino" and described["variant"] == "fp32"  # the file it reads

    monkeypatch.setattr(registry_module, "trial_candidates", timings({**given, OPENVINO: 0.6}, offered))
    assert load(store, tmp_path).models[TEST_MODEL].choice.candidate == ORT_INT8  # slower than int8 here: not chosen


def _swapped_classes(original):
    """Fault injection: OpenVINO's answers with the first two classes swapped, a graph that computes the wrong
    thing, as fast as ever."""

    def infer(self, frames, seconds_left):
        out = original(self, frames, seconds_left)
        order = [1, 0, *range(2, out.probs.shape[1])]
        return ModelOutput(out.logits[:, order], out.probs[:, order])

    return infer


def test_openvino_failing_the_agreement_bar_is_refused_however_fast(store, monkeypatch, tmp_path):
    monkeypatch.setattr(OpenVinoClassifier, "_infer", _swapped_classes(OpenVinoClassifier._infer))
    given = {ORT_FP32: 1.0, ORT_INT8: 0.5, OPENVINO: 0.01, **OTHER_OPENVINO}
    monkeypatch.setattr(registry_module, "trial_candidates", timings(given, []))
    model = load(store, tmp_path).models[TEST_MODEL]
    choice = model.describe()["variant_choice"]
    assert choice["candidate"] == ORT_INT8 and model.classifier.provider == "CPUExecutionProvider"
    assert list(choice["refused"]) == [OPENVINO, *OTHER_OPENVINO]
    assert "on the warm-up clips" in choice["refused"][OPENVINO]
    assert f"refused {OPENVINO}" in model.choice.summary()  # the start-up log says so


def test_an_openvino_that_cannot_compile_the_graph_leaves_onnxruntime_serving(store, monkeypatch, tmp_path):
    def unsupported(*args, **kwargs):  # fault injection: a graph OpenVINO's ONNX reader does not take
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(openvino_engine, "compile_for_cpu", unsupported)
    offered: list[list[str]] = []
    monkeypatch.setattr(registry_module, "trial_candidates", timings({ORT_FP32: 1.0, ORT_INT8: 0.5}, offered))
    model = load(store, tmp_path).models[TEST_MODEL]
    assert offered == [[ORT_FP32, ORT_INT8]] and model.choice.candidate == ORT_INT8
    assert model.choice.refused == {"openvino": "failed to compile: unsupported operator"}


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no bf16 unit: OpenVINO runs fp32 alone here")
def test_where_bf16_has_no_amx_behind_it_both_openvino_precisions_are_timed_and_the_faster_serves(
    store, monkeypatch, tmp_path
):
    both = openvino_engine.warmup_precisions("avx2 fma avx512f avx512_vnni avx512_bf16", native=True)
    monkeypatch.setattr(openvino_engine, "warmup_precisions", lambda: both)  # this CPU stands in for a Zen 4
    for fast, slow in (("fp32", "bf16"), ("bf16", "fp32")):
        offered: list[list[str]] = []
        given = {ORT_FP32: 1.0, ORT_INT8: 0.5, f"openvino/{fast}": 0.2, f"openvino/{slow}": 0.4}
        monkeypatch.setattr(registry_module, "trial_candidates", timings(given, offered))
        model = load(store, tmp_path).models[TEST_MODEL]
        assert offered == [sorted([ORT_FP32, ORT_INT8, "openvino/bf16", "openvino/fp32"])]
        assert model.choice.candidate == f"openvino/{fast}" and model.classifier.precision == fast
        assert model.describe()["engine"]["precision_reason"].startswith(f"{fast}: bf16 instructions")


def test_a_probability_drift_beyond_the_bar_is_refused_though_top1_agrees():
    reference = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    drifted = reference + np.array([[-0.1, 0.05, 0.05], [0.0, 0.0, 0.0]], np.float32)
    figures = inference.agreement(reference, drifted)
    assert figures["top1"] == 1.0 and inference.refusal(figures).startswith("max |dprob| 0.100")
    assert inference.refusal(inference.agreement(reference, reference)) is None


def test_a_pinned_engine_wins(store, monkeypatch, tmp_path):
    monkeypatch.setattr(registry_module, "trial_candidates", never)
    model = load(store, tmp_path, engine="openvino").models[TEST_MODEL]
    assert isinstance(model.classifier, OpenVinoClassifier)
    choice = model.describe()["variant_choice"]
    assert choice["how"] == "pinned" and choice["candidate"] == OPENVINO and "S2D_ENGINE=openvino" in choice["why"]

    model = load(store, tmp_path, openvino_precision="fp32").models[TEST_MODEL]  # engine auto: pins OpenVINO fp32
    assert model.choice.candidate == "openvino/fp32" and model.describe()["precision"] == "fp32"
    assert model.choice.why.startswith("S2D_OPENVINO_PRECISION pins OpenVINO; fp32")

    monkeypatch.setattr(registry_module, "trial_candidates", timings({ORT_FP32: 0.1, ORT_INT8: 0.1}, []))
    model = load(store, tmp_path, engine="onnxruntime").models[TEST_MODEL]  # OpenVINO is not even tried
    assert model.choice.candidate == ORT_FP32 and list(model.choice.seconds_per_clip) == [ORT_FP32, ORT_INT8]


def test_contradicting_pins_are_refused_at_start_up(store):
    with pytest.raises(ValueError, match="pin engine openvino"):
        Settings(engine="onnxruntime", openvino_precision="bf16")
    with pytest.raises(ValueError, match="pin one"):
        Settings(variant="int8", openvino_precision="fp32")
    with pytest.raises(ValueError, match="reads the fp32 ONNX file"):
        Settings(engine="openvino", variant="int8")
