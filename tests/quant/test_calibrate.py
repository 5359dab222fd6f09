"""Calibration picks formats from data; the report counts saturation and measures agreement."""

from __future__ import annotations

import numpy as np
import pytest

from gatewright.errors import InputDataError, PrecisionError
from gatewright.model import intake
from gatewright.quant import (
    UNCALIBRATED_INT_BITS,
    Emulator,
    FixedFormat,
    PrecisionConfig,
    QDense,
    calibrate,
    quantize,
)
from gatewright.quant.report import hardware_report
from tests import onnx_models as om


@pytest.fixture
def graph():
    return intake(om.pytorch_mlp([8, 16, 4]))


def test_without_calibration_data_activations_use_the_documented_default(graph) -> None:
    model = quantize(graph.hardware, PrecisionConfig(), None)
    assert model.input_format == FixedFormat(16, UNCALIBRATED_INT_BITS)
    dense = [layer for layer in model.layers if isinstance(layer, QDense)]
    assert [d.output for d in dense] == [FixedFormat(16, 6), FixedFormat(16, 6)]
    assert dense[1].input == dense[0].output


def test_calibration_sets_integer_bits_from_observed_ranges(graph) -> None:
    x = om.rng(0).uniform(-3.0, 3.0, size=(500, 8))
    ranges = calibrate(graph.hardware, x)
    assert ranges.samples == 500
    assert -3.0 <= ranges.input.low < -2.9 and 2.9 < ranges.input.high <= 3.0
    first = graph.hardware.dense_layers[0]
    # the first layer is followed by a ReLU: its range is taken after it, so it starts at 0
    assert ranges.outputs[first.name].low == 0.0
    assert ranges.outputs[first.name].high == pytest.approx(np.max(np.maximum(x @ first.weight + first.bias, 0)))
    model = quantize(graph.hardware, PrecisionConfig(), ranges)
    assert model.input_format == FixedFormat(16, 3)  # [-3, 3] needs [-4, 4)
    report = hardware_report(graph.hardware, model, x, ranges)
    assert report.input_saturated == 0
    assert all(layer.output_saturated == 0 and layer.accumulator_saturated == 0 for layer in report.layers)
    assert report.top1_agreement is not None and report.top1_agreement >= 0.98


def test_weights_take_integer_bits_from_their_values_and_accumulators_never_overflow(graph) -> None:
    model = quantize(graph.hardware, PrecisionConfig.build(bits=["6"]), None)
    for layer, dense in zip(
        [lay for lay in model.layers if isinstance(lay, QDense)], graph.hardware.dense_layers, strict=True
    ):
        assert layer.weight_format.bits == 6
        assert layer.weight.max() <= layer.weight_format.max_int and layer.weight.min() >= layer.weight_format.min_int
        largest = np.abs(dense.weight).max()
        assert layer.weight_format.max_value >= largest - layer.weight_format.lsb / 2  # no saturated weight
        assert layer.accumulator.frac == layer.input.frac + layer.weight_format.frac
        assert layer.accumulator_bound() <= layer.accumulator.max_int
        assert layer.bias_format.frac <= layer.accumulator.frac


def test_saturation_on_data_beyond_the_calibrated_range_is_counted(graph) -> None:
    calib = om.rng(1).uniform(-1, 1, size=(200, 8))
    ranges = calibrate(graph.hardware, calib)
    model = quantize(graph.hardware, PrecisionConfig(), ranges)
    wild = calib * 10
    report = hardware_report(graph.hardware, model, wild, ranges)
    expected = int(np.count_nonzero((wild < model.input_format.min_value) | (wild >= model.input_format.max_value)))
    assert report.input_saturated == expected > 0


