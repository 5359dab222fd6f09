"""Prometheus metrics of running experiments (``gatewright bench run --metrics-port P``).

``deploy/grafana/gatewright-bench.json`` is a dashboard over exactly these series.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

if TYPE_CHECKING:
    from gatewright.bench.config import Run

STATES = ("queued", "building", "measuring", "succeeded", "failed")
RUN_LABELS = ("experiment", "run", "target", "optimization")


class BenchMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Gauge(
            "gatewright_bench_runs", "Bench runs by state", ("experiment", "state"), registry=self.registry
        )
        self.latency = Gauge(
            "gatewright_bench_run_latency_us",
            "Measured service latency of a run (microseconds)",
            (*RUN_LABELS, "quantile"),
            registry=self.registry,
        )
        self.throughput = Gauge(
            "gatewright_bench_run_throughput", "Measured samples per second", RUN_LABELS, registry=self.registry
        )
        self.accuracy = Gauge(
            "gatewright_bench_run_accuracy", "Top-1 accuracy (0..1)", RUN_LABELS, registry=self.registry
        )
        self.luts = Gauge("gatewright_bench_run_luts", "LUTs of the run's firmware", RUN_LABELS, registry=self.registry)
        self.fmax = Gauge(
            "gatewright_bench_run_fmax_mhz", "Fmax of the run's firmware", RUN_LABELS, registry=self.registry
        )
        self.queries = Counter(
            "gatewright_bench_queries", "Queries completed so far", ("experiment", "run"), registry=self.registry
        )
        self.build_seconds = Gauge(
            "gatewright_bench_build_seconds",
            "Seconds the firmware build took",
            ("experiment", "run"),
            registry=self.registry,
        )
        self._states: dict[str, tuple[str, str]] = {}  # run id -> (experiment, state)
        self._queries: dict[str, int] = {}

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def state(self, run_id: str, run: Run, state: str) -> None:
        self._states[run_id] = (run.experiment, state)
        tally = Tally(self._states.values())
        for experiment in {e for e, _ in self._states.values()}:
            for name in STATES:
                self.runs.labels(experiment, name).set(tally[(experiment, name)])

    def progress(self, run_id: str, run: Run, queries: int) -> None:
        """The run's measurement has completed ``queries`` queries so far."""
        done = self._queries.get(run_id, 0)
        if queries > done:
            self.queries.labels(run.experiment, run_id).inc(queries - done)
            self._queries[run_id] = queries

    def result(self, run_id: str, run: Run, metrics: dict[str, Any]) -> None:
        labels = (run.experiment, run_id, run.target.name, run.optimization.name)
        for quantile, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
            value = (metrics.get("service_latency_us") or {}).get(key)
            if value is not None:
                self.latency.labels(*labels, quantile).set(value)
        for gauge, key in (
            (self.throughput, "throughput"),
            (self.accuracy, "accuracy"),
            (self.luts, "luts"),
            (self.fmax, "fmax_mhz"),
        ):
            if metrics.get(key) is not None:
                gauge.labels(*labels).set(metrics[key])
        if metrics.get("build_s") is not None:
            self.build_seconds.labels(run.experiment, run_id).set(metrics["build_s"])
