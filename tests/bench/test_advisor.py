"""The advisor: ranks configurations by constraints, from the predictor or the planner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatewright.bench import advisor
from gatewright.bench.advisor import Constraints, advise
from gatewright.errors import GatewrightError, UnsupportedModelError
from tests.bench.conftest import EXAMPLES


def data(name: str) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    return (
        EXAMPLES / f"{name}.onnx",
        np.load(EXAMPLES / f"{name}_test.npy"),
        np.load(EXAMPLES / f"{name}_test_labels.npy"),
        np.load(EXAMPLES / f"{name}_train.npy"),
    )


def test_ranks_meeting_configurations_first_and_says_why_others_miss(law_records: list[dict[str, Any]]) -> None:
    model, x, y, calibration = data("mlp_16-16-4")
    constraints = Constraints(max_latency_us=0.2, min_accuracy=0.75, family="ecp5")
    candidates, note = advise(model, constraints, x, y, calibration, law_records)
    assert note == "ecp5: predictor learned from the bench results"
    assert {c.target for c in candidates} == {"ecp5-25k", "ecp5-45k", "ecp5-85k"}
    assert len(candidates) == 3 * 3 * 2  # three parts, three weight widths, two activation widths
    meeting = [c for c in candidates if c.meets]
    assert meeting, [c.why for c in candidates]
    assert candidates[: len(meeting)] == meeting  # every configuration that meets comes first
    for c in meeting:
        assert c.accuracy is not None and c.accuracy >= 0.75
        assert c.estimate["hw_latency_us"] <= 0.2 and c.fits and not c.why
        assert c.source == "predictor"
    assert meeting[0].target == "ecp5-25k"  # the cheapest part that meets the constraints
    for c in candidates[len(meeting) :]:
        assert c.why  # each one that misses says why
    # accuracy is the quantized model's, measured on the emulator: the same on every part
    by_precision = {(c.weight_bits, c.activation_bits): c.accuracy for c in candidates}
    for c in candidates:
        assert c.accuracy == by_precision[(c.weight_bits, c.activation_bits)]
    assert by_precision[(8, 16)] > by_precision[(4, 8)]


def test_without_results_the_planner_estimates_and_constraints_still_apply() -> None:
    model, x, y, calibration = data("mlp_8-16-3")
    candidates, note = advise(model, Constraints(max_luts=2000, targets=("ice40-up5k",)), x, y, calibration, [])
    assert "ice40: planner estimates" in note and "at least" in note
    assert {c.source for c in candidates} == {"planner"}
    for c in candidates:
        assert c.estimate["fmax_mhz"] == 24.0  # the part's default clock
        if c.estimate["luts"] > 2000:
            assert not c.meets and any("--max-luts 2000" in why for why in c.why)
    # without labels, accuracy is agreement with the float model
    unlabelled, _ = advise(model, Constraints(targets=("ecp5-25k",)), x, None, calibration, [])
    assert {c.accuracy_kind for c in unlabelled} == {"agreement"}
    assert max(c.accuracy or 0 for c in unlabelled) > 0.95


def test_bad_constraints_and_unsupported_models_are_refused(tmp_path: Path) -> None:
    model, x, y, calibration = data("mlp_8-16-3")
    with pytest.raises(GatewrightError, match="--target generic: not an FPGA target"):
        advise(model, Constraints(targets=("generic",)), x, y, calibration, [])
    with pytest.raises(GatewrightError, match="--family xilinx: unknown"):
        advise(model, Constraints(family="xilinx"), x, y, calibration, [])
    from tests import onnx_models

    sin = tmp_path / "sin.onnx"
    sin.write_bytes(
        onnx_models.make_model(
            [onnx_models.helper.make_node("Sin", ["input"], ["output"])], {}, ["batch", 8], "output", ["batch", 8]
        )
    )
    with pytest.raises(UnsupportedModelError):
        advise(sin, Constraints(), x, None, None, [])


def test_experiment_file_builds_the_chosen_configurations(tmp_path: Path, law_records: list[dict[str, Any]]) -> None:
    from gatewright.bench import config

    model, x, y, calibration = data("mlp_8-16-3")
    candidates, _ = advise(model, Constraints(targets=("ecp5-25k",)), x, y, calibration, law_records)
    spec = advisor.experiment_file(
        candidates[:2],
        model,
        EXAMPLES / "mlp_8-16-3_test.npy",
        EXAMPLES / "mlp_8-16-3_test_labels.npy",
        EXAMPLES / "mlp_8-16-3_train.npy",
        tmp_path / "advice.yaml",
    )
    runs = config.load(spec).runs()
    assert len(runs) == 2
    assert {(r.target.device, r.target.build) for r in runs} == {("sim", "ecp5-25k")}
    assert [(r.optimization.weight_bits, r.optimization.activation_bits) for r in runs] == [
        (c.weight_bits, c.activation_bits) for c in candidates[:2]
    ]


def test_cli_lists_configurations_and_refuses_bad_constraints(tmp_path: Path) -> None:
    import subprocess
    import sys

    model, *_ = data("mlp_8-16-3")
    common = [sys.executable, "-m", "gatewright", "advise", str(model), "--data", str(tmp_path / "state")]
    common += [
        "--inputs",
        str(EXAMPLES / "mlp_8-16-3_test.npy"),
        "--labels",
        str(EXAMPLES / "mlp_8-16-3_test_labels.npy"),
    ]
    done = subprocess.run(
        [*common, "--target", "ecp5-25k", "--min-accuracy", "0.5", "--max-latency-us", "100"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "planner estimates" in done.stdout  # an empty database: no predictor yet
    assert not (tmp_path / "state").exists()  # asking for advice creates no database
    assert "ecp5-25k-w8a16" in done.stdout and "yes" in done.stdout
    wrong = subprocess.run([*common, "--min-accuracy", "95"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "--min-accuracy 95.0: give a fraction between 0 and 1" in wrong.stderr
    assert "Traceback" not in wrong.stderr
