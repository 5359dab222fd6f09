"""Signed fixed-point formats and the two operations that define gatewright's arithmetic.

This module is the contract the hardware must match bit for bit (docs/quantization.md says the same):

* A format ``fixed<B,I>`` is a signed two's-complement number of ``B`` bits, ``I`` of them integer bits
  counting the sign bit, so ``F = B - I`` fraction bits. Its raw integer ``q`` lies in
  ``[-2^(B-1), 2^(B-1) - 1]`` and stands for the real value ``q * 2^-F``. ``I`` may be negative or
  larger than ``B`` (then ``F`` is negative): the format is just a scale and a width.
* **RND** (round to nearest, ties toward +infinity): a real ``x`` becomes ``floor(x * 2^F + 1/2)``.
  An integer ``a`` with ``Fa`` fraction bits becomes, with ``s = Fa - F``,
  ``(a + 2^(s-1)) >> s`` (arithmetic shift) when ``s > 0``, and ``a << -s`` (exact) when ``s <= 0``.
* **SAT** (saturation): the rounded integer is clamped to ``[-2^(B-1), 2^(B-1) - 1]``.

Every conversion into a format is RND then SAT, nothing else: quantizing inputs, weights and biases,
and requantizing an accumulator to a layer's output format.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from gatewright.errors import InputDataError, PrecisionError

MAX_BITS = 64
_FORMAT_RE = re.compile(r"^\s*(?:fixed\s*<\s*)?(-?\d+)\s*,\s*(-?\d+)\s*>?\s*$")


@dataclass(frozen=True, order=True)
class FixedFormat:
    """``fixed<bits, int_bits>``: signed, ``bits`` wide, ``int_bits`` integer bits including the sign."""

    bits: int
    int_bits: int

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= MAX_BITS:
            raise PrecisionError(
                f"fixed-point width {self.bits} is out of range: use 2 to {MAX_BITS} bits (sign included)"
            )

    @property
    def frac(self) -> int:
        """Fraction bits: the raw integer is scaled by 2**-frac."""
        return self.bits - self.int_bits

    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.frac)

    @property
    def min_value(self) -> float:
        return math.ldexp(float(self.min_int), -self.frac)

    @property
    def max_value(self) -> float:
        return math.ldexp(float(self.max_int), -self.frac)

    def __str__(self) -> str:
        return f"fixed<{self.bits},{self.int_bits}>"

    @classmethod
    def parse(cls, text: str) -> FixedFormat:
        """Read ``fixed<16,6>`` or ``16,6``."""
        match = _FORMAT_RE.match(text)
        if not match:
            raise PrecisionError(f"'{text}' is not a fixed-point format: write fixed<BITS,INT_BITS>, e.g. fixed<16,6>")
        return cls(int(match.group(1)), int(match.group(2)))

    def quantize(self, values: np.ndarray | float) -> np.ndarray:
        """Real values to raw integers (int64) by RND then SAT. NaN is an error: it has no fixed-point value."""
        if self.bits > 53:
            raise PrecisionError(f"{self} is too wide to take real values exactly (at most 53 bits)")
        array = np.asarray(values, dtype=np.float64)
        if np.isnan(array).any():
            raise InputDataError("input contains NaN: fixed-point data must be finite numbers")
        return quantize_to_float_ints(array.reshape(-1), self).astype(np.int64).reshape(array.shape)

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        """Raw integers to their exact real values (float64; exact while ``bits`` <= 53)."""
        return np.ldexp(np.asarray(raw, dtype=np.float64), -self.frac)


def quantize_to_float_ints(values: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """RND and SAT of real values into ``fmt``, as floats holding exact integers (NaN stays NaN).

    Exact because scaling by a power of two is exact, and a scaled value is either small enough
    that adding 1/2 is exact or so large that it saturates whichever way the addition rounds.
    That holds in float32 for formats of up to 24 bits (float32 data stays float32, half the
    memory traffic) and in float64 up to 52 bits; wider formats get their input from float64.
    """
    dtype = np.float32 if values.dtype == np.float32 and fmt.bits <= 24 and abs(fmt.frac) <= 100 else np.float64
    result = np.multiply(values, dtype(math.ldexp(1.0, fmt.frac)), dtype=dtype)
    result += dtype(0.5)
    np.floor(result, out=result)
    np.clip(result, fmt.min_int, fmt.max_int, out=result)
    return result


def shift_round(raw: np.ndarray, from_frac: int, to_frac: int) -> np.ndarray:
    """RND of exact integers from ``from_frac`` to ``to_frac`` fraction bits (no saturation).

    Works on int64 / Python-int object arrays with shifts, and on float64 arrays holding exact
    integers with a power-of-two scale and floor, which is the same function while values stay
    below 2**53 (callers prove that bound).
    """
    shift = from_frac - to_frac
    if raw.dtype == np.float64:
        if shift <= 0:
            return np.ldexp(raw, -shift)
        return np.floor(np.ldexp(raw, -shift) + 0.5)
    if shift <= 0:
        return raw << -shift
    return (raw + (1 << (shift - 1))) >> shift


def saturate(raw: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """SAT: clamp raw integers to the range of ``fmt``."""
    return np.clip(raw, fmt.min_int, fmt.max_int)


def int_bits_for_range(low: float, high: float, bits: int) -> int:
    """The fewest integer bits (sign included) that hold ``[low, high]`` in ``bits`` without saturating.

    Fewest integer bits means the most fraction bits, so the finest resolution that still covers
    every observed value after RND. An all-zero range gets 1 integer bit.
    """
    magnitude = max(abs(low), abs(high))
    if magnitude == 0.0 or not math.isfinite(magnitude):
        if not math.isfinite(magnitude):
            raise PrecisionError("cannot pick a fixed-point format for a range that is not finite")
        return 1
    # start low, then widen until nothing saturates; below 2^-900 every value rounds to 0 anyway
    int_bits = max(math.frexp(magnitude)[1] - 1, bits - 900)
    while True:
        fmt = FixedFormat(bits, int_bits)
        q = fmt.quantize(np.array([low, high]))
        scaled = np.floor(np.array([low, high]) * math.ldexp(1.0, fmt.frac) + 0.5)
        if np.array_equal(q, scaled.astype(np.int64)):
            return int_bits
        int_bits += 1


def bits_for_magnitude(max_abs_int: int) -> int:
    """Width of a signed integer that holds every value in ``[-max_abs_int, max_abs_int]``."""
    return max(2, int(max_abs_int).bit_length() + 1)
