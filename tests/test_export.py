"""ONNX export: uint8 face clips in, the same logits as PyTorch out, any batch size; the card describes it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from s2d.card import load_card
from s2d.models import create_model
from s2d.models.checkpoint import save_checkpoint
from s2d.training.export import (
    INPUT_NAME,
    UInt8ClipClassifier,
    agreement,
    convert_fp16,
    export_onnx,
    onnx_parity,
    onnx_session,
    quantize_int8,
    run_onnx,
    synthetic_clips,
    torch_logits,
)
from tests.helpers import randomize_


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=2)).eval()
    out = tmp_path_factory.mktemp("export")
    return model, export_onnx(model, out / "model.onnx")


def test_onnx_runtime_matches_pytorch_fp32(tiny):
    model, path = tiny
    parity = onnx_parity(model, path, batch=2)
    assert parity["max_abs_logit_diff"] <= 1e-4
    assert parity["top1_agreement"] == 1.0


def test_batch_axis_is_dynamic_and_outputs_are_named(tiny):
    model, path = tiny
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probs", "features"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for batch in (1, 3):
        frames = np.random.default_rng(batch).integers(0, 256, (batch, 2, 224, 224, 3), dtype=np.uint8)
        logits, probs, features = session.run(None, {INPUT_NAME: frames})
        assert logits.shape == (batch, 7) and features.shape == (batch, 192)
        np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
        with torch.no_grad():
            expected = UInt8ClipClassifier(model)(torch.from_numpy(frames))[0].numpy()
        assert np.abs(logits - expected).max() <= 1e-4


def test_the_uint8_wrapper_normalises_like_training():
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=1)).eval()
    frames = torch.randint(0, 256, (1, 2, 224, 224, 3), dtype=torch.uint8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    clip = ((frames.float() / 255 - mean) / std).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(UInt8ClipClassifier(model)(frames)[0], model(clip)[0], atol=1e-5, rtol=1e-5)


def test_s2d_export_writes_model_variants_and_card_and_models_list_shows_it(tmp_path):
    model = randomize_(create_model("s2d_tiny", num_frames=2, depth=1))
    checkpoint = save_checkpoint(model, tmp_path / "best.safetensors", {"classes": list("abcdefg")})
    export = [
        "export",
        str(checkpoint),
        "-o",
        str(tmp_path / "store" / "tiny"),
        "--variants",
        "fp32,fp16,int8",
        "--eval-clips",
        "4",
    ]
    result = subprocess.run([sys.executable, "-m", "s2d", *export], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    raw = json.loads((tmp_path / "store" / "tiny" / "card.json").read_text())
    assert raw["classes"] == list("abcdefg") and raw["num_frames"] == 2 and raw["window_seconds"] == 2.0
    assert raw["input"]["layout"] == "BTHWC" and raw["input"]["dtype"] == "uint8"
    card = load_card(tmp_path / "store" / "tiny" / "card.json")  # the schema the service validates against
    assert card.source_checkpoint.sha256 and card.parity["onnxruntime_cpu_fp32"]["max_abs_logit_diff"] <= 1e-4
    assert set(card.variants) == {"fp32", "fp16", "int8"}
    for name, spec in card.variants.items():
        assert (tmp_path / "store" / "tiny" / spec.file).stat().st_size == spec.size_bytes > 1000
        assert spec.agreement_clips == 4 and spec.top1_agreement is not None and spec.max_abs_logit_diff is not None
        assert (spec.clips_per_s is None) == (name == "fp16")  # fp16 is for CUDA: not timed on the CPU
    assert card.variants["fp32"].max_abs_logit_diff <= 1e-4 and card.variants["fp32"].top1_agreement == 1.0
    listing = subprocess.run(
        [sys.executable, "-m", "s2d", "models", "list", "--store", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0 and "tiny" in listing.stdout and "a, b, c, d, e, f, g" in listing.stdout
    assert "fp16 (model.fp16.onnx)" in listing.stdout and "[default]" in listing.stdout


def test_fp16_variant_keeps_uint8_in_and_fp32_out(tiny, tmp_path):
    import onnx

    model, path = tiny
    half = convert_fp16(path, tmp_path / "model.fp16.onnx")
    graph = onnx.load(str(half)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in graph.output)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    clips = synthetic_clips(4, 2, seed=5)
    figures = agreement(torch_logits(model, clips), run_onnx(onnx_session(half), clips))
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_logit_diff"] < 0.05


def test_int8_variant_quantises_matmuls(tiny, tmp_path):
    import onnx

    model, path = tiny
    clips = synthetic_clips(4, 2, seed=6)
    for method in ("dynamic", "static"):
        q = quantize_int8(path, tmp_path / f"model.{method}.onnx", clips[:2], method=method)
        ops = {n.op_type for n in onnx.load(str(q)).graph.node}
        assert ("MatMulInteger" in ops) if method == "dynamic" else ("QuantizeLinear" in ops)
        figures = agreement(torch_logits(model, clips), run_onnx(onnx_session(q), clips))
        assert figures["max_abs_logit_diff"] < 1.0 and figures["agreement_clips"] == 4


def test_int8_weight_options_change_the_quantised_weights(tiny, tmp_path):
    import onnx
    from onnx import numpy_helper

    model, path = tiny
    clips = synthetic_clips(2, 2, seed=6)
    scales = {}
    for per_channel, reduce_range in ((False, False), (True, True)):
        q = quantize_int8(path, tmp_path / f"q{per_channel}.onnx", per_channel=per_channel, reduce_range=reduce_range)
        graph = onnx.load(str(q)).graph
        weights = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_quantized")]
        scales[per_channel] = max(np.asarray(numpy_helper.to_array(t)).size for t in graph.initializer
                                  if t.name.endswith("_scale"))  # fmt: skip
        if reduce_range:  # 7-bit weights: no saturation in AVX2's u8 x s8 pair sums
            assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights if w.dtype == np.int8) <= 64
        figures = agreement(torch_logits(model, clips), run_onnx(onnx_session(q), clips))
        assert figures["max_abs_logit_diff"] < 1.0
    assert scales[False] == 1 and scales[True] > 1  # per-channel: one scale per output column


def test_attention_fusion_rewrites_every_full_attention_exactly(tiny, tmp_path):
    import onnx

    from s2d.training.export.fusion import fuse_attention

    model, path = tiny
    fused, count = fuse_attention(path, tmp_path / "model.mha.onnx")
    # depth 2: both TMAs and the first ViT block; the last block's CLS-only query is another pattern, left as it is
    assert count == 3
    graph = onnx.load(str(fused)).graph
    assert sum(n.op_type == "MultiHeadAttention" for n in graph.node) == 3
    softmaxes = [sum(n.op_type == "Softmax" for n in g.node) for g in (onnx.load(str(path)).graph, graph)]
    assert softmaxes[1] == softmaxes[0] - 3
    clips = synthetic_clips(3, 2, seed=7)
    reference = torch_logits(model, clips)
    figures = agreement(reference, run_onnx(onnx_session(fused), clips))
    assert figures["max_abs_logit_diff"] <= 1e-4 and figures["top1_agreement"] == 1.0
    # int8 starts from the fused graph as from the plain one: the projections are quantised, attention is not
    q = quantize_int8(fused, tmp_path / "model.mha.int8.onnx")
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert "MatMulInteger" in ops and ops.count("MultiHeadAttention") == 3
    assert agreement(reference, run_onnx(onnx_session(q), clips))["max_abs_logit_diff"] < 1.0


def test_attention_fusion_leaves_a_graph_without_the_pattern_alone(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from s2d.training.export.fusion import fuse_attention

    # softmax(x @ x^T) @ x with no qkv projection: not the exporter's attention
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["y"]),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8]) for n in ("x", "y")]
    src = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "plain", io[:1], io[1:])), str(src))
    fused, count = fuse_attention(src, tmp_path / "plain.mha.onnx")
    assert count == 0 and [n.op_type for n in onnx.load(str(fused)).graph.node] == [n.op_type for n in nodes]


@pytest.mark.slow
def test_full_size_base_model_exports_with_parity(tmp_path):
    model = randomize_(create_model("s2d_base")).eval()
    parity = onnx_parity(model, export_onnx(model, tmp_path / "model.onnx"), batch=1)
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
