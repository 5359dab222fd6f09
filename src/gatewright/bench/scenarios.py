"""Load scenarios as MLPerf defines them, run by MLPerf's own LoadGen (``mlcommons-loadgen``).

- SingleStream: one sample per query, the next query when the last one finished; p90 latency.
- MultiStream: ``samples_per_query`` samples per query, back to back; p99 latency per query.
- Server: one sample per query, Poisson arrivals at ``target_qps``; p99 latency against
  ``target_latency_ms`` (LoadGen's verdict says whether the system kept up).
- Offline: every sample in one query; samples per second.

Before LoadGen runs, a warm-up sends ``warmup_queries`` queries (caches, lazy initialization,
branch predictors) and measures what LoadGen needs to size its schedule: the single-sample latency,
the latency of a MultiStream query and the batch throughput. The stability rule is LoadGen's: a run
is VALID when it lasted ``min_duration_s``, answered ``min_queries`` queries and its early-stopping
estimate of the headline percentile holds (for Server also the latency target); each result keeps
LoadGen's verdict and its reason.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg
import numpy as np

from gatewright.errors import GatewrightError

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
DEFAULT_PERCENTILE = {"SingleStream": 90.0, "MultiStream": 99.0, "Server": 99.0, "Offline": None}
OFFLINE_CHUNK = 1024  # samples per device call in the Offline scenario
PERCENTILES = {"50.00": "p50", "90.00": "p90", "95.00": "p95", "97.00": "p97", "99.00": "p99", "99.90": "p99.9"}

# one inference of a batch of sample indices; returns the predicted outputs (ignored by LoadGen)
Infer = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class ScenarioSettings:
    scenario: str = "SingleStream"
    warmup_queries: int = 32
    min_queries: int = 100
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    samples_per_query: int = 8
    target_qps: float | None = None  # Server: None derives half the capacity measured in the warm-up
    target_latency_ms: float = 10.0
    percentile: float | None = None
    offline_samples: int | None = None

    @property
    def headline_percentile(self) -> float | None:
        return self.percentile if self.percentile is not None else DEFAULT_PERCENTILE[self.scenario]


@dataclass
class ScenarioResult:
    scenario: str
    latency_us: dict[str, float]  # p50 ... p99.9, mean, min, max (per query)
    percentile: float | None
    latency_at_percentile_us: float | None
    throughput: float  # samples per second
    queries: int
    valid: bool
    validity: str
    invalid_reason: str
    settings: dict[str, Any] = field(default_factory=dict)  # what LoadGen ran with, warm-up figures included

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_scenario(
    settings: ScenarioSettings,
    infer: Infer,
    sample_count: int,
    submit: Callable[[np.ndarray, Callable[[], None]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    logdir: Path | None = None,
) -> ScenarioResult:
    """Run one scenario. ``infer(indices)`` runs a batch of samples synchronously; ``submit(indices,
    done)`` (optional) queues one and calls ``done`` when it finished, so that the Server scenario's
    arrivals do not wait for earlier queries; ``progress(n)`` is told every completed query."""
    if settings.scenario not in SCENARIOS:
        raise GatewrightError(f"unknown scenario '{settings.scenario}'; choose one of {', '.join(SCENARIOS)}")
    if sample_count < 1:
        raise GatewrightError("a scenario needs at least one sample")
    warm = _warm_up(settings, infer, sample_count, submit)
    test = _test_settings(settings, warm)
    completed = 0
    clock = {"first": 0.0, "last": 0.0, "samples": 0.0}  # what LoadGen does not report for MultiStream
    lock = threading.Lock()

    def finished(ids: list[int]) -> None:
        nonlocal completed
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])
        with lock:
            completed += 1
            count = completed
            clock["last"] = time.perf_counter()
            clock["samples"] += len(ids)
        if progress is not None:
            progress(count)

    def issue(queries: list[Any]) -> None:
        if not clock["first"]:
            clock["first"] = time.perf_counter()
        ids = [q.id for q in queries]
        indices = np.fromiter((q.index for q in queries), dtype=np.int64, count=len(queries))
        if settings.scenario == "Server" and submit is not None:
            for one_id, index in zip(ids, indices, strict=True):
                submit(index[None], functools.partial(finished, [one_id]))
            return
        if settings.scenario == "Offline":
            for start in range(0, len(ids), OFFLINE_CHUNK):
                infer(indices[start : start + OFFLINE_CHUNK])
                lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids[start : start + OFFLINE_CHUNK]])
            with lock:
                clock["last"], clock["samples"] = time.perf_counter(), clock["samples"] + len(ids)
            if progress is not None:
                progress(1)
            return
        if settings.scenario == "Server":  # no queue: each query runs on LoadGen's issuing thread
            for one_id, index in zip(ids, indices, strict=True):
                infer(index[None])
                finished([one_id])
            return
        infer(indices)  # SingleStream and MultiStream: one query holds all its samples
        finished(ids)

    with tempfile.TemporaryDirectory(prefix="gatewright-loadgen-") as scratch:
        outdir = logdir or Path(scratch)
        outdir.mkdir(parents=True, exist_ok=True)
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(outdir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(sample_count, sample_count, lambda _samples: None, lambda _samples: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, test, log_settings)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        entries = read_detail_log(outdir / "mlperf_log_detail.txt")
    elapsed = clock["last"] - clock["first"]
    return _result(settings, entries, warm, clock["samples"] / elapsed if elapsed > 0 else None)


def _warm_up(
    settings: ScenarioSettings,
    infer: Infer,
    sample_count: int,
    submit: Callable[[np.ndarray, Callable[[], None]], None] | None,
) -> dict[str, float]:
    """Warm the device up and measure what LoadGen's schedule is sized from."""
    rng = np.random.default_rng(0)
    singles = []
    for _ in range(max(settings.warmup_queries, 3)):
        index = rng.integers(0, sample_count, size=1)
        start = time.perf_counter()
        infer(index)
        singles.append(time.perf_counter() - start)
    single = statistics.median(singles)
    warm = {"warmup_queries": float(len(singles)), "single_latency_s": single}
    if settings.scenario == "MultiStream":
        batches = []
        for _ in range(5):
            indices = rng.integers(0, sample_count, size=settings.samples_per_query)
            start = time.perf_counter()
            infer(indices)
            batches.append(time.perf_counter() - start)
        warm["query_latency_s"] = statistics.median(batches)
    if settings.scenario == "Server":  # the rate single-sample queries are served at, queued as LoadGen will
        burst = max(4 * settings.warmup_queries, 64)
        left = threading.Semaphore(0)
        start = time.perf_counter()
        for index in rng.integers(0, sample_count, size=burst):
            if submit is not None:
                submit(np.array([index]), left.release)
            else:
                infer(np.array([index]))
                left.release()
        for _ in range(burst):
            left.acquire()
        warm["capacity_qps"] = burst / max(time.perf_counter() - start, 1e-9)
    if settings.scenario == "Offline":
        size = min(OFFLINE_CHUNK, max(sample_count, 1))
        indices = rng.integers(0, sample_count, size=size)
        start = time.perf_counter()
        infer(indices)
        warm["batch_throughput"] = size / max(time.perf_counter() - start, 1e-9)
    return warm


