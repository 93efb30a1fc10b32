"""Model store: one folder per model, listed and fetched by name, written atomically, variant chosen per provider."""

from __future__ import annotations

import pytest

from s2d.card import CardError, parse_card
from s2d.store import ModelStore, default_store_dir
from tests.test_card import card_dict

CPU, CUDA = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]


def add_model(store: ModelStore, name: str, **changes) -> None:
    card = parse_card(card_dict(name=name, **changes))
    with store.staging(name) as folder:
        card.save(folder / "card.json")
        for spec in card.variants.values():
            (folder / spec.file).write_bytes(b"onnx")


def test_default_store_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("S2D_MODEL_STORE", str(tmp_path / "store"))
    assert default_store_dir() == tmp_path / "store"
    monkeypatch.delenv("S2D_MODEL_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_dir() == tmp_path / "cache" / "s2d" / "models"
    assert ModelStore().root == tmp_path / "cache" / "s2d" / "models"


def test_list_get_and_default(tmp_path):
    store = ModelStore(tmp_path)
    assert store.list() == []
    with pytest.raises(KeyError, match="holds no model"):
        store.default()
    add_model(store, "demo_tiny", demo=True)
    assert store.default().name == "demo_tiny"
    add_model(store, "s2d_dfew", demo=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "card.json").write_text("{}")
    assert store.names() == ["demo_tiny", "s2d_dfew"]  # the broken folder is skipped, not fatal
    assert store.default().name == "s2d_dfew"  # real weights win over the demo
    model = store.get("demo_tiny")
    assert model.demo and model.variant_path("int8") == tmp_path / "demo_tiny" / "model.int8.onnx"
    with pytest.raises(KeyError, match=r"demo_tiny, s2d_dfew"):
        store.get("nope")
    with pytest.raises(KeyError, match="fp16"):
        model.variant_path("fp16")
    with pytest.raises(CardError, match="broken"):
        store.get("broken")


def test_the_default_is_s2d_then_the_frame_baseline_then_the_demo(tmp_path):
    store = ModelStore(tmp_path)
    add_model(store, "a_demo", demo=True)
    add_model(store, "fer-baseline", demo=False, family="frame-baseline")
    assert store.default().name == "fer-baseline"  # a real per-frame model beats the demo whatever the names
    add_model(store, "z_s2d", demo=False)  # a card from before the family field: an S2D export
    assert store.get("z_s2d").family == "s2d-video"
    assert store.default().name == "z_s2d"


def test_staging_replaces_atomically_and_refuses_incomplete_models(tmp_path):
    store = ModelStore(tmp_path)
    add_model(store, "m", version="1")
    add_model(store, "m", version="2")
    assert store.get("m").card.version == "2"
    with pytest.raises(CardError, match="not written"), store.staging("m") as folder:
        parse_card(card_dict(name="m", version="3")).save(folder / "card.json")  # no ONNX files
    with pytest.raises(RuntimeError), store.staging("m") as folder:
        raise RuntimeError("export crashed")
    assert store.get("m").card.version == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_choose_variant(tmp_path):
    store = ModelStore(tmp_path)
    card = card_dict()
    card["variants"]["int8"]["clips_per_s"] = 9.0
    card["variants"]["fp32"]["clips_per_s"] = 3.0
    card["variants"]["fp16"] = {
        "file": "model.fp16.onnx",
        "precision": "fp16",
        "providers": ["CUDAExecutionProvider"],
        "size_bytes": 5,
        "top1_agreement": 0.995,
    }
    add_model(store, "m", variants=card["variants"])
    model = store.get("m")
    assert model.choose_variant(CUDA) == "fp16"
    assert model.choose_variant(CPU) == "int8"
    card["variants"]["int8"]["top1_agreement"] = 0.9  # too far from fp32: never chosen
    add_model(store, "m", variants=card["variants"])
    assert store.get("m").choose_variant(CPU) == "fp32"
    assert store.get("m").choose_variant([]) == "fp32"


def test_staging_never_replaces_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a model folder"):
        add_model(ModelStore(tmp_path), "notes")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"
