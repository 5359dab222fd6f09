"""The golden emulator: hand-computed integer cases, and the fast path against a scalar reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewright.quant import Emulator, FixedFormat, QActivation, QDense, QuantizedModel
from gatewright.quant.kernels import KernelPlan, library
from gatewright.quant.qir import ALPHA_FRAC


def hand_layer() -> QDense:
    """Input fixed<8,4>, weights fixed<6,2>, bias fixed<8,2>, output fixed<6,3> (see the test)."""
    weight = FixedFormat(6, 2).quantize(np.array([[0.5, 1.9375, 0.5], [1.25, -1.9375, 1.25]]))
    bias = FixedFormat(8, 2).quantize(np.array([0.3, 0.0, 0.0]))
    assert weight.tolist() == [[8, 31, 8], [20, -31, 20]] and bias.tolist() == [19, 0, 0]
    return QDense(
        "fc",
        weight,
        bias,
        FixedFormat(8, 4),
        FixedFormat(6, 2),
        FixedFormat(8, 2),
        FixedFormat(14, 6),
        FixedFormat(6, 3),
    )


def test_dense_by_hand_rounding_saturation_negative_ties() -> None:
    # x = [1.5, -0.75] -> raw [24, -12] (frac 4); products have frac 8
    # col 0: 24*8 - 12*20 = -48, bias 19 << 2 = 76 -> 28; >> 5 with rounding: (28 + 16) >> 5 = 1
    # col 1: 24*31 + 12*31 = 1116 -> (1116 + 16) >> 5 = 35 -> saturates to 31
    # col 2: -48 -> (-48 + 16) >> 5 = -1   (-1.5 rounds toward +infinity)
    model = QuantizedModel(FixedFormat(8, 4), (hand_layer(),))
    emulator = Emulator(model)
    x = np.array([[1.5, -0.75]])
    assert emulator.quantize_input(x).tolist() == [[24, -12]]
    assert emulator.run_raw(np.array([[24, -12]])).tolist() == [[1, 31, -1]]
    assert emulator.run(x).tolist() == [[0.125, 3.875, -0.125]]
    trace = emulator.trace(x)
    assert trace.values[-1].tolist() == [[1, 31, -1]]
    assert trace.output_saturated == {"fc": 1} and trace.accumulator_saturated == {"fc": 0}


def test_relu_and_clip_after_dense_by_hand() -> None:
    fmt = FixedFormat(6, 3)
    relu = QActivation("relu", "relu", fmt)
    model = QuantizedModel(FixedFormat(8, 4), (hand_layer(), relu))
    assert Emulator(model).run_raw(np.array([[24, -12]])).tolist() == [[1, 31, 0]]
    clip = QActivation("clip", "clip", fmt, low=int(fmt.quantize(-0.1)), high=int(fmt.quantize(2.0)))
    assert (clip.low, clip.high) == (-1, 16)
    model = QuantizedModel(FixedFormat(8, 4), (hand_layer(), clip))
    assert Emulator(model).run_raw(np.array([[24, -12]])).tolist() == [[1, 16, -1]]


def test_clamps_that_do_not_overlap_fuse_as_they_compose() -> None:
    """Relu then Clip(-3, -1) is the constant -1; Clip(1, -1) is the constant -1 (min(max(y, 1), -1))."""
    fmt = FixedFormat(6, 3)
    for activations in (
        (QActivation("relu", "relu", fmt), QActivation("clip", "clip", fmt, low=-24, high=-8)),
        (QActivation("clip", "clip", fmt, low=8, high=-8),),
    ):
        model = QuantizedModel(FixedFormat(8, 4), (hand_layer(), *activations))
        emulator = Emulator(model)
        assert emulator.run_raw(np.array([[24, -12]])).tolist() == [[-8, -8, -8]]
        assert emulator.trace(np.array([[1.5, -0.75]])).values[-1].tolist() == [[-8, -8, -8]]


def test_leaky_relu_by_hand() -> None:
    # alpha 0.25: -12 -> -3 exactly; -10 -> -2.5 -> -2 (tie toward +infinity); -11 -> -2.75 -> -3
    fmt = FixedFormat(8, 4)
    leaky = QActivation("leaky", "leaky_relu", fmt, alpha=int(0.25 * 2**ALPHA_FRAC))
    model = QuantizedModel(fmt, (leaky,))
    raw = np.array([[-12, -10, -11, 5, 0, -128]])
    expected = [[-3, -2, -3, 5, 0, -32]]
    assert Emulator(model).run_raw(raw).tolist() == expected
    assert Emulator(model).trace(fmt.dequantize(raw)).values[-1].tolist() == expected


def test_input_saturation_is_counted() -> None:
    model = QuantizedModel(FixedFormat(8, 4), (QActivation("r", "relu", FixedFormat(8, 4)),))
    trace = Emulator(model).trace(np.array([[9.0, -9.0, 1.0]]))
    assert trace.input.tolist() == [[127, -128, 16]]
    assert trace.input_saturated == 2
    assert trace.values[-1].tolist() == [[127, 0, 16]]


def test_narrow_accumulator_saturates_the_sum() -> None:
    layer = hand_layer()
    narrow = QDense(
        layer.name,
        layer.weight,
        layer.bias,
        layer.input,
        layer.weight_format,
        layer.bias_format,
        FixedFormat(10, 2),
        layer.output,
    )  # holds [-512, 511]: col 1's 1116 saturates to 511
    emulator = Emulator(QuantizedModel(FixedFormat(8, 4), (narrow,)))
    # (511 + 16) >> 5 = 16
    assert emulator.run_raw(np.array([[24, -12]])).tolist() == [[1, 16, -1]]
    trace = emulator.trace(np.array([[1.5, -0.75]]))
    assert trace.accumulator_saturated == {"fc": 1} and trace.output_saturated == {"fc": 0}


def reference(model: QuantizedModel, raw_row: list[int]) -> list[int]:
    """The semantics, scalar by scalar, on Python integers."""
    values = list(raw_row)
    for layer in model.layers:
        if isinstance(layer, QDense):
            acc_fmt, out_fmt = layer.accumulator, layer.output
            result = []
            for j in range(layer.n_out):
                acc = sum(int(values[k]) * int(layer.weight[k, j]) for k in range(layer.n_in))
                acc += int(layer.bias[j]) << (acc_fmt.frac - layer.bias_format.frac)
                acc = min(max(acc, acc_fmt.min_int), acc_fmt.max_int)
                shift = acc_fmt.frac - out_fmt.frac
                rounded = (acc + (1 << (shift - 1))) >> shift if shift > 0 else acc << -shift
                result.append(min(max(rounded, out_fmt.min_int), out_fmt.max_int))
            values = result
        elif layer.kind == "relu":
            values = [max(v, 0) for v in values]
        elif layer.kind == "clip":
            low = layer.format.min_int if layer.low is None else layer.low
            high = layer.format.max_int if layer.high is None else layer.high
            values = [min(max(v, low), high) for v in values]
        else:
            fmt = layer.format
            out = []
            for v in values:
                if v >= 0:
                    out.append(v)
                else:
                    r = (v * layer.alpha + (1 << (ALPHA_FRAC - 1))) >> ALPHA_FRAC
                    out.append(min(max(r, fmt.min_int), fmt.max_int))
            values = out
    return values


@st.composite
def quantized_models(draw: st.DrawFn) -> tuple[QuantizedModel, np.ndarray]:
    """Random chains of dense layers and activations, in narrow and very wide formats."""
    n = draw(st.integers(1, 5))
    in_bits = draw(st.integers(2, 52))
    fmt = FixedFormat(in_bits, draw(st.integers(-4, 12)))
    input_format = fmt
    layers: list = []
    for _ in range(draw(st.integers(1, 3))):
        n_out = draw(st.integers(1, 4))
        w_fmt = FixedFormat(draw(st.integers(2, 30)), draw(st.integers(-2, 6)))
        b_frac = draw(st.integers(min(-4, fmt.frac + w_fmt.frac), fmt.frac + w_fmt.frac))
        b_fmt = FixedFormat(max(2, draw(st.integers(2, 24))), 0)
        b_fmt = FixedFormat(b_fmt.bits, b_fmt.bits - b_frac)
        weight = np.array(
            draw(st.lists(st.integers(w_fmt.min_int, w_fmt.max_int), min_size=n * n_out, max_size=n * n_out)),
            dtype=np.int64,
        ).reshape(n, n_out)
        bias = np.array(
            draw(st.lists(st.integers(b_fmt.min_int, b_fmt.max_int), min_size=n_out, max_size=n_out)), dtype=np.int64
        )
        acc_frac = fmt.frac + w_fmt.frac
        acc_bits = draw(st.integers(4, 63))
        out = FixedFormat(draw(st.integers(2, 32)), draw(st.integers(-4, 16)))
        layers.append(
            QDense(f"d{len(layers)}", weight, bias, fmt, w_fmt, b_fmt, FixedFormat(acc_bits, acc_bits - acc_frac), out)
        )
        fmt = out
        for kind in draw(st.lists(st.sampled_from(["relu", "clip", "leaky_relu"]), max_size=2)):
            if kind == "relu":
                layers.append(QActivation("a", "relu", fmt))
            elif kind == "clip":  # any bounds, also low > high (the result is then ``high``)
                low = draw(st.none() | st.integers(fmt.min_int, fmt.max_int))
                high = draw(st.none() | st.integers(fmt.min_int, fmt.max_int))
                layers.append(QActivation("a", "clip", fmt, low=low, high=high))
            else:
                layers.append(QActivation("a", "leaky_relu", fmt, alpha=draw(st.integers(-(2**17), 2**17))))
        n = n_out
    rows = draw(
        st.lists(
            st.lists(
                st.integers(input_format.min_int, input_format.max_int),
                min_size=layers[0].n_in,
                max_size=layers[0].n_in,
            ),
            min_size=1,
            max_size=4,
        )
    )
    return QuantizedModel(input_format, tuple(layers)), np.array(rows, dtype=np.int64)


@settings(max_examples=300, deadline=None)
@given(quantized_models())
def test_fast_path_and_trace_equal_the_scalar_reference(case: tuple[QuantizedModel, np.ndarray]) -> None:
    model, raw = case
    expected = [reference(model, row.tolist()) for row in raw]
    for emulator in (Emulator(model), Emulator(model, kernels=False)):  # C kernels where they fit, NumPy
        fast = emulator.run_raw(raw.astype(np.float64))
        assert np.asarray(fast).astype(np.int64).tolist() == expected
    plan = KernelPlan.compile(model, portable=True)  # the kernel without AVX2
    if plan is not None:
        assert plan.run_raw(raw).astype(np.int64).tolist() == expected
    real = model.input_format.dequantize(raw) if model.input_format.bits <= 53 else None
    if real is not None:
        assert emulator.trace(real).values[-1].tolist() == expected


def test_wide_formats_take_the_exact_path() -> None:
    """32-bit inputs and 30-bit weights overflow float64's exact range; results stay exact."""
    fmt_in, fmt_w = FixedFormat(32, 8), FixedFormat(30, 2)
    weight = np.array([[fmt_w.max_int], [fmt_w.max_int]], dtype=np.int64)
    layer = QDense(
        "wide", weight, np.array([0]), fmt_in, fmt_w, FixedFormat(8, 8 - 52), FixedFormat(64, 12), FixedFormat(64, 12)
    )
    model = QuantizedModel(fmt_in, (layer,))
    raw = np.array([[fmt_in.max_int, fmt_in.max_int - 1]])
    expected = fmt_in.max_int * fmt_w.max_int + (fmt_in.max_int - 1) * fmt_w.max_int
    assert expected > 2**53
    assert reference(model, raw[0].tolist()) == [expected]
    assert Emulator(model).run_raw(raw).tolist() == [[expected]]
    assert Emulator(model).trace(fmt_in.dequantize(raw)).values[-1].tolist() == [[expected]]


