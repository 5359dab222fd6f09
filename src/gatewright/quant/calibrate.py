"""Post-training quantization: pick every format and turn the float hardware part into integers.

Rules (docs/quantization.md):

* input and activations: the width the user asked for (default 16); integer bits from the observed
  range on the calibration data, the fewest that hold it without saturating. The range of a layer's
  output is taken after the ReLU / Clip layers that follow it (they clamp anyway), but before a
  LeakyRelu (which keeps the negative side). Without calibration data the integer bits are
  ``UNCALIBRATED_INT_BITS`` (6, i.e. fixed<16,6>) unless the user fixes them.
* weights (default 8 bits) and biases (default 16 bits): integer bits from the values themselves.
  A bias never keeps more fraction bits than the accumulator has.
* accumulator: fraction bits are the sum of input and weight fraction bits (products are exact);
  its width is by default just enough that no sum can overflow. A narrower width saturates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gatewright.errors import InputDataError, PrecisionError
from gatewright.model.ir import Activation, Dense, HardwarePart, Layer
from gatewright.quant.fixed import FixedFormat, bits_for_magnitude, int_bits_for_range
from gatewright.quant.precision import UNCALIBRATED_INT_BITS, PrecisionConfig, PrecisionSpec
from gatewright.quant.qir import ALPHA_FRAC, QActivation, QDense, QLayer, QuantizedModel, sum_bound

MAX_INPUT_BITS = 52  # float64 turns a float input into an integer exactly up to this width


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def to_json(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Calibration:
    """Observed ranges: of the input, and of each Dense layer's output, by layer name."""

    samples: int
    input: Range
    outputs: dict[str, Range]


def calibrate(hardware: HardwarePart, data: np.ndarray) -> Calibration:
    """Run the float hardware part on the calibration data and record the ranges that set formats."""
    flat = as_batch(data, hardware)
    values = hardware.trace(flat)
    layers = hardware.layers
    first = end_of_clamps(layers, -1)
    input_range = _range(hardware.prepare(flat) if first == -1 else values[first])
    outputs = {
        layer.name: _range(values[end_of_clamps(layers, i)])
        for i, layer in enumerate(layers)
        if isinstance(layer, Dense)
    }
    return Calibration(len(flat), input_range, outputs)


def as_batch(data: np.ndarray, hardware: HardwarePart) -> np.ndarray:
    """Check calibration or input data against the hardware input and flatten it to (batch, n_in)."""
    array = np.asarray(data)
    if array.dtype.kind not in "fiu":
        raise InputDataError(f"data for input '{hardware.input.name}' is {array.dtype}, not numbers")
    if array.ndim == 0 or array.size == 0:
        raise InputDataError(f"data for input '{hardware.input.name}' is empty; give at least one sample")
    if array.ndim == 1:
        array = array[None, :]
    if array[0].size != hardware.n_in:
        raise InputDataError(
            f"data of shape {list(array.shape)} does not fit input '{hardware.input.name}' "
            f"{list(hardware.input.shape or ())}: each sample needs {hardware.n_in} values"
        )
    flat = array.reshape(len(array), -1).astype(np.float64)
    if not np.isfinite(flat).all():
        row = int(np.argwhere(~np.isfinite(flat))[0][0])
        raise InputDataError(f"data for input '{hardware.input.name}' holds NaN or infinity (sample {row})")
    return flat


def quantize(hardware: HardwarePart, config: PrecisionConfig, calibration: Calibration | None) -> QuantizedModel:
    """Choose the formats and quantize the weights: the quantized IR."""
    dense_names = [layer.name for layer in hardware.dense_layers]
    config.check_layers(dense_names)
    in_range = calibration.input if calibration else None
    current = _data_format(config.spec("input"), in_range, "input")
    if current.bits > MAX_INPUT_BITS:
        raise PrecisionError(
            f"input: {current} is wider than {MAX_INPUT_BITS} bits, more than float inputs can fill exactly; "
            f"use --bits input={MAX_INPUT_BITS} or less"
        )
    input_format = current
    layers: list[QLayer] = []
    for layer in hardware.layers:
        if isinstance(layer, Activation):
            layers.append(_activation(layer, current))
            continue
        out_range = calibration.outputs[layer.name] if calibration else None
        qdense = _dense(layer, current, config, out_range)
        layers.append(qdense)
        current = qdense.output
    return QuantizedModel(input_format, tuple(layers), hardware.input_scale, hardware.input_offset)


def _dense(layer: Dense, fmt_in: FixedFormat, config: PrecisionConfig, out_range: Range | None) -> QDense:
    name = layer.name
    weight_fmt = _value_format(config.spec("weight", name), layer.weight, f"{name}.weight")
    acc_frac = fmt_in.frac + weight_fmt.frac
    bias_fmt = _bias_format(config.spec("bias", name), layer.bias, acc_frac, name)
    weight = weight_fmt.quantize(layer.weight)
    bias = bias_fmt.quantize(layer.bias)
    bound = sum_bound(weight, bias, fmt_in, acc_frac - bias_fmt.frac)
    acc_spec = config.spec("accumulator", name)
    full_bits = bits_for_magnitude(bound)
    if acc_spec.int_bits is not None and acc_spec.bits is not None and acc_spec.bits - acc_spec.int_bits != acc_frac:
        raise PrecisionError(
            f"{name}.accumulator: {FixedFormat(acc_spec.bits, acc_spec.int_bits)} has "
            f"{acc_spec.bits - acc_spec.int_bits} fraction bits, but input and weight formats fix it at "
            f"{acc_frac}; give only its width, e.g. accumulator={full_bits}"
        )
    if full_bits > 64 and acc_spec.bits is None:
        raise PrecisionError(
            f"{name}: its accumulator would need {full_bits} bits (more than 64): the weights ({weight_fmt}) and the "
            f"bias ({bias_fmt}) sit at very different scales. Give the weights more integer bits "
            f"(e.g. --bits {name}.weight=fixed<{weight_fmt.bits},{weight_fmt.int_bits + full_bits - 64}>) "
            "or set a narrower accumulator that saturates (--bits accumulator=64)"
        )
    acc_bits = acc_spec.bits or full_bits
    accumulator = FixedFormat(acc_bits, acc_bits - acc_frac)
    output = _data_format(config.spec("activation", name), out_range, f"{name}.activation")
    return QDense(name, weight, bias, fmt_in, weight_fmt, bias_fmt, accumulator, output)


