"""The emulator's C kernels (``_kernels.c``), loaded with ctypes, and the plan that uses them.

A ``KernelPlan`` runs a quantized model on 16-bit raw integers with 32-bit sums, when every layer
fits: input, weight and output formats of at most 16 bits, sums (bias and rounding half included,
after any left shift) below 2^31, no accumulator saturation, and only Relu / Clip after a Dense
(they fold into its clamp). Anything else runs on NumPy. ``GATEWRIGHT_KERNELS=0`` turns the kernels
off, e.g. to compare both paths.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from gatewright.errors import InputDataError
from gatewright.quant.fixed import FixedFormat
from gatewright.quant.qir import QActivation, QDense, QuantizedModel

INT32_LIMIT = 1 << 31
_i64, _i32, _f32, _f64, _ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double, ctypes.c_void_p


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they were not built (or are switched off)."""
    if os.environ.get("GATEWRIGHT_KERNELS", "1") == "0":
        return None
    spec = importlib.util.find_spec("gatewright.quant._kernels")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    lib.gw_quantize_f32.argtypes = [_ptr, _ptr, _i64, _f32, _f32, _f32]
    lib.gw_quantize_f64.argtypes = [_ptr, _ptr, _i64, _f64, _f64, _f64]
    lib.gw_quantize_f32.restype = lib.gw_quantize_f64.restype = _i32
    lib.gw_packed_size.argtypes = [_i64, _i64]
    lib.gw_packed_size.restype = _i64
    lib.gw_pack.argtypes = [_ptr, _i64, _i64, _ptr]
    for dense in (lib.gw_dense, lib.gw_dense_portable):
        dense.argtypes = [_ptr, _i64, _i64, _ptr, _i64, _ptr, _i32, _i32, _i32, _ptr]
    return lib


@dataclass(frozen=True)
class _Layer:
    packed: np.ndarray  # int16 weights in the kernel's blocked layout
    bias: np.ndarray  # int32, at the sum's fraction bits
    n_in: int
    n_out: int
    shift: int
    low: int
    high: int


class KernelPlan:
    """A quantized model compiled for the C kernels. Build it with ``KernelPlan.compile``."""

    def __init__(self, lib: ctypes.CDLL, input_format: FixedFormat, layers: list[_Layer], portable: bool) -> None:
        self.lib = lib
        self.input_format = input_format
        self.layers = layers
        self._dense = lib.gw_dense_portable if portable else lib.gw_dense

    @classmethod
    def compile(cls, model: QuantizedModel, portable: bool = False) -> KernelPlan | None:
        """The plan, or None when the kernels are missing or a layer does not fit them."""
        lib = library()
        if lib is None or model.input_format.bits > 16 or not model.layers or not isinstance(model.layers[0], QDense):
            return None
        layers: list[_Layer] = []
        for layer in model.layers:
            if isinstance(layer, QDense):
                fitted = _fit(lib, layer)
                if fitted is None:
                    return None
                layers.append(fitted)
            elif layer.kind in ("relu", "clip"):
                layers[-1] = _clamp(layers[-1], layer)
            else:
                return None
        return cls(lib, model.input_format, layers, portable)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Real (batch, n_in) inputs to raw int16 outputs."""
        return self._forward(self.quantize(x))

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """RND and SAT of (batch, n_in) floats into raw int16 (its buffer has the kernel's spare element)."""
        fmt = self.input_format
        source = np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        raw = np.empty(source.size + 1, dtype=np.int16)
        quantize = self.lib.gw_quantize_f32 if source.dtype == np.float32 else self.lib.gw_quantize_f64
        nan = quantize(source.ctypes.data, raw.ctypes.data, source.size, 2.0**fmt.frac, fmt.min_int, fmt.max_int)
        if nan:
            row = int(np.argwhere(np.isnan(source))[0][0])
            raise InputDataError(f"input sample {row} contains NaN: fixed-point data must be finite numbers")
        return raw[: source.size].reshape(source.shape)

    def run_raw(self, raw: np.ndarray) -> np.ndarray:
        """Raw inputs (batch, n_in) to raw int16 outputs (the inputs are copied into a padded buffer)."""
        padded = np.empty(raw.size + 1, dtype=np.int16)
        padded[: raw.size] = np.asarray(raw).ravel()
        return self._forward(padded[: raw.size].reshape(raw.shape))

    def _forward(self, value: np.ndarray) -> np.ndarray:
        """The layers on int16 rows whose buffer has one spare element past the end (the kernel reads
        whole pairs; an odd row length meets a zero weight there)."""
        for layer in self.layers:
            out = np.empty(len(value) * layer.n_out + 1, dtype=np.int16)  # spare element for the next layer
            batch = len(value)
            self._dense(
                value.ctypes.data,
                batch,
                layer.n_in,
                layer.packed.ctypes.data,
                layer.n_out,
                layer.bias.ctypes.data,
                layer.shift,
                layer.low,
                layer.high,
                out.ctypes.data,
            )
            value = out[: batch * layer.n_out].reshape(batch, layer.n_out)
        return value


def _fit(lib: ctypes.CDLL, layer: QDense) -> _Layer | None:
    if max(layer.input.bits, layer.weight_format.bits, layer.output.bits) > 16:
        return None
    shift = layer.accumulator.frac - layer.output.frac
    bound = layer.accumulator_bound()
    if bound > layer.accumulator.max_int:  # the sum may saturate: the NumPy plans handle that
        return None
    if (bound + (1 << (shift - 1) if shift > 0 else 0)) << max(0, -shift) >= INT32_LIMIT:
        return None
    weight = np.ascontiguousarray(layer.weight, dtype=np.int16)
    packed = np.empty(lib.gw_packed_size(layer.n_in, layer.n_out), dtype=np.int16)
    lib.gw_pack(weight.ctypes.data, layer.n_in, layer.n_out, packed.ctypes.data)
    bias = (layer.bias.astype(object) << (layer.accumulator.frac - layer.bias_format.frac)).astype(np.int32)
    return _Layer(
        packed, np.ascontiguousarray(bias), layer.n_in, layer.n_out, shift, layer.output.min_int, layer.output.max_int
    )


def _clamp(layer: _Layer, activation: QActivation) -> _Layer:
    """Fold a Relu or Clip into the layer's clamp (clamps compose, also when they do not overlap)."""
    fmt = activation.format
    low = 0 if activation.kind == "relu" else fmt.min_int if activation.low is None else activation.low
    high = fmt.max_int if activation.kind == "relu" or activation.high is None else activation.high
    low = min(low, high)  # min(max(y, low), high) is ``high`` when low > high
    return _Layer(
        layer.packed,
        layer.bias,
        layer.n_in,
        layer.n_out,
        layer.shift,
        min(max(layer.low, low), high),
        min(max(layer.high, low), high),
    )