def test_emulator_is_vectorized_over_the_batch() -> None:
    model = QuantizedModel(FixedFormat(8, 4), (hand_layer(),))
    x = np.random.default_rng(0).uniform(-8, 8, size=(1000, 2))
    emulator = Emulator(model)
    batch = emulator.run(x)
    rows = np.vstack([emulator.run(x[i : i + 1]) for i in range(0, 1000, 97)])
    np.testing.assert_array_equal(batch[::97], rows)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_emulator_tracks_the_float_layer(bits: int) -> None:
    """Error shrinks with the width: a sanity check on the scale handling, not the contract."""
    r = np.random.default_rng(bits)
    w = r.uniform(-1.9, 1.9, size=(6, 3))  # inside fixed<B,2>: no saturation
    fmt_w = FixedFormat(bits, 2)
    fmt_in = FixedFormat(16, 4)
    layer = QDense(
        "d",
        fmt_w.quantize(w),
        np.zeros(3, dtype=np.int64),
        fmt_in,
        fmt_w,
        FixedFormat(16, 2),
        FixedFormat(48, 48 - fmt_in.frac - fmt_w.frac),
        FixedFormat(24, 8),
    )
    x = r.uniform(-2, 2, size=(50, 6))
    error = np.max(np.abs(Emulator(QuantizedModel(fmt_in, (layer,))).run(x) - x @ w))
    assert error < 6 * 2 * 2.0**-fmt_w.frac + 2**-12


