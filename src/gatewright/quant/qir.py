"""The quantized IR: the hardware part as integers and fixed-point formats.

This is what the quantize step hands to the hardware generator and to the emulator. Its meaning,
layer by layer (RND and SAT as defined in ``gatewright.quant.fixed``):

``QDense``
    ``acc = SAT_acc(sum_k x[k] * weight[k, j] + (bias[j] << (acc.frac - bias.frac)))``, exact products
    (``acc.frac == input.frac + weight.frac``), then ``y = SAT_out(RND_out(acc))``.
``QActivation`` (works in its input's format and keeps it)
    relu: ``max(y, 0)``; clip: ``min(max(y, low), high)`` with the bounds quantized into the format;
    leaky_relu: ``y`` when ``y >= 0``, else ``SAT(RND(y * alpha))`` where ``alpha`` has
    ``ALPHA_FRAC`` fraction bits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.errors import BundleError
from gatewright.model.ir import apply_input_affine
from gatewright.quant.fixed import FixedFormat

ALPHA_FRAC = 16  # fraction bits of a LeakyRelu slope
SCHEMA = "gatewright.quantized/1"


@dataclass(frozen=True)
class QDense:
    name: str
    weight: np.ndarray  # int64 (n_in, n_out)
    bias: np.ndarray  # int64 (n_out,)
    input: FixedFormat
    weight_format: FixedFormat
    bias_format: FixedFormat
    accumulator: FixedFormat
    output: FixedFormat

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[1])

    def accumulator_bound(self) -> int:
        """The largest |sum| any input in the input format can produce (products and bias exact)."""
        return sum_bound(self.weight, self.bias, self.input, self.accumulator.frac - self.bias_format.frac)

    def formats(self) -> dict[str, FixedFormat]:
        return {
            "input": self.input,
            "weight": self.weight_format,
            "bias": self.bias_format,
            "accumulator": self.accumulator,
            "activation": self.output,
        }


def sum_bound(weight: np.ndarray, bias: np.ndarray, input_format: FixedFormat, bias_shift: int) -> int:
    """max_j sum_k |x_k| |w_kj| + |b_j| << bias_shift, with every |x_k| at its largest, 2^(B-1)."""
    column = np.abs(weight).astype(object).sum(axis=0)
    shifted = np.abs(bias).astype(object) << bias_shift
    return int(max((-input_format.min_int * column + shifted).tolist(), default=0))


@dataclass(frozen=True)
class QActivation:
    name: str
    kind: str  # relu | leaky_relu | clip
    format: FixedFormat
    low: int | None = None  # clip bounds, raw in ``format``
    high: int | None = None
    alpha: int = 0  # leaky_relu slope, raw with ALPHA_FRAC fraction bits


QLayer = QDense | QActivation


@dataclass(frozen=True)
class QuantizedModel:
    """The hardware part in integers: input format, layers, and (derived) output format.

    ``input_scale`` / ``input_offset``: the per-feature affine the host applies in float64 to each
    input before RND and SAT into ``input_format`` (a folded StandardScaler or normalization).
    """

    input_format: FixedFormat
    layers: tuple[QLayer, ...]
    input_scale: np.ndarray | None = None
    input_offset: np.ndarray | None = None

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Inputs as (batch, n_in), with the input affine applied (float64) when there is one."""
        return apply_input_affine(x, self.input_scale, self.input_offset)

    @property
    def output_format(self) -> FixedFormat:
        dense = [layer for layer in self.layers if isinstance(layer, QDense)]
        return dense[-1].output if dense else self.input_format

    def tensor_formats(self) -> dict[str, str]:
        """Every fixed-point format by tensor, as the manifest lists them."""
        formats = {"input": str(self.input_format)}
        for layer in self.layers:
            if isinstance(layer, QDense):
                formats.update({f"{layer.name}.{kind}": str(fmt) for kind, fmt in layer.formats().items()})
        formats["output"] = str(self.output_format)
        return formats

    def to_json(self) -> dict[str, Any]:
        layers: list[dict[str, Any]] = []
        for layer in self.layers:
            if isinstance(layer, QDense):
                layers.append(
                    {
                        "type": "dense",
                        "name": layer.name,
                        **{kind: str(fmt) for kind, fmt in layer.formats().items()},
                        "weight_values": layer.weight.tolist(),
                        "bias_values": layer.bias.tolist(),
                    }
                )
            else:
                layers.append(
                    {
                        "type": "activation",
                        "name": layer.name,
                        "kind": layer.kind,
                        "format": str(layer.format),
                        "low": layer.low,
                        "high": layer.high,
                        "alpha": layer.alpha,
                        "alpha_frac": ALPHA_FRAC,
                    }
                )
        return {
            "schema": SCHEMA,
            "input": str(self.input_format),
            "input_scale": None if self.input_scale is None else self.input_scale.tolist(),
            "input_offset": None if self.input_offset is None else self.input_offset.tolist(),
            "output": str(self.output_format),
            "layers": layers,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantizedModel:
        if data.get("schema") != SCHEMA:
            raise BundleError(f"quantized IR schema {data.get('schema')!r} is not {SCHEMA!r}; rebuild the bundle")
        layers: list[QLayer] = []
        for item in data["layers"]:
            if item["type"] == "dense":
                layers.append(
                    QDense(
                        name=item["name"],
                        weight=np.array(item["weight_values"], dtype=np.int64).reshape(len(item["weight_values"]), -1),
                        bias=np.array(item["bias_values"], dtype=np.int64),
                        input=FixedFormat.parse(item["input"]),
                        weight_format=FixedFormat.parse(item["weight"]),
                        bias_format=FixedFormat.parse(item["bias"]),
                        accumulator=FixedFormat.parse(item["accumulator"]),
                        output=FixedFormat.parse(item["activation"]),
                    )
                )
            else:
                layers.append(
                    QActivation(
                        item["name"],
                        item["kind"],
                        FixedFormat.parse(item["format"]),
                        item["low"],
                        item["high"],
                        item["alpha"],
                    )
                )
        scale, offset = data.get("input_scale"), data.get("input_offset")
        return cls(
            FixedFormat.parse(data["input"]),
            tuple(layers),
            None if scale is None else np.array(scale, dtype=np.float64),
            None if offset is None else np.array(offset, dtype=np.float64),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> QuantizedModel:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise BundleError(f"{path}: cannot read the quantized model ({exc}); rebuild the bundle") from None
