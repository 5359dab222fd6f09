"""One bench run on one device: accuracy over the application's data, then a LoadGen scenario,
then the FPGA figures the bundle recorded. ``gatewright bench measure`` runs it in a job's process.

Accuracy is measured on every sample against the labels and against the float model (top-1
agreement; ONNX Runtime on the original model). Latency and throughput are what the device delivers
on this machine (ONNX Runtime, the integer emulator or the simulated RTL); ``hw_latency_us`` is what
the FPGA itself takes (the latency in cycles proven in simulation, over nextpnr's Fmax).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from gatewright import devices
from gatewright.bench.config import Run
from gatewright.bench.data import load_array, load_labels
from gatewright.bench.scenarios import ScenarioSettings, run_scenario
from gatewright.build.bundle import Bundle
from gatewright.devices.base import Model
from gatewright.errors import InputDataError

ACCURACY_BATCH = 256


def load_inputs(run: Run) -> tuple[np.ndarray, np.ndarray | None]:
    """The application's inputs (preprocessed) and labels, cut to ``samples``."""
    app = run.application
    x = app.preprocessing.apply(load_array(Path(app.data), app.data_key))
    labels = load_labels(Path(app.labels), app.labels_key) if app.labels else None
    if app.samples:
        x = x[: app.samples]
        labels = None if labels is None else labels[: app.samples]
    if labels is not None and len(labels) != len(x):
        raise InputDataError(f"{app.name}: {len(x)} input samples but {len(labels)} labels; give one label per sample")
    return x, labels


def classes(outputs: dict[str, Any], count: int) -> np.ndarray | None:
    """Predicted classes: an integer output with one value per sample (a label), else the arg-max of
    the first float output with more than one value per sample; None for other models."""
    arrays = [np.asarray(v) for v in outputs.values()]
    for array in arrays:
        if array.dtype.kind in "iu" and array.size == count:
            return array.reshape(count).astype(np.int64)
    for array in arrays:
        if array.dtype.kind == "f" and array.size > count and array.size % count == 0:
            return np.argmax(array.reshape(count, -1), axis=1).astype(np.int64)
    return None


class Runner:
    """Batches of sample indices through a loaded model, honouring a fixed batch size."""

    def __init__(self, model: Model, x: np.ndarray) -> None:
        if len(model.inputs) != 1:
            raise InputDataError(
                f"{model.name}: the bench feeds models with one input; this one has {len(model.inputs)}"
            )
        self.model, self.x, self.name = model, x, model.inputs[0].name
        first = model.inputs[0].shape[0] if model.inputs[0].shape else None
        self.fixed = first if isinstance(first, int) and first > 0 else None

    def __call__(self, indices: np.ndarray) -> dict[str, Any]:
        if self.fixed is None:
            return self.model.infer({self.name: self.x[indices]})
        parts: list[dict[str, Any]] = []
        for start in range(0, len(indices), self.fixed):
            chunk = indices[start : start + self.fixed]
            padded = np.resize(chunk, self.fixed)  # repeats samples to fill the model's fixed batch
            out = self.model.infer({self.name: self.x[padded]})
            parts.append({k: np.asarray(v)[: len(chunk)] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def accuracy_pass(call: Callable[[np.ndarray], dict[str, Any]], count: int) -> tuple[dict[str, np.ndarray], float]:
    """Every sample once, in batches; the outputs and the seconds it took."""
    parts: list[dict[str, Any]] = []
    start = time.perf_counter()
    for first in range(0, count, ACCURACY_BATCH):
        parts.append(call(np.arange(first, min(first + ACCURACY_BATCH, count))))
    seconds = time.perf_counter() - start
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}, seconds


def hardware_figures(bundle: Bundle | None) -> dict[str, Any]:
    """LUTs, FFs, DSPs, block RAMs, Fmax, latency and build time, as the bundle's build recorded them."""
    if bundle is None:
        return {}
    manifest = bundle.manifest
    results = manifest.get("results") or {}
    used = {name: (results.get(name) or {}).get("used") for name in ("luts", "ffs", "dsps", "brams")}
    synthesis = results.get("synthesis") or {}
    for name in used:  # a build that stopped after synthesis still has its counts
        if used[name] is None and name in synthesis:
            used[name] = synthesis[name]
    fmax = results.get("fmax_mhz")
    cycles = results.get("latency_cycles")
    interval = results.get("initiation_interval")
    return {
        **used,
        "fmax_mhz": fmax,
        "timing_met": results.get("timing_met"),
        "latency_cycles": cycles,
        "initiation_interval": interval,
        "hw_latency_us": None if not fmax or cycles is None else round(cycles / fmax, 4),
        "hw_throughput": None if not fmax or not interval else round(fmax * 1e6 / interval, 1),
        "build_s": build_seconds(manifest),
        "cache_key": manifest.get("cache_key"),
        "build": {  # what the firmware was built from and with
            "target": manifest.get("target"),
            "options": manifest.get("options"),
            "tools": manifest.get("tools"),
            "architecture": {
                k: (manifest.get("architecture") or {}).get(k)
                for k in ("clock_mhz", "reuse_factor", "pipeline_depth", "initiation_interval", "stages")
            },
        },
    }


def build_seconds(manifest: dict[str, Any]) -> float | None:
    """The build's wall-clock time, from its first step's start to the bundle's creation: refits
    included (an attempt whose place and route stalled is not among the recorded steps)."""
    steps = manifest.get("steps") or []
    try:
        first = datetime.fromisoformat(steps[0]["started"])
        return round((datetime.fromisoformat(manifest["created"]) - first).total_seconds(), 1)
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def environment() -> dict[str, Any]:
    """Where the run was measured: the machine and the versions that shape its figures."""
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **{name: version(name) for name in ("gatewright", "numpy", "onnxruntime", "mlcommons-loadgen")},
    }


