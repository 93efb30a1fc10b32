"""Attention fused into ONNX Runtime's `MultiHeadAttention` operator, by rewriting the exported graph.

The exporter decomposes `scaled_dot_product_attention` into a reshape of the fused qkv projection to
[N, L, 3, heads, head_dim], a 5-D transpose, three slices, a transposed key, two scaled MatMuls around a Softmax and
a transpose back. ONNX Runtime's transformer optimiser matches none of its attention patterns on that
(BENCHMARKS.md, "CPU serving per machine"), so the batched fp32 MatMuls and the transposes around them run as
separate kernels. This rewrite recognises exactly that decomposition and replaces it by a Split of the qkv
projection into q, k, v ([N, L, D] each) feeding `com.microsoft.MultiHeadAttention` (ONNX Runtime's CPU and CUDA
kernels), whose output is the same [N, L, D] the output projection reads. Anything that does not match exactly
(the last block's CLS-only query, say) is left as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
QKV_PERM = [2, 0, 3, 1, 4]  # [N, L, 3, heads, hd] -> [3, N, heads, L, hd]
HEADS_BACK_PERM = [0, 2, 1, 3]  # [N, heads, L, hd] -> [N, L, heads, hd]


class _Graph:
    """Producer / consumer lookups and constant values of an ONNX graph."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def made_by(self, name: str, op_type: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)


def _attribute(node, name: str):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _slice_index(g: _Graph, name: str, qkv: str, max_steps: int = 8) -> int | None:
    """Which third of the qkv tensor `name` is: walk up single-input reshapes and transposes to Squeeze(Slice(qkv))."""
    for _ in range(max_steps):
        node = g.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Squeeze":
            sliced = g.made_by(node.input[0], "Slice")
            if sliced is None or sliced.input[0] != qkv:
                return None
            starts, ends = g.constant(sliced.input[1]), g.constant(sliced.input[2])
            axes = g.constant(sliced.input[3]) if len(sliced.input) > 3 else np.array([0])
            if starts is None or ends is None or axes is None or axes.tolist() != [0]:
                return None
            if int(ends[0]) - int(starts[0]) != 1:
                return None
            return int(starts[0])
        if node.op_type not in ("Reshape", "Transpose"):
            return None
        name = node.input[0]
    return None


def _with_perm(node, perm: list[int]):
    """The Transpose node when it has this permutation, else None."""
    return node if node is not None and _attribute(node, "perm") == perm else None


def _reshape_target(g: _Graph, node, rank: int) -> np.ndarray | None:
    """The constant target shape of a Reshape node, when it has one of this rank."""
    if node is None:
        return None
    shape = g.constant(node.input[1])
    return shape if shape is not None and shape.shape == (rank,) else None


def _match(g: _Graph, softmax) -> dict | None:
    """The decomposed attention around one Softmax, or None when it is not exactly the exporter's pattern."""
    scores = g.made_by(softmax.input[0], "MatMul")
    weighted = g.only_consumer(softmax.output[0], "MatMul")
    if scores is None or weighted is None or weighted.input[0] != softmax.output[0]:
        return None
    if _attribute(softmax, "axis") not in (-1, 3):
        return None
    scaled_q, scaled_k = g.made_by(scores.input[0], "Mul"), g.made_by(scores.input[1], "Mul")
    if scaled_q is None or scaled_k is None:
        return None
    scale_q, scale_k = g.constant(scaled_q.input[1]), g.constant(scaled_k.input[1])
    if scale_q is None or scale_k is None or scale_q.size != 1 or scale_k.size != 1:
        return None
    q_sq = g.made_by(scaled_q.input[0], "Squeeze")
    q_slice = q_sq is not None and g.made_by(q_sq.input[0], "Slice")
    if not q_slice:
        return None
    packed = _with_perm(g.made_by(q_slice.input[0], "Transpose"), QKV_PERM)
    shape = packed and _reshape_target(g, g.made_by(packed.input[0], "Reshape"), rank=5)
    if shape is None or int(shape[2]) != 3:
        return None
    split_heads = g.producer[packed.input[0]]
    qkv = packed.output[0]
    if (_slice_index(g, scaled_q.input[0], qkv), _slice_index(g, scaled_k.input[0], qkv)) != (0, 1):
        return None
    if _slice_index(g, weighted.input[1], qkv) != 2:
        return None
    back = _with_perm(g.only_consumer(weighted.output[0], "Transpose"), HEADS_BACK_PERM)
    merge = back and g.only_consumer(back.output[0], "Reshape")
    merged_shape = _reshape_target(g, merge, rank=3)
    heads, head_dim = int(shape[3]), int(shape[4])
    if merged_shape is None or int(merged_shape[-1]) != heads * head_dim:
        return None
    return {
        "qkv": split_heads.input[0],  # [N, L, 3D], the qkv projection with its bias
        "out": merge.output[0],  # [N, L, D], what the output projection reads
        "merge": merge,
        "heads": heads,
        "head_dim": head_dim,
        "scale": float(scale_q.item()) * float(scale_k.item()),
    }


def _drop_dead_nodes(graph) -> int:
    """Remove nodes no graph output depends on (what the rewrite left unused); returns how many."""
    needed = {out.name for out in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(node.input)
    dropped = len(graph.node) - len(keep)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    return dropped


def fuse_attention(src: str | Path, dst: str | Path) -> tuple[Path, int]:
    """Rewrite every exactly-matching decomposed attention of `src` into `MultiHeadAttention`; writes `dst` and
    returns it with the number of attentions fused."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = _Graph(model.graph)
    matches = [m for node in list(model.graph.node) if node.op_type == "Softmax" and (m := _match(g, node))]
    new_nodes = {}
    for i, m in enumerate(matches):
        width = m["heads"] * m["head_dim"]
        sizes = f"attention_fused_{i}_split"
        model.graph.initializer.append(numpy_helper.from_array(np.array([width] * 3, dtype=np.int64), sizes))
        q, k, v = (f"attention_fused_{i}_{part}" for part in "qkv")
        split = helper.make_node("Split", [m["qkv"], sizes], [q, k, v], axis=-1, name=f"attention_fused_{i}_Split")
        attrs = {"num_heads": m["heads"]}
        if not np.isclose(m["scale"], m["head_dim"] ** -0.5, rtol=1e-6):
            attrs["scale"] = m["scale"]
        attention = helper.make_node(
            "MultiHeadAttention", [q, k, v], [m["out"]], domain=MS_DOMAIN, name=f"attention_fused_{i}", **attrs
        )
        new_nodes[id(m["merge"])] = [split, attention]
    nodes = []
    for node in model.graph.node:
        nodes.extend(new_nodes.get(id(node), [node]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    dropped = _drop_dead_nodes(model.graph)
    if matches and not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    produced = {name for node in model.graph.node for name in node.output}
    infos = [info for info in model.graph.value_info if info.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)
    log.info("fused %d attentions into MultiHeadAttention (%d nodes removed)", len(matches), dropped)
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return dst, len(matches)
