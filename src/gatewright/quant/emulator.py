"""The golden integer emulator: the quantized hardware part, computed exactly and fast.

Three implementations of the same semantics (``gatewright.quant.qir`` states them); ``run`` takes
the C kernels of ``gatewright.quant.kernels`` where the model fits them (16-bit data, 32-bit sums),
else the NumPy fast path below, else the exact path:

* ``trace`` follows the definition step by step on int64 (or Python integers when a layer could
  exceed 63 bits) and counts saturations. It is the reference and feeds the quantization report.
* the NumPy fast path: integers ride in floats and the matrix products go to BLAS: float32
  where a bound proves that every partial sum stays an integer below 2**24, else float64 where it
  stays below 2**53, so no rounding can occur.
  Scaling by a power of two is exact in floating point, so the requantization shift is folded into
  the weights, the rounding offset into the bias, and the clamps of following ReLU / Clip layers
  into the saturation bounds. A model with a layer the bound does not cover runs on the exact path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from gatewright.errors import InputDataError
from gatewright.quant.fixed import FixedFormat, quantize_to_float_ints, saturate, shift_round
from gatewright.quant.kernels import KernelPlan
from gatewright.quant.qir import ALPHA_FRAC, QActivation, QDense, QLayer, QuantizedModel

INT64_LIMIT = 1 << 62


@dataclass
class Trace:
    """Raw integer values after each layer and saturation counts, from ``Emulator.trace``."""

    input: np.ndarray
    values: list[np.ndarray] = field(default_factory=list)
    input_saturated: int = 0
    accumulator_saturated: dict[str, int] = field(default_factory=dict)
    output_saturated: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _FastDense:
    weight: np.ndarray  # the plan's float type, already scaled by 2**-shift
    offset: np.ndarray  # scaled bias plus the rounding half
    rounds: bool  # floor is needed (the shift is to the right)
    low: float
    high: float


@dataclass(frozen=True)
class _FastClamp:
    low: float
    high: float


@dataclass(frozen=True)
class _FastLeaky:
    alpha: float  # alpha_raw * 2**-ALPHA_FRAC: exact power-of-two scaled integer
    low: float  # the format's minimum: a negative times a slope in [0, 1] or above saturates there


class Emulator:
    """Runs a ``QuantizedModel`` on batches of real or raw inputs."""

    def __init__(self, model: QuantizedModel, kernels: bool = True) -> None:
        self.model = model
        self._kernel = KernelPlan.compile(model) if kernels else None  # C kernels where the model fits
        # float32 (twice BLAS's float64 speed) where every value stays below 2^24, else float64
        self._dtype: type[np.floating] = np.float32
        self._plan = _compile(model, np.float32)
        if self._plan is None:
            self._dtype = np.float64
            self._plan = _compile(model, np.float64)

    @property
    def input_format(self) -> FixedFormat:
        return self.model.input_format

    @property
    def output_format(self) -> FixedFormat:
        return self.model.output_format

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Real inputs (batch, n_in) to raw integers in the input format (int16 on the kernel path,
        else floats holding integers)."""
        if self._kernel is not None:
            return self._kernel.quantize(self.model.prepare(x))
        return quantize_to_float_ints(self.model.prepare(x), self.model.input_format)

    def run_raw(self, raw: np.ndarray) -> np.ndarray:
        """Raw input integers to raw output integers: int16 on the kernel path, floats holding exact
        integers on the NumPy fast path, int64 when a layer is too wide for float64 (then every layer
        runs exactly)."""
        if self._kernel is not None:
            return self._kernel.run_raw(raw)
        if self._plan is None:
            value = np.asarray(raw).astype(np.int64)
            for layer in self.model.layers:
                value = _exact_layer(layer, value)
            return value
        value = np.asarray(raw, dtype=self._dtype)  # BLAS on integers: every partial sum stays exact
        for step in self._plan:
            if isinstance(step, _FastDense):
                value = value @ step.weight
                value += step.offset
                if step.rounds:
                    np.floor(value, out=value)
                np.clip(value, step.low, step.high, out=value)
            elif isinstance(step, _FastClamp):
                value = np.clip(value, step.low, step.high)
            else:
                negative = np.minimum(value, 0.0) * self._dtype(step.alpha)
                negative += 0.5
                np.floor(negative, out=negative)
                np.maximum(value, 0.0, out=value)
                value += np.clip(negative, step.low, 0.0)
        return value

    def run(self, x: np.ndarray, dtype: type[np.floating] = np.float64) -> np.ndarray:
        """Real inputs to the real values of the raw outputs, in ``dtype`` (float64: exact).

        A NaN input is an error (it has no fixed-point value); it reaches every output of its row.
        """
        if self._kernel is not None:  # the kernel quantizer rejects NaN itself
            raw = self._kernel.run(self.model.prepare(x))
            if dtype in (np.float32, np.float64) and abs(self.output_format.frac) < 100:
                return np.multiply(raw, dtype(math.ldexp(1.0, -self.output_format.frac)), dtype=dtype)  # exact
            return np.multiply(raw, math.ldexp(1.0, -self.output_format.frac), dtype=np.float64).astype(dtype)
        quantized = self.quantize_input(x)
        if self._plan is None:  # the exact path casts to integers: look for NaN before that
            reject_nan(quantized)
        raw = self.run_raw(quantized)
        if self._plan is not None:  # NaN reaches the (smaller) output of the fast path
            reject_nan(raw)
        # scale in float64 (exact, and 2^-frac may not exist in a narrower type), then round once
        value = np.multiply(raw, math.ldexp(1.0, -self.output_format.frac), dtype=np.float64)
        return value if dtype is np.float64 else value.astype(dtype)

    def trace(self, x: np.ndarray) -> Trace:
        """The reference semantics, step by step, with saturation counts (for the report and tests)."""
        flat = self.model.prepare(x).astype(np.float64)
        fmt = self.model.input_format
        scaled = np.floor(np.ldexp(flat, fmt.frac) + 0.5)
        trace = Trace(input=fmt.quantize(flat))
        trace.input_saturated = int(np.count_nonzero((scaled < fmt.min_int) | (scaled > fmt.max_int)))
        value = trace.input
        for layer in self.model.layers:
            value = _exact_layer(layer, value, trace)
            trace.values.append(value)
        return trace