def _test_settings(settings: ScenarioSettings, warm: dict[str, float]) -> Any:
    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, settings.scenario)
    test.mode = lg.TestMode.PerformanceOnly
    test.min_duration_ms = int(settings.min_duration_s * 1000)
    test.max_duration_ms = int(settings.max_duration_s * 1000)
    test.min_query_count = settings.min_queries
    # LoadGen pre-generates its schedule from the expected latency: one a little low costs some extra
    # queries, one too high leaves the run short of its minimum duration (INVALID)
    single_ns = max(int(warm["single_latency_s"] * 1e9 * 0.7), 1000)
    test.single_stream_expected_latency_ns = single_ns
    percentile = settings.headline_percentile
    if settings.scenario == "SingleStream" and percentile is not None:
        test.single_stream_target_latency_percentile = percentile / 100
    if settings.scenario == "MultiStream":
        test.multi_stream_samples_per_query = settings.samples_per_query
        test.multi_stream_expected_latency_ns = max(int(warm["query_latency_s"] * 1e9 * 0.7), 1000)
        if percentile is not None:
            test.multi_stream_target_latency_percentile = percentile / 100
    if settings.scenario == "Server":
        qps = settings.target_qps or 0.5 * warm["capacity_qps"]  # derived: half the measured capacity
        warm["target_qps"] = qps
        test.server_target_qps = qps
        test.server_target_latency_ns = int(settings.target_latency_ms * 1e6)
        if percentile is not None:
            test.server_target_latency_percentile = percentile / 100
    if settings.scenario == "Offline":
        expected = warm["batch_throughput"]
        if settings.offline_samples:  # LoadGen sizes the one query as expected QPS x min duration x 1.1
            expected = settings.offline_samples / (1.1 * max(settings.min_duration_s, 1e-3))
        test.offline_expected_qps = expected
    return test


