"""The arithmetic contract: RND (ties toward +infinity) and SAT, on hand-computed values."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewright.errors import InputDataError, PrecisionError
from gatewright.quant.fixed import FixedFormat, int_bits_for_range, saturate, shift_round


def test_format_properties() -> None:
    fmt = FixedFormat(8, 4)
    assert (fmt.frac, fmt.min_int, fmt.max_int) == (4, -128, 127)
    assert (fmt.lsb, fmt.min_value, fmt.max_value) == (0.0625, -8.0, 7.9375)
    assert str(fmt) == "fixed<8,4>"
    assert FixedFormat(6, 8).frac == -2 and FixedFormat(6, 8).max_value == 31 * 4


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (1.03125, 17),  # 16.5 -> tie rounds up to 17
        (-1.03125, -16),  # -16.5 -> tie rounds toward +infinity: -16
        (1.09, 17),  # 17.44 -> 17
        (-1.09, -17),  # -17.44 -> -17
        (-1.1, -18),  # -17.6 -> -18
        (7.96875, 127),  # 127.5 -> 128 -> saturates to 127
        (-8.0, -128),
        (-8.1, -128),  # -129.6 -> -130 -> saturates to -128
        (1e9, 127),
        (-np.inf, -128),
        (0.0, 0),
    ],
)
def test_quantize_rounds_half_up_and_saturates(value: float, raw: int) -> None:
    assert int(FixedFormat(8, 4).quantize(value)) == raw


def test_quantize_rejects_nan() -> None:
    with pytest.raises(InputDataError, match="NaN"):
        FixedFormat(8, 4).quantize(np.array([1.0, np.nan]))


def test_dequantize_is_exact() -> None:
    fmt = FixedFormat(16, 6)
    assert fmt.dequantize(np.array([fmt.max_int, -1, 1]))[0] == 32 - 2**-10
    assert list(fmt.dequantize(np.array([-1, 1]))) == [-(2**-10), 2**-10]


@pytest.mark.parametrize(
    ("raw", "from_frac", "to_frac", "expected"),
    [
        (5, 2, 0, 1),  # 1.25 -> 1
        (6, 2, 0, 2),  # 1.5 -> 2
        (-6, 2, 0, -1),  # -1.5 -> -1 (tie toward +infinity)
        (-7, 2, 0, -2),  # -1.75 -> -2
        (-5, 2, 0, -1),  # -1.25 -> -1
        (3, 0, 2, 12),  # to more fraction bits: exact shift left
        (-3, 1, 1, -3),
    ],
)
def test_shift_round_on_integers_and_float64(raw: int, from_frac: int, to_frac: int, expected: int) -> None:
    assert int(shift_round(np.array([raw], dtype=np.int64), from_frac, to_frac)[0]) == expected
    assert float(shift_round(np.array([raw], dtype=np.float64), from_frac, to_frac)[0]) == expected
    assert shift_round(np.array([raw], dtype=object), from_frac, to_frac)[0] == expected


def test_saturate() -> None:
    assert list(saturate(np.array([-300, -128, 0, 127, 300]), FixedFormat(8, 0))) == [-128, -128, 0, 127, 127]


@pytest.mark.parametrize(
    ("low", "high", "bits", "int_bits"),
    [
        (0.0, 6.41, 16, 4),  # [-8, 8) holds 6.41
        (-26.5, 21.2, 16, 6),  # [-32, 32)
        (0.0, 0.999, 8, 2),  # 0.999 * 128 rounds to 128 > 127: one more integer bit
        (0.0, 0.99, 8, 1),  # 0.99 * 128 = 126.7 -> 127 fits
        (-1.0, 0.5, 8, 1),  # -1 is exactly the minimum of fixed<8,1>
        (0.0, 0.0, 8, 1),
        (0.0, 0.001, 8, -8),  # small values get negative integer bits (more fraction)
    ],
)
def test_int_bits_for_range(low: float, high: float, bits: int, int_bits: int) -> None:
    assert int_bits_for_range(low, high, bits) == int_bits
    fmt = FixedFormat(bits, int_bits)
    assert int(fmt.quantize(high)) == math.floor(high * 2**fmt.frac + 0.5)  # no saturation


def test_parse_and_errors() -> None:
    assert FixedFormat.parse("fixed<16,6>") == FixedFormat(16, 6)
    assert FixedFormat.parse(" 12 , -2 ") == FixedFormat(12, -2)
    with pytest.raises(PrecisionError, match="'fixed<16>' is not a fixed-point format"):
        FixedFormat.parse("fixed<16>")
    with pytest.raises(PrecisionError, match="width 1 is out of range"):
        FixedFormat(1, 0)
    with pytest.raises(PrecisionError, match="width 65 is out of range"):
        FixedFormat(65, 0)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=2, max_value=40),
    st.integers(min_value=-10, max_value=30),
)
def test_quantize_matches_exact_rational_definition(value: float, bits: int, int_bits: int) -> None:
    fmt = FixedFormat(bits, int_bits)
    exact = math.floor(Fraction(value) * Fraction(2) ** fmt.frac + Fraction(1, 2))
    expected = min(max(exact, fmt.min_int), fmt.max_int)
    assert int(fmt.quantize(value)) == expected