def reject_nan(values: np.ndarray) -> None:
    if np.isnan(values).any():
        row = int(np.argwhere(np.isnan(values))[0][0])
        raise InputDataError(f"input sample {row} contains NaN: fixed-point data must be finite numbers")


def _compile(model: QuantizedModel, dtype: type[np.floating]) -> list[_FastDense | _FastLeaky | _FastClamp] | None:
    """Plan the fast path in ``dtype``: fold shifts, offsets and clamps. None when a value could
    leave the integers that ``dtype`` holds exactly (2^24 for float32, 2^53 for float64)."""
    limit = 1 << (np.finfo(dtype).nmant + 1)
    widest = max([model.input_format.bits] + [layer.output.bits for layer in model.layers if isinstance(layer, QDense)])
    if (1 << (widest - 1)) > limit // 2:  # clamp bounds must be exact too
        return None
    plan: list[_FastDense | _FastLeaky | _FastClamp] = []
    for layer in model.layers:
        if isinstance(layer, QDense):
            fast = _fast_dense(layer, limit, dtype)
            if fast is None:
                return None
            plan.append(fast)
        elif layer.kind == "leaky_relu":
            leaky = _fast_leaky(layer, limit)
            if leaky is None:
                return None
            plan.append(leaky)
        elif plan and isinstance(plan[-1], _FastDense | _FastClamp):
            plan[-1] = _narrow(plan[-1], layer)  # clamps compose: fuse into the step before
        else:
            plan.append(_FastClamp(*_bounds(layer)))
    return plan


def _bounds(layer: QActivation) -> tuple[float, float]:
    low = float(layer.format.min_int)
    high = float(layer.format.max_int)
    if layer.kind == "relu":
        low = max(low, 0.0)
    elif layer.kind == "clip":
        low = low if layer.low is None else float(layer.low)
        high = high if layer.high is None else float(layer.high)
    return min(low, high), high  # min(max(y, low), high) is the constant ``high`` when low > high