def test_nan_input_is_an_error_on_both_paths() -> None:
    from gatewright.errors import InputDataError

    fast = QuantizedModel(FixedFormat(8, 4), (hand_layer(),))
    wide_weight = FixedFormat(30, 2)
    wide = QuantizedModel(
        FixedFormat(40, 8),
        (
            QDense(
                "w",
                np.array([[wide_weight.max_int]]),
                np.array([0]),
                FixedFormat(40, 8),
                wide_weight,
                FixedFormat(8, 0),
                FixedFormat(64, 4),
                FixedFormat(64, 4),
            ),
        ),
    )
    assert Emulator(wide)._plan is None  # this one runs on the exact path
    for model, width in ((fast, 2), (wide, 1)):
        x = np.zeros((3, width))
        x[1, 0] = np.nan
        with pytest.raises(InputDataError, match="input sample 1 contains NaN"):
            Emulator(model).run(x)


def test_float16_outputs_are_scaled_before_the_narrowing() -> None:
    model = QuantizedModel(FixedFormat(24, 4), (QActivation("r", "relu", FixedFormat(24, 4)),))
    x = np.array([[3.25, 7.5]])
    assert Emulator(model).run(x, dtype=np.float16).tolist() == [[3.25, 7.5]]


def test_narrow_formats_run_in_float32_wide_ones_in_float64() -> None:
    """The plan's float type follows the bound: 8-bit data fits float32's 24 exact bits, 16-bit does not."""
    r = np.random.default_rng(3)
    for bits, dtype in ((8, np.float32), (16, np.float64)):
        fmt, w_fmt = FixedFormat(bits, 3), FixedFormat(8, 1)
        weight = r.integers(w_fmt.min_int, w_fmt.max_int + 1, size=(16, 4))
        acc_bits = 40
        layer = QDense(
            "d",
            weight,
            np.zeros(4, dtype=np.int64),
            fmt,
            w_fmt,
            FixedFormat(8, 0),
            FixedFormat(acc_bits, acc_bits - fmt.frac - w_fmt.frac),
            fmt,
        )
        model = QuantizedModel(fmt, (layer, QActivation("r", "relu", fmt)))
        emulator = Emulator(model, kernels=False)
        raw = r.integers(fmt.min_int, fmt.max_int + 1, size=(50, 16))
        fast = emulator.run_raw(raw)
        assert fast.dtype == dtype
        expected = [reference(model, row.tolist()) for row in raw]
        assert fast.astype(np.int64).tolist() == expected