def test_fixed_int_bits_and_accumulator_width_overrides(graph) -> None:
    config = PrecisionConfig.build(
        bits=["input=fixed<12,4>", "/fc0/Gemm.activation=fixed<10,5>", "/fc1/Gemm.accumulator=18"]
    )
    model = quantize(graph.hardware, config, None)
    dense = [layer for layer in model.layers if isinstance(layer, QDense)]
    assert model.input_format == FixedFormat(12, 4)
    assert dense[0].output == FixedFormat(10, 5) and dense[1].input == FixedFormat(10, 5)
    assert dense[1].accumulator.bits == 18
    assert dense[1].accumulator.frac == dense[1].input.frac + dense[1].weight_format.frac


def test_accumulator_with_wrong_fraction_bits_is_explained(graph) -> None:
    config = PrecisionConfig.build(bits=["accumulator=fixed<32,2>"])
    with pytest.raises(PrecisionError, match="fraction bits, but input and weight formats fix it at"):
        quantize(graph.hardware, config, None)


def test_calibration_data_of_the_wrong_shape_or_with_nan(graph) -> None:
    with pytest.raises(InputDataError, match=r"data of shape \[10, 7\] does not fit input 'input'"):
        calibrate(graph.hardware, np.zeros((10, 7)))
    bad = np.zeros((10, 8))
    bad[3, 2] = np.nan
    with pytest.raises(InputDataError, match=r"holds NaN or infinity \(sample 3\)"):
        calibrate(graph.hardware, bad)
    with pytest.raises(InputDataError, match="is empty"):
        calibrate(graph.hardware, np.zeros((0, 8)))


@pytest.mark.parametrize("activation", ["relu", "leaky", "relu6"])
@pytest.mark.parametrize(("bits", "least_agreement"), [(8, 0.97), (12, 0.995)])
def test_agreement_with_float_grows_with_the_weight_width(activation: str, bits: int, least_agreement: float) -> None:
    """Untrained random networks have close logits, the hardest case for top-1 agreement."""
    graph = intake(om.pytorch_mlp([12, 32, 32, 5], activation=activation, seed=3))
    r = om.rng(4)
    calib, fresh = r.normal(size=(1000, 12)), r.normal(size=(1000, 12))
    model = quantize(graph.hardware, PrecisionConfig.build(bits=[str(bits)]), calibrate(graph.hardware, calib))
    emulated = Emulator(model).run(fresh)
    reference = graph.hardware.forward(fresh)
    assert np.mean(emulated.argmax(1) == reference.argmax(1)) >= least_agreement


def test_trained_digits_mlp_keeps_99_percent_agreement_at_8_bits(sklearn_digits: dict) -> None:
    model_bytes, x, _ = sklearn_digits[False]
    graph = intake(model_bytes)
    calib, fresh = x[:1000], x[1000:]
    model = quantize(graph.hardware, PrecisionConfig(), calibrate(graph.hardware, calib))
    emulated = Emulator(model).run(fresh)
    assert np.mean(emulated.argmax(1) == graph.hardware.forward(fresh).argmax(1)) >= 0.99


def test_standard_scaler_on_features_of_very_different_ranges() -> None:
    """Breast-cancer features span 0.001 to 4000: the scaler stays in front of the input quantizer,
    so one input format fits the scaled values (folded into the weights it would lose the small ones)."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=400, random_state=0))
        pipe.fit(x[:400], y[:400])
    graph = intake(to_onnx(pipe, x[:1], options={"zipmap": False}).SerializeToString())
    model = quantize(graph.hardware, PrecisionConfig(), calibrate(graph.hardware, x[:400]))
    assert model.input_scale is not None and model.input_format.int_bits <= 6
    fresh = x[400:]
    emulated = Emulator(model).run(fresh)
    reference = graph.hardware.forward(fresh)
    assert np.mean((emulated[:, 0] > 0) == (reference[:, 0] > 0)) >= 0.99  # one logit: the sign decides
    # typical error is tiny; a sample beyond the calibrated range saturates, as the report would count
    assert np.median(np.abs(emulated - reference)) < 0.05
