"""A Keras functional model (HDF5 file) rebuilt as a PyTorch module, without TensorFlow.

A Keras `.hdf5` file holds the architecture as JSON (`model_config`, the functional graph: layers in topological
order, each with the layers it reads from) and the weights per layer (`model_weights/<layer>/<layer>/kernel:0`, ...).
`KerasNet` builds one torch module per layer from that JSON and runs them in the file's order, so the graph is read,
not re-typed. Layouts: Keras is channels-last with kernels `[kh, kw, in, out]`; here tensors are NCHW and kernels are
transposed once at load time. Padding `same` follows TensorFlow: the odd pixel of padding goes after (bottom/right).

Only the layer types the served baseline needs are known (`SUPPORTED_LAYERS`); any other is a clear error.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_LAYERS = (
    "InputLayer",
    "Conv2D",
    "SeparableConv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "Add",
    "GlobalAveragePooling2D",
)


class KerasModelError(ValueError):
    """A Keras file this reader cannot rebuild faithfully; the message names the layer and what is missing."""


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's `same`: output ceil(size / stride); the odd pixel of padding goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float) -> torch.Tensor:
    top, bottom = _same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = _same_padding(x.shape[-1], kernel[1], stride[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _activation(name: str) -> nn.Module:
    table = {"linear": nn.Identity(), "relu": nn.ReLU(), "softmax": nn.Softmax(dim=1)}
    if name not in table:
        raise KerasModelError(f"activation {name!r} is not supported (known: {sorted(table)})")
    return table[name]


class _Conv(nn.Module):
    """Conv2D or SeparableConv2D (depth-wise then point-wise), Keras padding, then the layer's activation."""

    def __init__(self, config: dict[str, Any], weights: dict[str, np.ndarray], separable: bool):
        super().__init__()
        self.kernel = tuple(config["kernel_size"])
        self.stride = tuple(config["strides"])
        self.same = config["padding"] == "same"
        if config["padding"] not in ("same", "valid") or tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
            raise KerasModelError(f"layer {config['name']!r}: only 'same'/'valid' padding without dilation")
        if separable:
            depthwise = torch.from_numpy(weights["depthwise_kernel"])  # [kh, kw, in, multiplier]
            kh, kw, cin, mult = depthwise.shape
            self.depthwise = nn.Conv2d(cin, cin * mult, self.kernel, self.stride, groups=cin, bias=False)
            self.depthwise.weight.data = depthwise.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).contiguous()
            pointwise = torch.from_numpy(weights["pointwise_kernel"])  # [1, 1, in * multiplier, out]
            self.conv = nn.Conv2d(cin * mult, pointwise.shape[-1], 1, bias="bias" in weights)
            self.conv.weight.data = pointwise.permute(3, 2, 0, 1).contiguous()
        else:
            self.depthwise = None
            kernel = torch.from_numpy(weights["kernel"])  # [kh, kw, in, out]
            self.conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], self.kernel, self.stride, bias="bias" in weights)
            self.conv.weight.data = kernel.permute(3, 2, 0, 1).contiguous()
        if "bias" in weights:
            self.conv.bias.data = torch.from_numpy(weights["bias"])
        self.activation = _activation(config.get("activation", "linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _pad_same(x, self.kernel, self.stride, 0.0)
        if self.depthwise is not None:  # Keras applies the stride in the depth-wise step
            x = self.depthwise(x)
        return self.activation(self.conv(x))


def _batch_norm(config: dict[str, Any], weights: dict[str, np.ndarray]) -> nn.BatchNorm2d:
    if config.get("axis", -1) not in (-1, 3, [3], [-1]):
        raise KerasModelError(f"layer {config['name']!r}: batch normalisation over axis {config['axis']}")
    mean = torch.from_numpy(weights["moving_mean"])
    norm = nn.BatchNorm2d(len(mean), eps=config["epsilon"]).eval()
    norm.running_mean.data, norm.running_var.data = mean, torch.from_numpy(weights["moving_variance"])
    if "gamma" in weights:
        norm.weight.data = torch.from_numpy(weights["gamma"])
    if "beta" in weights:
        norm.bias.data = torch.from_numpy(weights["beta"])
    return norm


class _MaxPool(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.kernel, self.stride = tuple(config["pool_size"]), tuple(config["strides"] or config["pool_size"])
        self.same = config["padding"] == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.same:
            return F.max_pool2d(x, self.kernel, self.stride)
        dims = list(zip(x.shape[-2:], self.kernel, self.stride, strict=True))
        pads = [_same_padding(n, k, s) for n, k, s in dims]
        if all(_pool_can_pad(*pad, k, s) for pad, (_, k, s) in zip(pads, dims, strict=True)):
            # The pooling's own padding (and ceil_mode for TensorFlow's odd pixel after): the same windows as an
            # explicit -inf pad, without a Pad in the exported graph.
            ceil = any(after > before for before, after in pads)
            return F.max_pool2d(x, self.kernel, self.stride, padding=[b for b, _ in pads], ceil_mode=ceil)
        return F.max_pool2d(_pad_same(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


def _pool_can_pad(before: int, after: int, kernel: int, stride: int) -> bool:
    """Whether max_pool2d(padding=before, ceil_mode) gives TensorFlow's `same` windows: symmetric padding, or one
    pixel more after with stride >= 2 (ceil_mode then adds exactly that last window); torch allows padding <= k/2."""
    return before <= kernel // 2 and (after == before or (after == before + 1 and stride >= 2))


class _GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _build_layer(kind: str, config: dict[str, Any], weights: dict[str, np.ndarray]) -> nn.Module | None:
    if kind in ("Conv2D", "SeparableConv2D"):
        return _Conv(config, weights, separable=kind == "SeparableConv2D")
    if kind == "BatchNormalization":
        return _batch_norm(config, weights)
    if kind == "Activation":
        return _activation(config["activation"])
    if kind == "MaxPooling2D":
        return _MaxPool(config)
    if kind == "GlobalAveragePooling2D":
        return _GlobalAveragePool()
    return None  # InputLayer, Add: no module


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise KerasModelError(f"layer {layer['name']!r} is shared between several calls; not supported")
    return [entry[0] for entry in nodes[0]] if nodes else []


class KerasNet(nn.Module):
    """A Keras functional graph in torch. Input NCHW float; output the last layer's input when that layer is a
    softmax (the scores, `ends_in_softmax` says so), else the last layer's output."""

    def __init__(self, model_config: dict[str, Any], weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        if model_config.get("class_name") not in ("Model", "Functional"):
            raise KerasModelError(f"expected a functional Keras model, got {model_config.get('class_name')!r}")
        config = model_config["config"]
        self.order: list[tuple[str, str, list[str]]] = []  # (name, kind, inputs) in topological order
        self.layers = nn.ModuleDict()
        for layer in config["layers"]:
            kind, name = layer["class_name"], layer["config"]["name"]
            if kind not in SUPPORTED_LAYERS:
                raise KerasModelError(f"layer {name!r} of type {kind} is not supported (known: {SUPPORTED_LAYERS})")
            module = _build_layer(kind, layer["config"], weights.get(name, {}))
            if module is not None:
                self.layers[name] = module
            self.order.append((name, kind, _inbound(layer)))
        (self.input_name,) = [entry[0] for entry in config["input_layers"]]
        (output_name,) = [entry[0] for entry in config["output_layers"]]
        last = next(layer for layer in config["layers"] if layer["config"]["name"] == output_name)
        self.ends_in_softmax = last["class_name"] == "Activation" and last["config"]["activation"] == "softmax"
        self.output_name = _inbound(last)[0] if self.ends_in_softmax else output_name
        self.input_shape = tuple(config["layers"][0]["config"]["batch_input_shape"][1:])  # (H, W, C)
        height, width, channels = self.input_shape
        with torch.no_grad():
            self.num_classes = self(torch.zeros(1, channels, height, width)).shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        for name, kind, inputs in self.order:
            if kind == "InputLayer":
                values[name] = x
            elif kind == "Add":
                values[name] = functools.reduce(operator.add, (values[i] for i in inputs))  # Adds, not stack + sum
            else:
                values[name] = self.layers[name](values[inputs[0]])
            if name == self.output_name:
                return values[name]
        raise KerasModelError(f"output layer {self.output_name!r} never computed")


def read_keras_h5(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """(model_config, weights by layer then by short name, file attributes such as keras_version) of a Keras HDF5
    model file."""
    import h5py

    with h5py.File(path, "r") as handle:
        attrs = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in handle.attrs.items()}
        if "model_config" not in attrs:
            raise KerasModelError(f"{path} holds no model_config: not a whole Keras model (weights only?)")
        group = handle.get("model_weights", handle)
        weights: dict[str, dict[str, np.ndarray]] = {}
        for layer in group.attrs.get("layer_names", []):
            layer = layer.decode() if isinstance(layer, bytes) else layer
            entries = {}
            for weight_name in group[layer].attrs.get("weight_names", []):
                weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                short = weight_name.rsplit("/", 1)[-1].split(":")[0]
                entries[short] = np.asarray(group[layer][weight_name], dtype=np.float32)
            weights[layer] = entries
    return json.loads(attrs.pop("model_config")), weights, attrs


def load_keras_h5(path: str | Path) -> KerasNet:
    """The whole model of a Keras HDF5 file as a torch module in eval mode."""
    model_config, weights, _ = read_keras_h5(path)
    return KerasNet(model_config, weights).eval()