def test_extreme_scales_stay_exact() -> None:
    """A large left shift into the output format, and scales beyond float32's exponent range."""
    fmt_in, fmt_w = FixedFormat(16, 6), FixedFormat(8, 1)
    layer = QDense(
        "d",
        np.array([[127], [-127]]),
        np.array([0]),
        fmt_in,
        fmt_w,
        FixedFormat(8, 0),
        FixedFormat(32, 32 - fmt_in.frac - fmt_w.frac),
        FixedFormat(16, -103),
    )
    model = QuantizedModel(fmt_in, (layer,))
    raw = np.array([[1, 1], [3, -2], [0, 0]])
    expected = [reference(model, row.tolist()) for row in raw]
    assert np.asarray(Emulator(model).run_raw(raw)).astype(np.int64).tolist() == expected
    tiny = QuantizedModel(FixedFormat(16, -139), (QActivation("r", "relu", FixedFormat(16, -139)),))
    value = Emulator(tiny).run(np.array([[32767 * 2.0**-155]]), dtype=np.float32)
    assert value[0, 0] == np.float32(32767 * 2.0**-155) and value[0, 0] > 0


def test_c_kernels_agree_with_the_reference_on_realistic_layers() -> None:
    """16-bit activations, 8-bit weights, the shapes of the benchmark models, both kernel builds."""
    if library() is None:
        pytest.skip("the C kernels were not built here")
    r = np.random.default_rng(5)
    for sizes in ([64, 32, 10], [16, 64, 32, 32, 5], [7, 13, 3]):
        layers: list = []
        fmt = FixedFormat(16, 4)
        for n_in, n_out in itertools.pairwise(sizes):
            w_fmt = FixedFormat(8, 1)
            weight = r.integers(w_fmt.min_int, w_fmt.max_int + 1, size=(n_in, n_out))
            bias = r.integers(-(2**15), 2**15, size=n_out)
            acc_frac = fmt.frac + w_fmt.frac
            out = FixedFormat(16, 6)
            layers += [
                QDense(
                    "d", weight, bias, fmt, w_fmt, FixedFormat(16, 16 - acc_frac), FixedFormat(40, 40 - acc_frac), out
                ),
                QActivation("r", "relu", out),
            ]
            fmt = out
        model = QuantizedModel(FixedFormat(16, 4), tuple(layers[:-1]))
        assert KernelPlan.compile(model) is not None
        x = r.normal(scale=4.0, size=(333, sizes[0])).astype(np.float32)
        expected = Emulator(model, kernels=False).trace(x).values[-1]
        np.testing.assert_array_equal(Emulator(model).run_raw(Emulator(model).quantize_input(x)), expected)
        np.testing.assert_array_equal(Emulator(model).run(x), Emulator(model, kernels=False).run(x))
        portable = KernelPlan.compile(model, portable=True)
        assert portable is not None
        np.testing.assert_array_equal(portable.run(x.reshape(len(x), -1)), expected)