def read_detail_log(path: Path) -> dict[str, Any]:
    """LoadGen's ``:::MLLOG`` entries (JSON lines) as key -> value; later entries win."""
    entries: dict[str, Any] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise GatewrightError(f"LoadGen wrote no detail log ({path}: {exc.strerror})") from None
    for line in text.splitlines():
        _, marker, payload = line.partition(":::MLLOG ")
        if not marker:
            continue
        try:
            entry = json.loads(payload)
        except json.JSONDecodeError:
            continue
        entries[entry.get("key", "")] = entry.get("value")
    return entries


def _result(
    settings: ScenarioSettings, entries: dict[str, Any], warm: dict[str, float], counted: float | None
) -> ScenarioResult:
    if "result_validity" not in entries:
        errors = [str(v) for k, v in entries.items() if k.startswith("error")]
        raise GatewrightError("LoadGen ended without a result" + (f": {'; '.join(errors)}" if errors else ""))
    latency = {}
    for stem, name in PERCENTILES.items():
        value = entries.get(f"result_{stem}_percentile_latency_ns")
        if value is not None:
            latency[name] = value / 1000
    for stat in ("mean", "min", "max"):
        value = entries.get(f"result_{stat}_latency_ns")
        if value is not None:
            latency[stat] = value / 1000
    percentile = settings.headline_percentile
    headline = None
    if percentile is not None:
        headline = latency.get(PERCENTILES.get(f"{percentile:.2f}", ""))
    if settings.scenario == "Offline":
        throughput = entries.get("result_samples_per_second")
    elif settings.scenario == "Server":
        throughput = entries.get("result_completed_samples_per_sec")
    elif settings.scenario == "SingleStream":  # queries (of one sample) per second, LoadGen's overhead included
        throughput = entries.get("result_qps_with_loadgen_overhead")
    else:  # MultiStream: LoadGen reports latencies only; samples completed over the time they took
        throughput = counted
    reasons = [str(v).strip() for k, v in entries.items() if k == "result_invalid_reason" or k.startswith("error")]
    if entries.get("result_perf_constraints_met") is False:
        reasons.append(f"{entries.get('result_overlatency_query_count', 'some')} queries over the latency target")
    if entries.get("result_min_duration_met") is False:
        reasons.append("shorter than the minimum duration")
    if entries.get("result_min_queries_met") is False:
        reasons.append("fewer queries than the minimum")
    if entries.get("early_stopping_met") is False:  # LoadGen's stability rule for the headline percentile
        reasons.append("early stopping: " + " ".join(str(entries.get("early_stopping_result", "")).split()))
    reasons = [r for r in reasons if r]
    validity = str(entries.get("result_validity"))
    return ScenarioResult(
        scenario=settings.scenario,
        latency_us=latency,
        percentile=percentile,
        latency_at_percentile_us=headline,
        throughput=float(throughput or 0.0),
        queries=int(entries.get("result_query_count") or 0),
        valid=validity == "VALID",
        validity=validity,
        invalid_reason=" ".join(reasons) if validity != "VALID" else "",
        settings={**settings.__dict__, "warmup": warm, "loadgen_version": entries.get("loadgen_version")},
    )
