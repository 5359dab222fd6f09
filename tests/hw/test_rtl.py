"""The generated RTL, simulated with Verilator, against the emulator's reference path: every bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatewright.hw import sim
from gatewright.hw.core import StageChoice, generate
from gatewright.hw.stages import FOLDED, UNROLLED, folded_timing
from gatewright.quant.emulator import Emulator
from gatewright.quant.fixed import FixedFormat
from gatewright.quant.qir import ALPHA_FRAC, QActivation, QDense, QLayer, QuantizedModel

pytestmark = [pytest.mark.toolchain, pytest.mark.slow]
WEIGHT = FixedFormat(8, 1)


def dense(
    r: np.random.Generator,
    name: str,
    n_in: int,
    n_out: int,
    fin: FixedFormat,
    fout: FixedFormat,
    weight: FixedFormat = WEIGHT,
    accumulator_bits: int | None = None,
) -> QDense:
    w = r.integers(weight.min_int, weight.max_int + 1, (n_in, n_out))
    w[:, 0] = 0  # a column of zeros: da4ml emits a constant
    frac = fin.frac + weight.frac
    bias_format = FixedFormat(12, 12 - min(9, frac))  # the quantizer keeps bias fraction bits within the sum's
    b = r.integers(bias_format.min_int, bias_format.max_int + 1, n_out)
    layer = QDense(name, w, b, fin, weight, bias_format, FixedFormat(64, 64 - frac), fout)
    bits = accumulator_bits or layer.accumulator_bound().bit_length() + 1
    return QDense(name, w, b, fin, weight, bias_format, FixedFormat(bits, bits - frac), fout)


def run_design(model: QuantizedModel, n_in: int, choices: list[StageChoice] | None, tmp: Path, seed: int) -> None:
    design = generate(model, n_in, choices, latency_cutoff=2)
    rtl = tmp / "rtl"
    design.write(rtl)
    shape = sim.SimShape(design.n_in, design.in_bits, design.n_out, design.out_bits)
    binary, _ = sim.build(rtl, design.sources, shape, tmp / "verilator.log")
    fmt = model.input_format
    r = np.random.default_rng(seed)
    raw = r.integers(fmt.min_int, fmt.max_int + 1, (300, n_in))
    raw[0], raw[1], raw[2] = fmt.min_int, fmt.max_int, 0  # the extremes saturate everything downstream
    expected = Emulator(model, kernels=False).run_raw(raw).astype(np.int64)
    with sim.Simulator(binary, shape) as simulator:
        plain = simulator.run(raw)
        stalled = simulator.run(raw, backpressure=True)
        again = simulator.run(raw[:1])
    np.testing.assert_array_equal(plain.outputs, expected)
    np.testing.assert_array_equal(stalled.outputs, expected)
    np.testing.assert_array_equal(again.outputs, expected[:1])
    assert plain.latency == design.latency  # the schedule the manifest reports is the simulated one
    assert plain.cycles == design.latency + design.interval * (len(raw) - 1)
    assert stalled.cycles >= plain.cycles  # a stalled output never speeds anything up


CASES = {
    "unrolled relu / leaky / clip": (UNROLLED, UNROLLED),
    "folded, parallel 2 and 1": ((FOLDED, 2), (FOLDED, 1)),
    "folded then unrolled": ((FOLDED, 3), UNROLLED),
    "unrolled then folded, all outputs parallel": (UNROLLED, (FOLDED, 4)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_two_layer_models_are_bit_exact(name: str, tmp_path: Path) -> None:
    r = np.random.default_rng(len(name))
    fin, f1, f2 = FixedFormat(10, 4), FixedFormat(12, 3), FixedFormat(14, 5)
    layers: tuple[QLayer, ...] = (
        dense(r, "d0", 6, 5, fin, f1),
        QActivation("a0", "relu", f1),
        dense(r, "d1", 5, 4, f1, f2),
        QActivation("a1", "leaky_relu", f2, alpha=round(0.1 * (1 << ALPHA_FRAC))),
        QActivation("a2", "clip", f2, low=-300, high=900),
    )
    choices = [
        c if isinstance(c, str) and False else (StageChoice(*c) if isinstance(c, tuple) else StageChoice(c))
        for c in CASES[name]
    ]
    run_design(QuantizedModel(fin, layers), 6, choices, tmp_path, seed=1)


def test_saturating_accumulator_negative_fraction_and_leading_activation(tmp_path: Path) -> None:
    """A user-narrowed accumulator saturates; an output format with negative fraction bits rounds
    to multiples of 2^3; an activation before the first layer becomes its own stage."""
    r = np.random.default_rng(7)
    fin, fout = FixedFormat(9, 5), FixedFormat(6, 9)  # fout: 6 bits, 9 integer bits -> frac -3
    narrow = dense(r, "d0", 7, 3, fin, fout, weight=FixedFormat(6, 2), accumulator_bits=10)
    layers: tuple[QLayer, ...] = (QActivation("pre", "clip", fin, low=-100, high=None), narrow)
    model = QuantizedModel(fin, layers)
    trace = Emulator(model, kernels=False).trace(
        np.random.default_rng(0).uniform(fin.min_value, fin.max_value, (300, 7))
    )
    assert trace.accumulator_saturated["d0"] > 0  # the case really saturates
    run_design(model, 7, [StageChoice(UNROLLED)], tmp_path / "u", seed=2)
    run_design(model, 7, [StageChoice(FOLDED, 2)], tmp_path / "f", seed=3)


def test_one_input_one_output_and_wide_values(tmp_path: Path) -> None:
    r = np.random.default_rng(3)
    fin, fout = FixedFormat(24, 10), FixedFormat(30, 12)
    layer = dense(r, "d0", 1, 1, fin, fout, weight=FixedFormat(18, 3))
    layer = QDense(
        "d0",
        np.array([[-131071]]),
        np.array([1500]),
        fin,
        layer.weight_format,
        layer.bias_format,
        layer.accumulator,
        fout,
    )
    run_design(QuantizedModel(fin, (layer,)), 1, [StageChoice(UNROLLED)], tmp_path / "u", seed=4)
    run_design(QuantizedModel(fin, (layer,)), 1, [StageChoice(FOLDED, 1)], tmp_path / "f", seed=5)


def test_folded_timing_formula_counts_groups() -> None:
    assert folded_timing(16, 8, 8) == (1 + 16 + 4, 22)
    assert folded_timing(16, 8, 3) == (1 + 48 + 4, 54)


def test_simulator_is_reused_from_the_cache(tmp_path: Path) -> None:
    r = np.random.default_rng(11)
    fin = FixedFormat(8, 3)
    model = QuantizedModel(fin, (dense(r, "d0", 3, 2, fin, FixedFormat(10, 4)),))
    design = generate(model, 3)
    design.write(tmp_path / "a")
    design.write(tmp_path / "b")  # the same RTL in another folder: same content, same simulator
    shape = sim.SimShape(design.n_in, design.in_bits, design.n_out, design.out_bits)
    first, _ = sim.build(tmp_path / "a", design.sources, shape, tmp_path / "a.log")
    second, reused = sim.build(tmp_path / "b", design.sources, shape, tmp_path / "b.log")
    assert reused and second == first