def measure(
    run: Run,
    model_file: Path,
    bundle_dir: Path | None,
    emit: Callable[[str], None] = print,
    logdir: Path | None = None,
) -> dict[str, Any]:
    """Run ``run`` and return its metrics. ``model_file`` is the float model (local), ``bundle_dir``
    the firmware (None on cpu)."""
    x, labels = load_inputs(run)
    bundle = Bundle(bundle_dir) if bundle_dir is not None else None
    device = "emu" if run.target.predict else run.target.device
    metrics: dict[str, Any] = {"samples": len(x), "environment": environment()}
    with devices.open(device) as dev:
        model = dev.load(bundle if bundle is not None else model_file)
        call = Runner(model, x)
        emit(f"accuracy: {len(x)} samples through {device}")
        outputs, seconds = accuracy_pass(call, len(x))
        with devices.open("cpu") as cpu:  # the float model, the reference (as a fixed batch allows)
            expected, _ = accuracy_pass(Runner(cpu.load(model_file), x), len(x))
        predicted, float_classes = classes(outputs, len(x)), classes(expected, len(x))
        if predicted is not None and float_classes is not None:
            metrics["agreement"] = round(float(np.mean(predicted == float_classes)), 6)
        if labels is not None:
            metrics["accuracy"] = None if predicted is None else round(float(np.mean(predicted == labels)), 6)
            metrics["float_accuracy"] = (
                None if float_classes is None else round(float(np.mean(float_classes == labels)), 6)
            )
        emit(
            f"accuracy: {metrics.get('accuracy')} (float {metrics.get('float_accuracy')}), "
            f"agreement with the float model {metrics.get('agreement')}, {seconds:.2f} s"
        )
        if not run.target.predict:
            settings = ScenarioSettings(**run.measurement.scenario_settings())
            emit(f"scenario: {settings.scenario} (LoadGen), warm-up {settings.warmup_queries} queries")

            def submit(indices: np.ndarray, done: Callable[[], None]) -> None:
                model.submit({call.name: x[indices]}).add_done_callback(lambda _future: done())

            last = [time.monotonic()]

            def progress(queries: int) -> None:
                if time.monotonic() - last[0] >= 1.0:
                    last[0] = time.monotonic()
                    emit(f"@progress queries={queries}")

            scenario = run_scenario(settings, call, len(x), submit, progress, logdir)
            emit(f"@progress queries={scenario.queries}")
            metrics.update(
                scenario=scenario.scenario,
                service_latency_us={k: round(v, 2) for k, v in scenario.latency_us.items()},
                percentile=scenario.percentile,
                service_latency_at_percentile_us=None
                if scenario.latency_at_percentile_us is None
                else round(scenario.latency_at_percentile_us, 2),
                throughput=round(scenario.throughput, 2),
                queries=scenario.queries,
                valid=scenario.valid,
                validity=scenario.validity,
                invalid_reason=scenario.invalid_reason,
                loadgen=scenario.settings,
            )
            emit(
                f"scenario: {scenario.validity}, p50 {scenario.latency_us.get('p50', 0):.1f} us, "
                f"p{scenario.percentile or 0:g} {scenario.latency_at_percentile_us or 0:.1f} us, "
                f"{scenario.throughput:.1f} samples/s, {scenario.queries} queries"
                + (f" ({scenario.invalid_reason})" if scenario.invalid_reason else "")
            )
    metrics.update(hardware_figures(bundle if bundle is not None and not run.target.predict else None))
    headline = metrics.get("hw_latency_us")
    if headline is None:
        headline = metrics.get("service_latency_at_percentile_us")
    metrics["latency_us"] = headline
    return metrics


def write_result(path: Path, metrics: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(metrics, indent=1, default=str))
    temporary.replace(path)
