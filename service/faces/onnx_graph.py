"""Writes small ONNX graphs (Conv, PRelu, MaxPool, MatMul...) straight to protobuf bytes for ONNX Runtime.

The `onnx` package belongs to the training extra; the service must not need it to turn the MTCNN weights (NumPy
arrays) into something ONNX Runtime runs with its fast convolutions. ONNX files are protobuf messages, and the
handful of fields used here are written by hand (field numbers from onnx.proto, wire format from the protobuf spec).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

IR_VERSION = 8
OPSET = 13
_FLOAT = 1  # TensorProto.FLOAT / AttributeProto.FLOAT
_INT, _STRING, _INTS = 2, 3, 7  # AttributeProto types


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, like protobuf
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _bytes(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _key(number, 2) + _varint(len(data)) + data


def _attribute(name: str, value) -> bytes:
    msg = _bytes(1, name)
    if isinstance(value, float):
        return msg + _key(2, 5) + struct.pack("<f", value) + _int(20, _FLOAT)
    if isinstance(value, int):
        return msg + _int(3, value) + _int(20, _INT)
    if isinstance(value, str):
        return msg + _bytes(4, value) + _int(20, _STRING)
    return msg + b"".join(_int(8, v) for v in value) + _int(20, _INTS)


def _tensor(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, _FLOAT) + _bytes(8, name) + _bytes(9, array.tobytes())


def _value_info(name: str, shape: tuple[int | str, ...]) -> bytes:
    dims = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in shape)
    tensor_type = _int(1, _FLOAT) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


@dataclass
class GraphBuilder:
    """Append nodes with `op`; `build()` returns the serialized ModelProto."""

    name: str
    nodes: list[bytes] = field(default_factory=list)
    initializers: list[bytes] = field(default_factory=list)
    _count: int = 0

    def const(self, array: np.ndarray) -> str:
        self._count += 1
        name = f"c{self._count}"
        self.initializers.append(_tensor(name, array))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        self._count += 1
        outs = [f"{op_type.lower()}{self._count}_{i}" for i in range(outputs)]
        msg = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outs)
        msg += _bytes(3, f"n{self._count}") + _bytes(4, op_type)
        msg += b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())
        self.nodes.append(msg)
        return outs

    def build(self, inputs: dict[str, tuple], outputs: dict[str, str]) -> bytes:
        """inputs: name -> shape (ints or symbolic names); outputs: graph output name -> internal tensor name."""
        renames = b""
        for public, internal in outputs.items():
            node = _bytes(1, internal) + _bytes(2, public) + _bytes(3, f"out_{public}") + _bytes(4, "Identity")
            renames += _bytes(1, node)
        graph = b"".join(_bytes(1, n) for n in self.nodes) + renames + _bytes(2, self.name)
        graph += b"".join(_bytes(5, t) for t in self.initializers)
        graph += b"".join(_bytes(11, _value_info(n, s)) for n, s in inputs.items())
        graph += b"".join(_bytes(12, _bytes(1, n)) for n in outputs)
        opset = _bytes(1, "") + _int(2, OPSET)
        return _int(1, IR_VERSION) + _bytes(2, "s2d") + _bytes(7, graph) + _bytes(8, opset)