def _narrow(step: _FastDense | _FastClamp, activation: QActivation) -> _FastDense | _FastClamp:
    """Fuse ReLU / Clip into the clamp of the step before it: clamping [a, b] then [c, d] is
    clamping to [clamp(a, c, d), clamp(b, c, d)], also when the two intervals do not overlap."""
    low, high = _bounds(activation)
    return dataclasses.replace(step, low=min(max(step.low, low), high), high=min(max(step.high, low), high))


def _fast_dense(layer: QDense, limit: int, dtype: type[np.floating]) -> _FastDense | None:
    shift = layer.accumulator.frac - layer.output.frac
    accumulated = layer.accumulator_bound()
    if accumulated > layer.accumulator.max_int:  # the sum itself may saturate: exact path
        return None
    if (accumulated + (1 << (shift - 1) if shift > 0 else 0)) << max(0, -shift) >= limit:
        return None  # also after a left shift every value must stay an exact integer
    bias = layer.bias.astype(np.float64) * math.ldexp(1.0, layer.accumulator.frac - layer.bias_format.frac)
    offset = np.ldexp(bias, -shift) + (0.5 if shift > 0 else 0.0)  # exact: numerators stay below ``limit``
    weight = np.ldexp(layer.weight.astype(np.float64), -shift)
    return _FastDense(
        weight.astype(dtype), offset.astype(dtype), shift > 0, float(layer.output.min_int), float(layer.output.max_int)
    )


def _fast_leaky(layer: QActivation, limit: int) -> _FastLeaky | None:
    """Only a non-negative slope keeps negatives negative, which the fused clamp assumes."""
    bound = abs(layer.format.min_int) * abs(layer.alpha) + (1 << ALPHA_FRAC)
    if layer.alpha < 0 or bound >= limit:
        return None
    return _FastLeaky(math.ldexp(float(layer.alpha), -ALPHA_FRAC), float(layer.format.min_int))


def _exact_layer(layer: QLayer, value: np.ndarray, trace: Trace | None = None) -> np.ndarray:
    """One layer by the definition, on int64 (or Python ints past 62 bits)."""
    if isinstance(layer, QActivation):
        fmt = layer.format
        if layer.kind == "relu":
            return np.maximum(value, 0)
        if layer.kind == "clip":
            low = fmt.min_int if layer.low is None else layer.low
            high = fmt.max_int if layer.high is None else layer.high
            return np.clip(value, low, high)
        wide = value.astype(object) if abs(fmt.min_int) * (abs(layer.alpha) + 1) >= INT64_LIMIT else value
        scaled = shift_round(wide * layer.alpha, fmt.frac + ALPHA_FRAC, fmt.frac)
        return np.where(value >= 0, value, saturate(scaled, fmt)).astype(value.dtype)

    shift = layer.accumulator.frac - layer.output.frac
    largest = max(layer.accumulator_bound(), abs(layer.accumulator.min_int)) + (1 << max(0, shift - 1))
    dtype = object if largest << max(0, -shift) >= INT64_LIMIT else np.int64  # Python ints past 62 bits
    x = value.astype(dtype)
    acc = x @ layer.weight.astype(dtype) + (
        layer.bias.astype(dtype) << (layer.accumulator.frac - layer.bias_format.frac)
    )
    if trace is not None:
        trace.accumulator_saturated[layer.name] = _count_outside(acc, layer.accumulator)
    acc = saturate(acc, layer.accumulator)
    rounded = shift_round(acc, layer.accumulator.frac, layer.output.frac)
    if trace is not None:
        trace.output_saturated[layer.name] = _count_outside(rounded, layer.output)
    out = saturate(rounded, layer.output)
    return out.astype(np.int64)


def _count_outside(values: np.ndarray, fmt: FixedFormat) -> int:
    return int(np.count_nonzero((values < fmt.min_int) | (values > fmt.max_int)))
