"""The four MLPerf scenarios, run by LoadGen against a system whose speed the test controls."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gatewright.bench.scenarios import ScenarioSettings, read_detail_log, run_scenario
from gatewright.errors import GatewrightError

SAMPLES = 64


class System:
    """Sleeps ``per_call`` seconds plus ``per_sample`` per sample, and counts what it was asked."""

    def __init__(self, per_call: float = 0.0005, per_sample: float = 0.0) -> None:
        self.per_call, self.per_sample = per_call, per_sample
        self.calls: list[int] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(4)

    def infer(self, indices: np.ndarray) -> None:
        assert indices.dtype == np.int64 and indices.min() >= 0 and indices.max() < SAMPLES
        time.sleep(self.per_call + self.per_sample * len(indices))
        with self.lock:
            self.calls.append(len(indices))

    def submit(self, indices: np.ndarray, done: object) -> None:
        def work() -> None:
            self.infer(indices)
            done()  # type: ignore[operator]

        self.pool.submit(work)


def quick(scenario: str, **fields: object) -> ScenarioSettings:
    return ScenarioSettings(
        scenario=scenario, warmup_queries=5, min_queries=50, min_duration_s=0.3, max_duration_s=10, **fields
    )


def test_single_stream_reports_p90_of_one_sample_queries(tmp_path: Path) -> None:
    system = System(per_call=0.001)
    progress: list[int] = []
    result = run_scenario(quick("SingleStream"), system.infer, SAMPLES, progress=progress.append, logdir=tmp_path)
    assert result.percentile == 90.0
    assert result.queries >= 50
    assert result.valid, result.invalid_reason
    # every query holds one sample and takes at least the system's 1 ms
    assert set(system.calls) == {1}
    assert 1000 <= result.latency_us["p50"] <= result.latency_us["p90"] <= result.latency_us["p99"]
    assert result.latency_at_percentile_us == result.latency_us["p90"]
    assert 100 < result.throughput < 1000  # at most one query per millisecond
    assert progress and progress == sorted(progress) and progress[-1] == result.queries
    assert (tmp_path / "mlperf_log_summary.txt").is_file()
    assert read_detail_log(tmp_path / "mlperf_log_detail.txt")["result_validity"] == "VALID"


def test_multi_stream_sends_queries_of_n_samples() -> None:
    system = System(per_call=0.0005, per_sample=0.0002)
    result = run_scenario(quick("MultiStream", samples_per_query=4), system.infer, SAMPLES)
    assert result.percentile == 99.0
    measured = system.calls[8:]  # after the warm-up's single and batch queries
    assert measured and set(measured) == {4}
    # a query of 4 samples takes at least 0.5 + 4 x 0.2 ms
    assert result.latency_us["min"] >= 1300
    assert result.throughput > 0


def test_server_scenario_meets_an_easy_latency_target_and_fails_an_impossible_one() -> None:
    system = System(per_call=0.0002)
    settings = quick("Server", target_qps=1000, target_latency_ms=50)
    easy = run_scenario(
        ScenarioSettings(**{**settings.__dict__, "min_queries": 600}), system.infer, SAMPLES, submit=system.submit
    )
    assert easy.valid, easy.invalid_reason
    assert easy.percentile == 99.0
    assert easy.latency_us["p99"] < 50_000
    assert easy.throughput == pytest.approx(1000, rel=0.25)  # Poisson arrivals at the target rate
    impossible = run_scenario(
        quick("Server", target_qps=1000, target_latency_ms=0.05), system.infer, SAMPLES, submit=system.submit
    )
    assert not impossible.valid
    assert impossible.validity == "INVALID"
    assert "queries over the latency target" in impossible.invalid_reason


def test_too_short_a_server_run_is_invalid_by_early_stopping() -> None:
    system = System(per_call=0.0002)
    result = run_scenario(
        quick("Server", target_qps=500, target_latency_ms=50), system.infer, SAMPLES, submit=system.submit
    )
    assert result.queries < 459  # fewer than LoadGen's early-stopping estimate of p99 needs
    assert not result.valid
    assert "early stopping" in result.invalid_reason and "more queries" in result.invalid_reason


def test_offline_runs_every_sample_in_one_query_in_chunks() -> None:
    system = System(per_call=0.0002, per_sample=0.00001)
    result = run_scenario(quick("Offline", offline_samples=5000), system.infer, SAMPLES)
    assert result.percentile is None and result.latency_at_percentile_us is None
    assert result.queries == 1
    # LoadGen asks for 1.1 x the expected samples over the minimum duration: at least 5000
    measured = sum(system.calls[6:])
    assert measured >= 5000
    assert max(system.calls) <= 1024
    assert result.throughput > 1000


def test_unknown_scenario_and_empty_data_are_refused() -> None:
    system = System()
    with pytest.raises(GatewrightError, match="unknown scenario 'Batch'"):
        run_scenario(ScenarioSettings(scenario="Batch"), system.infer, SAMPLES)
    with pytest.raises(GatewrightError, match="at least one sample"):
        run_scenario(ScenarioSettings(), system.infer, 0)
