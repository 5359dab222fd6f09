"""`gatewright bench run` end to end: real jobs, real devices, LoadGen, results in the database, report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import select

from gatewright.bench.config import load
from gatewright.bench.metrics import BenchMetrics
from gatewright.bench.runner import records
from gatewright.control.db import BenchRunRow, JobRow, open_database
from tests.bench.conftest import EXAMPLES

GATEWRIGHT = [sys.executable, "-m", "gatewright"]
QUICK = "{scenario: SingleStream, warmup_queries: 5, min_queries: 80, min_duration_s: 0.3}"


def experiment(tmp_path: Path, targets: str, extra: str = "", sweep: str = "{weight_bits: [4, 8]}") -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"""applications:
  small:
    model: {EXAMPLES / "mlp_8-16-3.onnx"}
    data: {EXAMPLES / "mlp_8-16-3_test.npy"}
    labels: {EXAMPLES / "mlp_8-16-3_test_labels.npy"}
    calibration: {EXAMPLES / "mlp_8-16-3_train.npy"}
    samples: 200
measurements:
  latency: {QUICK}
{extra}experiments:
  tiny:
    application: small
    targets: {targets}
    measurements: [latency]
    sweep: {sweep}
"""
    )
    return path


def bench(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWRIGHT, "bench", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.slow
@pytest.mark.toolchain
def test_cpu_emu_and_sim_runs_are_built_once_measured_and_stored(tmp_path: Path) -> None:
    spec = experiment(tmp_path, "[cpu, emu, sim]")
    data = tmp_path / "data"
    done = bench("run", spec, "--data", data, "--report", tmp_path / "report", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid, 5 runs" in done.stdout  # one cpu run (optimizations do not apply) + 2 devices x 2 widths
    sessions = open_database(f"sqlite:///{data / 'gatewright.db'}")
    rows = {(r["target"], r["optimization"]): r for r in records(sessions)}
    assert set(rows) == {
        ("cpu", "float"),
        ("emu", "weight_bits=4"),
        ("sim", "weight_bits=4"),
        ("emu", "weight_bits=8"),
        ("sim", "weight_bits=8"),
    }
    assert {r["state"] for r in rows.values()} == {"succeeded"}
    cpu = rows[("cpu", "float")]["metrics"]
    assert cpu["samples"] == 200
    assert cpu["agreement"] == 1.0 and cpu["accuracy"] == cpu["float_accuracy"] > 0.7
    for bits in (4, 8):
        emu, sim = rows[("emu", f"weight_bits={bits}")]["metrics"], rows[("sim", f"weight_bits={bits}")]["metrics"]
        # the simulated RTL is bit-exact with the emulator: the same predictions, so the same accuracy
        assert (emu["accuracy"], emu["agreement"]) == (sim["accuracy"], sim["agreement"])
        assert sim["latency_cycles"] > 0 and sim["fmax_mhz"] is None  # generic: simulated, not placed
    assert (
        rows[("emu", "weight_bits=8")]["metrics"]["agreement"] >= rows[("emu", "weight_bits=4")]["metrics"]["agreement"]
    )
    for row in rows.values():
        m = row["metrics"]
        assert row["scenario"] == "SingleStream" and m["percentile"] == 90
        assert m["valid"] is True and m["validity"] == "VALID"
        assert m["queries"] >= 80 and m["throughput"] > 0
        latency = m["service_latency_us"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert m["service_latency_at_percentile_us"] == latency["p90"] == m["latency_us"]
    with sessions() as session:
        jobs = list(session.scalars(select(JobRow)))
    # emu and sim on one width share one firmware: two builds, five measurements
    assert sorted(j.kind for j in jobs) == ["bench"] * 5 + ["build"] * 2
    assert {j.state for j in jobs} == {"succeeded"}
    with (tmp_path / "report" / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 5 and {t["state"] for t in table} == {"succeeded"}
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("<svg") >= 2 and "weight_bits=8" in html
    listed = bench("results", "-o", "json", "--data", data, cwd=tmp_path)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 5
    # a second run builds nothing new: the firmware is in the build cache
    again = bench("run", spec, "--data", data, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    logs = bench("results", "-o", "json", "--data", data, cwd=tmp_path)
    assert len(json.loads(logs.stdout)) == 10


def test_predicted_targets_use_the_predictor_learned_from_stored_builds(
    tmp_path: Path, law_records: list[dict[str, Any]]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sessions = open_database(f"sqlite:///{data / 'gatewright.db'}")
    with sessions() as session:
        for record in law_records:
            row = BenchRunRow(**{k: record[k] for k in ("id", "experiment", "application", "target", "device")})
            row.batch, row.build_target, row.predicted = "law", record["build_target"], False
            row.measurement, row.optimization, row.state = "latency", "w", "succeeded"
            row.config, row.metrics, row.reason = record["config"], record["metrics"], ""
            session.add(row)
        session.commit()
    spec = experiment(tmp_path, "[ecp5-45k-pred]", sweep="{weight_bits: [6]}")
    done = bench("run", spec, "--data", data, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = [r for r in records(sessions) if r["experiment"] == "tiny"]
    m = run["metrics"]
    assert run["predicted"] is True and run["device"] == "emu" and run["build_target"] == "ecp5-45k"
    assert run["scenario"] is None and "service_latency_us" not in m  # nothing measured but accuracy
    assert m["accuracy"] > 0.7 and m["agreement"] > 0.9  # the quantized model on the emulator
    assert set(m["predicted_fields"]) >= {"luts", "fmax_mhz", "latency_cycles", "hw_latency_us"}
    from tests.bench.conftest import law

    truth = law(m["features"])  # the same law the stored builds follow
    assert m["luts"] == pytest.approx(truth["luts"], rel=0.35)
    assert m["latency_us"] == m["hw_latency_us"] == pytest.approx(m["latency_cycles"] / m["fmax_mhz"], rel=1e-3)
    assert m["predictor"]["luts"]["cv_mape"] < 0.25
    with sessions() as session:
        (build,) = [j for j in session.scalars(select(JobRow)) if j.kind == "build"]
    assert build.request["until"] == "quantize"  # a predicted target builds no hardware


def test_a_failing_build_fails_its_runs_with_the_reason_and_the_others_complete(tmp_path: Path) -> None:
    from tests import onnx_models

    sin = tmp_path / "sin.onnx"
    sin.write_bytes(
        onnx_models.make_model(
            [onnx_models.helper.make_node("Sin", ["input"], ["output"])], {}, ["batch", 8], "output", ["batch", 8]
        )
    )
    spec = experiment(tmp_path, "[cpu, emu]", sweep="{weight_bits: [8]}")
    spec.write_text(spec.read_text().replace(str(EXAMPLES / "mlp_8-16-3.onnx"), str(sin)))
    done = bench("run", spec, "--data", tmp_path / "data", cwd=tmp_path)
    assert done.returncode == 2
    assert "error: 1 of 2 runs failed" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    sessions = open_database(f"sqlite:///{tmp_path / 'data' / 'gatewright.db'}")
    rows = {r["target"]: r for r in records(sessions)}
    assert rows["cpu"]["state"] == "succeeded"
    assert rows["cpu"]["metrics"]["agreement"] == 1.0  # the float model agrees with itself
    assert rows["emu"]["state"] == "failed"
    assert "gatewright build exited with status 2" in rows["emu"]["reason"]
    assert "Sin" in rows["emu"]["reason"]  # the build's own error says which operator


def test_a_bad_experiment_file_runs_nothing(tmp_path: Path) -> None:
    spec = experiment(tmp_path, "[cpu, sim-86k]")
    done = bench("run", spec, "--data", tmp_path / "data", cwd=tmp_path)
    assert done.returncode == 2
    assert f"{spec}:13: experiments.tiny.targets[1]:" in done.stderr and "unknown target 'sim-86k'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # validated before anything was created
    check = bench("run", experiment(tmp_path, "[cpu, emu]"), "--check", cwd=tmp_path)
    assert check.returncode == 0 and "valid, 3 runs" in check.stdout
    assert not (tmp_path / "gatewright-data").exists()


def test_metrics_follow_the_runs(tmp_path: Path) -> None:
    runs = load(experiment(tmp_path, "[cpu, emu]")).runs()
    metrics = BenchMetrics()
    for index, run in enumerate(runs):
        metrics.state(f"r{index}", run, "queued")
    metrics.state("r0", runs[0], "measuring")
    metrics.progress("r0", runs[0], 40)
    metrics.progress("r0", runs[0], 100)
    metrics.progress("r0", runs[0], 90)  # an older line arriving late does not count backwards
    metrics.state("r0", runs[0], "succeeded")
    metrics.result(
        "r0", runs[0], {"service_latency_us": {"p50": 20.0, "p90": 25.0, "p99": 40.0}, "accuracy": 0.9, "luts": None}
    )
    text = generate_latest(metrics.registry).decode()
    assert 'gatewright_bench_runs{experiment="tiny",state="queued"} 2.0' in text
    assert 'gatewright_bench_runs{experiment="tiny",state="succeeded"} 1.0' in text
    assert 'gatewright_bench_queries_total{experiment="tiny",run="r0"} 100.0' in text
    assert 'quantile="0.9",run="r0",target="cpu"} 25.0' in text
    assert 'gatewright_bench_run_accuracy{experiment="tiny",optimization="float",run="r0",target="cpu"} 0.9' in text
    assert "gatewright_bench_run_luts{" not in text  # no FPGA, no LUT series
