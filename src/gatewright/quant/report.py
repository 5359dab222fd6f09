"""The quantization report: per layer formats, observed ranges, saturation counts and errors, and
per model output the agreement of the emulated model with the float model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gatewright.model.ir import Dense, HardwarePart, TensorSpec
from gatewright.quant.calibrate import Calibration, end_of_clamps
from gatewright.quant.emulator import Emulator
from gatewright.quant.qir import QDense, QuantizedModel


@dataclass
class LayerReport:
    name: str
    formats: dict[str, str]
    observed: list[float] | None  # range of the layer's output on the calibration data
    accumulator_saturated: int
    output_saturated: int
    max_abs_error: float  # layer output (after its ReLU / Clip) against float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class QuantReport:
    samples: int
    calibrated: bool
    input_format: str
    input_observed: list[float] | None
    input_saturated: int
    layers: list[LayerReport]
    top1_agreement: float | None  # argmax of the hardware output, emulated against float
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["layers"] = [layer.to_json() for layer in self.layers]
        return data


def hardware_report(
    hardware: HardwarePart, model: QuantizedModel, data: np.ndarray, calibration: Calibration | None
) -> QuantReport:
    """Compare the emulated hardware part with the float one on ``data`` (batch, n_in)."""
    reference = hardware.trace(data)
    trace = Emulator(model).trace(data)
    layers = []
    for index, (layer, qlayer) in enumerate(zip(hardware.layers, model.layers, strict=True)):
        if not isinstance(layer, Dense) or not isinstance(qlayer, QDense):
            continue
        end = end_of_clamps(hardware.layers, index)
        emulated = qlayer.output.dequantize(trace.values[end])
        observed = calibration.outputs[layer.name].to_json() if calibration else None
        layers.append(
            LayerReport(
                name=layer.name,
                formats={kind: str(fmt) for kind, fmt in qlayer.formats().items()},
                observed=observed,
                accumulator_saturated=trace.accumulator_saturated[layer.name],
                output_saturated=trace.output_saturated[layer.name],
                max_abs_error=float(np.max(np.abs(emulated - reference[end]), initial=0.0)),
            )
        )
    top1 = None
    if hardware.n_out > 1 and reference:
        emulated_out = model.output_format.dequantize(trace.values[-1])
        top1 = float(np.mean(np.argmax(emulated_out, axis=1) == np.argmax(reference[-1], axis=1)))
    return QuantReport(
        samples=len(data),
        calibrated=calibration is not None,
        input_format=str(model.input_format),
        input_observed=calibration.input.to_json() if calibration else None,
        input_saturated=trace.input_saturated,
        layers=layers,
        top1_agreement=top1,
    )


def compare_outputs(
    specs: tuple[TensorSpec, ...], emulated: Mapping[str, Any], reference: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """Per model output: max absolute error (numbers) or agreement (labels), emulated against float."""
    result: dict[str, dict[str, float]] = {}
    for spec in specs:
        got, want = as_array(emulated[spec.name]), as_array(reference[spec.name])
        fields = got.dtype.names
        if fields:  # a sequence of maps: compare field by field
            got = np.stack([got[f] for f in fields], axis=-1)
            want = np.stack([want[f] for f in fields], axis=-1)
        if got.dtype.kind == "f":
            result[spec.name] = {"max_abs_error": float(np.max(np.abs(got - want), initial=0.0))}
        else:
            result[spec.name] = {"agreement": float(np.mean(got == want)) if got.size else 1.0}
    return result


def as_array(value: Any) -> np.ndarray:
    """An output as a numpy array; a sequence of maps (ZipMap) becomes a structured array with one
    field per key, so it can be saved and loaded without pickle."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = list(value[0])
        dtype = np.dtype([(str(key), np.asarray(value[0][key]).dtype) for key in keys])
        return np.array([tuple(row[key] for key in keys) for row in value], dtype=dtype)
    return np.asarray(value)
