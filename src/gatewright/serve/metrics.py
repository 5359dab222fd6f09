"""``/metrics`` for Prometheus, read at scrape time from the same statistics the protocol reports.

Names follow Triton's where Triton has them (``nv_inference_*``, cumulative counters in µs), so
Triton dashboards work unchanged; ``gatewright_device_*`` adds what only a device knows (its own
latency percentiles and, on the simulator, cycles).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gatewright.serve.server import InferenceServer

_LABELS = ["model", "version"]


class TritonCounter(Metric):
    """A cumulative counter named exactly as Triton names it, without the ``_total`` suffix that
    Triton's dashboards and alerts do not expect. prometheus-client writes every family typed
    "counter" with that suffix, so these are typed "untyped"; ``rate()`` works on them the same."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        super().__init__(name, documentation, "unknown")
        self.label_names = labels

    def add_metric(self, values: list[str], value: float) -> None:
        self.add_sample(self.name, dict(zip(self.label_names, values, strict=True)), value)


class ServerCollector(Collector):
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, labels: list[str] | None = None) -> TritonCounter:
            return TritonCounter(name, doc, labels or _LABELS)

        success = counter("nv_inference_request_success", "Number of successful inference requests, all batch sizes")
        failure = counter(
            "nv_inference_request_failure", "Number of failed inference requests, all batch sizes", [*_LABELS, "reason"]
        )
        count = counter("nv_inference_count", "Number of inferences performed (samples; a batch of n counts n)")
        execs = counter("nv_inference_exec_count", "Number of model executions performed (batches)")
        duration = counter("nv_inference_request_duration_us", "Cumulative inference request duration in µs")
        queue = counter("nv_inference_queue_duration_us", "Cumulative inference queuing duration in µs")
        comp_in = counter("nv_inference_compute_input_duration_us", "Cumulative compute input duration in µs")
        comp_infer = counter("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in µs")
        comp_out = counter("nv_inference_compute_output_duration_us", "Cumulative compute output duration in µs")
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count", "Requests waiting in the model's batcher", labels=_LABELS
        )
        device_labels = ["model", "version", "device"]
        latency = GaugeMetricFamily(
            "gatewright_device_latency_us",
            "Device-side latency of the model's recent executions in µs",
            labels=[*device_labels, "quantile"],
        )
        cycles = CounterMetricFamily(
            "gatewright_device_cycles", "Device clock cycles spent in the model's executions", labels=device_labels
        )
        device_errors = CounterMetricFamily(
            "gatewright_device_errors", "Executions the device failed", labels=device_labels
        )
        for name, versions in sorted(self.server.models.items()):
            for version, served in sorted(versions.items()):
                labels = [name, str(version)]
                s = served.stats
                success.add_metric(labels, s.success.count)
                for reason in ("REJECTED", "BACKEND", "OTHER"):
                    failure.add_metric([*labels, reason], s.failures.get(reason, 0))
                count.add_metric(labels, s.inference_count)
                execs.add_metric(labels, s.execution_count)
                duration.add_metric(labels, (s.success.ns + s.fail.ns) / 1000)
                queue.add_metric(labels, s.queue.ns / 1000)
                comp_in.add_metric(labels, s.compute_input.ns / 1000)
                comp_infer.add_metric(labels, s.compute_infer.ns / 1000)
                comp_out.add_metric(labels, s.compute_output.ns / 1000)
                pending.add_metric(labels, served.batcher.pending)
                model = served.model
                dev = [name, str(version), model.device.uri if model.device else ""]
                snap = model.counters.snapshot("m")
                for q, quantile in (("p50", "0.5"), ("p99", "0.99"), ("max", "1")):
                    latency.add_metric([*dev, quantile], snap[f"m.latency_us_{q}"])
                cycles.add_metric(dev, snap.get("m.cycles_total", 0))
                device_errors.add_metric(dev, snap.get("m.errors", 0))
        yield from (success, failure, count, execs, duration, queue, comp_in, comp_infer, comp_out, pending)
        yield from (latency, cycles, device_errors)


def registry_for(server: InferenceServer) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry
