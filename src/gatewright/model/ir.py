"""The graph IR: what intake hands to every later stage.

A model becomes a ``ModelGraph``: its declared inputs and outputs, every ONNX node (for inspection),
and a split into a ``HardwarePart`` (a chain of ``Dense`` and ``Activation`` layers, float weights
with batch normalization and constant scaling already folded in) and a ``HostPart`` (an ONNX
subgraph that onnxruntime runs on the hardware part's output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Dim = int | str | None


def apply_input_affine(x: np.ndarray, scale: np.ndarray | None, offset: np.ndarray | None) -> np.ndarray:
    """Flatten to (batch, features) and apply ``x * scale + offset`` in float64 when there is an affine.

    The one definition of the host-side input transform: the float reference and the quantizer
    both call it, so they compute the same float64 values bit for bit.
    """
    value = np.asarray(x).reshape(len(x), -1)
    if scale is None or offset is None:
        return value
    return value.astype(np.float64) * scale + offset


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output exactly as the ONNX model declares it.

    ``dtype`` is a numpy dtype name for tensors ("float32", "int64", "str") or the ONNX type text for
    anything else ("seq(map(int64,tensor(float)))"); ``shape`` is None for non-tensors. A dimension is
    an int, a symbolic name, or None when the model leaves it unnamed.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        shape = data["shape"]
        return cls(data["name"], data["dtype"], None if shape is None else tuple(shape))


@dataclass(frozen=True)
class Node:
    """One ONNX node, with its index in the graph (``position``) and the part it landed in."""

    position: int
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    part: Literal["hardware", "host", "constant"]


@dataclass(frozen=True)
class Dense:
    """``y = x @ weight + bias``; weight is (n_in, n_out), float64, with every folded scale applied."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    nodes: tuple[str, ...]

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[1])

    @property
    def macs(self) -> int:
        return self.n_in * self.n_out


ActivationKind = Literal["relu", "leaky_relu", "clip"]


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: ``relu``, ``leaky_relu`` (``alpha``) or ``clip`` (``low``, ``high``)."""

    name: str
    kind: ActivationKind
    nodes: tuple[str, ...]
    alpha: float = 0.0
    low: float | None = None
    high: float | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "relu":
            return np.maximum(x, 0.0)
        if self.kind == "leaky_relu":
            return np.where(x >= 0.0, x, x * self.alpha)
        low = -np.inf if self.low is None else self.low
        high = np.inf if self.high is None else self.high
        return np.clip(x, low, high)

    def describe(self) -> str:
        if self.kind == "leaky_relu":
            return f"LeakyRelu(alpha={self.alpha:g})"
        if self.kind == "clip":
            return f"Clip({self.low}, {self.high})"
        return "Relu"


Layer = Dense | Activation


@dataclass(frozen=True)
class HardwarePart:
    """The integer-friendly prefix of the model: one float input in, one tensor out.

    ``input`` is the model input that feeds it (flattened to ``n_in`` features per sample),
    ``output`` the tensor where it ends. ``output_transposed`` is True when that tensor is laid out
    (features, batch), as some Gemm forms produce. ``input_scale`` and ``input_offset`` hold a
    per-feature affine that stood before the first layer (a StandardScaler, a normalization, a batch
    normalization): it is applied to the float input before quantization, so that the input format
    fits the scaled values rather than raw features of very different ranges.
    """

    input: TensorSpec
    output: str
    output_dtype: str
    output_transposed: bool
    layers: tuple[Layer, ...]
    nodes: tuple[str, ...]
    input_scale: np.ndarray | None = None
    input_offset: np.ndarray | None = None

    @property
    def n_in(self) -> int:
        assert self.input.shape is not None
        return math.prod(int(d) for d in self.input.shape[1:] if isinstance(d, int))

    @property
    def dense_layers(self) -> list[Dense]:
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    @property
    def n_out(self) -> int:
        dense = self.dense_layers
        return dense[-1].n_out if dense else self.n_in

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.dense_layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The float64 reference of the hardware part on (batch, n_in) inputs."""
        return self.trace(x)[-1]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Inputs as (batch, n_in) float64, with the leading affine applied: what gets quantized."""
        return apply_input_affine(np.asarray(x, dtype=np.float64), self.input_scale, self.input_offset)

    def trace(self, x: np.ndarray) -> list[np.ndarray]:
        """The float64 value after each layer, for calibration."""
        values = []
        value = self.prepare(x)
        for layer in self.layers:
            value = value @ layer.weight + layer.bias if isinstance(layer, Dense) else layer.apply(value)
            values.append(value)
        return values


@dataclass(frozen=True)
class HostPart:
    """What runs after the hardware part, as a standalone ONNX model (None when nothing does)."""

    model: bytes | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class ModelGraph:
    """A loaded, checked and partitioned model."""

    name: str
    sha256: str
    source: bytes
    opset: int
    producer: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    nodes: tuple[Node, ...]
    hardware: HardwarePart
    host: HostPart
    fixed_batch: int | None = field(default=None)
