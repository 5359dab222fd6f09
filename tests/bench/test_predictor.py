"""The predictor: features from the planner, regressors learned from records, cross-validated error."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gatewright.bench.predictor import MIN_RUNS, Predictor, PredictorError, features, training_rows
from gatewright.build.hardware import HardwareOptions
from tests.bench.conftest import law, quantized


def test_features_describe_the_model_target_and_plan() -> None:
    q, n_in = quantized("mlp_8-16-3", 8)
    row = features(q, n_in, "ecp5-25k", HardwareOptions())
    assert (row["n_in"], row["n_out"], row["layers"]) == (8, 3, 2)
    assert row["macs"] == 8 * 16 + 16 * 3
    assert row["weight_bits"] == 8
    assert row["target_luts"] == 24288 and row["family_ecp5"] == 1 and row["family_ice40"] == 0
    assert row["clock_mhz"] == 100.0  # the target's default clock
    # a model this small is unrolled on an ECP5-25k: adders, no multipliers
    assert row["unrolled_stages"] == 2 and row["multipliers"] == 0 and row["adder_cost"] > 0
    assert row["plan_luts"] > row["adder_cost"]
    # narrower weights give a cheaper adder graph
    q4, _ = quantized("mlp_8-16-3", 4)
    assert features(q4, n_in, "ecp5-25k", HardwareOptions())["adder_cost"] < row["adder_cost"]
    # folded with a reuse factor: multipliers instead of adders, and more cycles
    folded = features(q, n_in, "ecp5-25k", HardwareOptions(arch="folded", reuse=16))
    assert folded["arch_folded"] == 1 and folded["reuse"] == 16
    assert folded["unrolled_stages"] == 0 and folded["multipliers"] > 0
    assert folded["plan_latency"] > row["plan_latency"]


def test_learns_the_law_and_reports_cross_validated_error(law_records: list[dict[str, Any]]) -> None:
    predictor = Predictor.learn(law_records)
    errors = {e["quantity"]: e for e in predictor.errors()}
    assert set(errors) == {"luts", "ffs", "dsps", "fmax_mhz", "latency_cycles", "hw_latency_us"}
    # the FPGA latency's error combines the held-out cycles and Fmax of the methods kept
    latency = errors["hw_latency_us"]
    assert latency["method"] == f"{errors['latency_cycles']['method']} cycles / {errors['fmax_mhz']['method']} Fmax"
    assert latency["samples"] == 30 and 0 <= latency["cv_mape"] < 0.3
    for quantity in ("luts", "fmax_mhz", "latency_cycles"):
        e = errors[quantity]
        assert e["samples"] == 30
        assert e["folds"] == 5  # five models: grouped folds hold whole models out
        assert 0 <= e["cv_mape"] < 0.25, (quantity, e)
        assert e["method"] in e["candidates"] and e["cv_mape"] == min(e["candidates"].values())
    # the planner's own estimate is a candidate for the quantities it estimates
    assert "plan" in errors["luts"]["candidates"] and "plan" not in errors["fmax_mhz"]["candidates"]
    # an unseen configuration: predictions close to the law
    q, n_in = quantized("digits_mlp", 6)
    row = features(q, n_in, "ecp5-45k", HardwareOptions())
    truth = law(row)
    estimate = predictor.predict(row)
    assert estimate["luts"] == pytest.approx(truth["luts"], rel=0.35)
    assert estimate["fmax_mhz"] == pytest.approx(truth["fmax_mhz"], rel=0.2)
    assert estimate["hw_latency_us"] == pytest.approx(estimate["latency_cycles"] / estimate["fmax_mhz"], rel=1e-3)


def test_too_few_builds_and_unusable_records_give_a_clear_error(law_records: list[dict[str, Any]]) -> None:
    with pytest.raises(PredictorError, match=f"at least {MIN_RUNS} measured FPGA builds for ice40"):
        Predictor.learn(law_records, family="ice40")
    noisy = copy.deepcopy(law_records[:3])
    duplicate = copy.deepcopy(noisy[0])  # an emu run of the same firmware as a sim run: counted once
    failed = {**copy.deepcopy(noisy[1]), "state": "failed"}
    predicted = {**copy.deepcopy(noisy[2]), "predicted": True}
    generic = copy.deepcopy(noisy[2])
    generic["metrics"]["luts"] = None  # no place and route: nothing about resources
    generic["metrics"]["cache_key"] = "other"
    assert len(training_rows([*noisy, duplicate, failed, predicted, generic])) == 3
    with pytest.raises(PredictorError, match="it has 3"):
        Predictor.learn([*noisy, duplicate, failed, predicted, generic])