def _activation(layer: Activation, fmt: FixedFormat) -> QActivation:
    if layer.kind == "leaky_relu":
        alpha = int(np.floor(layer.alpha * (1 << ALPHA_FRAC) + 0.5))
        return QActivation(layer.name, layer.kind, fmt, alpha=alpha)
    if layer.kind == "clip":
        low = None if layer.low is None else int(fmt.quantize(layer.low))
        high = None if layer.high is None else int(fmt.quantize(layer.high))
        return QActivation(layer.name, layer.kind, fmt, low=low, high=high)
    return QActivation(layer.name, layer.kind, fmt)


def _data_format(spec: PrecisionSpec, observed: Range | None, what: str) -> FixedFormat:
    bits = _width(spec, what)
    if spec.int_bits is not None:
        return FixedFormat(bits, spec.int_bits)
    if observed is None:
        return FixedFormat(bits, UNCALIBRATED_INT_BITS)
    return FixedFormat(bits, int_bits_for_range(observed.low, observed.high, bits))


def _value_format(spec: PrecisionSpec, values: np.ndarray, what: str) -> FixedFormat:
    bits = _width(spec, what)
    if spec.int_bits is not None:
        return FixedFormat(bits, spec.int_bits)
    return FixedFormat(bits, int_bits_for_range(float(values.min(initial=0.0)), float(values.max(initial=0.0)), bits))


def _bias_format(spec: PrecisionSpec, bias: np.ndarray, acc_frac: int, layer: str) -> FixedFormat:
    wanted = _value_format(spec, bias, f"{layer}.bias")
    if wanted.frac <= acc_frac:
        return wanted
    bits = max(2, wanted.int_bits + acc_frac)  # finer than the accumulator would be thrown away
    return FixedFormat(bits, bits - acc_frac)


def _width(spec: PrecisionSpec, what: str) -> int:
    if spec.bits is None:
        raise PrecisionError(f"{what}: needs a width in bits (e.g. 8 or fixed<8,3>); 'auto' is for accumulators")
    return spec.bits


def end_of_clamps(layers: tuple[Layer, ...], index: int) -> int:
    """Index of the last ReLU / Clip directly after layer ``index`` (-1: the input), else ``index``.

    Those layers clamp the value anyway, so their output range is the one a format must hold.
    """
    end = index
    while end + 1 < len(layers) and _clamps(layers[end + 1]):
        end += 1
    return end


def _clamps(layer: Layer) -> bool:
    return isinstance(layer, Activation) and layer.kind != "leaky_relu"


def _range(values: np.ndarray) -> Range:
    return Range(float(values.min()), float(values.max()))


def with_new_weights(model: QuantizedModel, hardware: HardwarePart) -> QuantizedModel:
    """``model`` with the weights and biases of ``hardware`` (the same layers, retrained), quantized into
    the formats ``model`` already has: what a device can take without a new design. Raises
    ``PrecisionError`` where the structure differs or a new sum no longer fits its accumulator."""
    if len(hardware.layers) != len(model.layers):
        raise PrecisionError(
            f"the new model has {len(hardware.layers)} hardware layers, the loaded one {len(model.layers)}; "
            "a different structure needs a rebuild"
        )
    same_affine = all(
        (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        for a, b in ((hardware.input_scale, model.input_scale), (hardware.input_offset, model.input_offset))
    )
    if not same_affine:
        raise PrecisionError("the new model scales its inputs differently; rebuild the bundle for it")
    layers: list[QLayer] = []
    for old, new in zip(model.layers, hardware.layers, strict=True):
        if isinstance(old, QDense) and isinstance(new, Dense):
            if new.weight.shape != old.weight.shape:
                raise PrecisionError(
                    f"layer {old.name}: weights {list(new.weight.shape)} instead of {list(old.weight.shape)}; "
                    "a different structure needs a rebuild"
                )
            layer = replace(old, weight=old.weight_format.quantize(new.weight), bias=old.bias_format.quantize(new.bias))
            if layer.accumulator_bound() > layer.accumulator.max_int:
                raise PrecisionError(
                    f"layer {old.name}: the new weights can overflow the {layer.accumulator} accumulator; "
                    "rebuild the bundle so that it gets a wider one"
                )
            layers.append(layer)
        elif isinstance(old, QActivation) and isinstance(new, Activation) and new.kind == old.kind:
            if replace(_activation(new, old.format), name=old.name) != old:
                raise PrecisionError(f"layer {old.name}: the activation's parameters changed; rebuild the bundle")
            layers.append(old)
        else:
            raise PrecisionError(
                f"layer {old.name} is a different kind of layer in the new model; a different structure needs a rebuild"
            )
    return replace(model, layers=tuple(layers))
