"""The build pipeline: model in, firmware bundle out, one logged step at a time.

Steps run in order and ``until`` stops after one of them. This release has the ``quantize`` step
(intake, calibration, quantization, report, golden vectors); RTL generation and the tool chain add
``rtl, sim, synth, pnr, bitstream`` after it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

import gatewright
from gatewright.build import bundle as files
from gatewright.build.bundle import Bundle, write_json, writing
from gatewright.build.log import BuildLog
from gatewright.devices.emu import EmulatedModel
from gatewright.errors import GatewrightError, InputDataError
from gatewright.model import ModelGraph, intake
from gatewright.model.runtime import OnnxRunner
from gatewright.quant import Calibration, PrecisionConfig, QuantizedModel, as_batch, calibrate, quantize
from gatewright.quant.report import QuantReport, as_array, compare_outputs, hardware_report
from gatewright.targets import get_target

STEPS = ("quantize",)
GOLDEN_COUNT = 64
GOLDEN_SEED = 0


def tool_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("numpy", "onnx", "onnxruntime")},
    }


@dataclass
class QuantizedBuild:
    """Everything the quantize step produced, in memory."""

    graph: ModelGraph
    precision: PrecisionConfig
    calibration: Calibration | None
    calibration_sha256: str | None
    quantized: QuantizedModel
    split: dict[str, Any]

    def emulated(self) -> EmulatedModel:
        return EmulatedModel(
            self.graph.name,
            self.graph.inputs,
            self.graph.outputs,
            self.split,
            self.quantized,
            self.graph.host.model,
            self.graph.fixed_batch,
        )


def load_calibration(path: str | Path) -> np.ndarray:
    """Calibration data from ``.npy`` (or the single array of an ``.npz``)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise InputDataError(
                        f"{path}: holds {len(archive.files)} arrays ({', '.join(archive.files)}); "
                        "calibration needs one array of model inputs"
                    )
                return np.asarray(archive[archive.files[0]])
        return np.asarray(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        raise InputDataError(f"{path}: no such calibration file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"{path}: not a NumPy .npy/.npz file ({exc}); save it with numpy.save") from None


def quantize_model(
    graph: ModelGraph,
    calibration: np.ndarray | None = None,
    precision: PrecisionConfig | None = None,
) -> QuantizedBuild:
    """Calibrate (when data is given) and quantize a model that went through intake."""
    if len(graph.inputs) > 1:
        names = ", ".join(spec.name for spec in graph.inputs)
        raise GatewrightError(
            f"{graph.name}: the model has {len(graph.inputs)} inputs ({names}); gatewright quantizes models "
            "with one input. Serve it on the CPU (--device cpu)."
        )
    precision = precision or PrecisionConfig()
    data = None if calibration is None else as_batch(calibration, graph.hardware)
    ranges = calibrate(graph.hardware, data) if data is not None else None
    quantized = quantize(graph.hardware, precision, ranges)
    digest = (
        hashlib.sha256(np.ascontiguousarray(calibration).tobytes()).hexdigest() if calibration is not None else None
    )
    hardware = graph.hardware
    split = {
        "hardware": {
            "input": hardware.input.name,
            "output": hardware.output,
            "output_dtype": hardware.output_dtype,
            "output_transposed": hardware.output_transposed,
            "n_in": hardware.n_in,
            "n_out": hardware.n_out,
            "nodes": list(hardware.nodes),
        },
        "host": {
            "file": files.HOST_MODEL if graph.host.model else None,
            "inputs": list(graph.host.inputs),
            "outputs": list(graph.host.outputs),
            "nodes": list(graph.host.nodes),
        },
    }
    return QuantizedBuild(graph, precision, ranges, digest, quantized, split)


def build(
    model: str | Path,
    out: str | Path,
    target: str = "generic",
    until: str = STEPS[-1],
    calibration: str | Path | None = None,
    precision: PrecisionConfig | None = None,
    echo: Callable[[str], None] | None = None,
) -> tuple[Bundle, QuantReport]:
    """Build a bundle for ``target`` up to step ``until``, written atomically to ``out``."""
    target_info = get_target(target)
    if until not in STEPS:
        raise GatewrightError(f"unknown step '{until}'; this gatewright builds: {', '.join(STEPS)}")
    log = BuildLog(echo=echo)
    graph = intake(model)  # a file that is no valid model fails here, before any step starts
    # checked and flattened to (batch, n_in) once; every step below reads this array
    data = as_batch(load_calibration(calibration), graph.hardware) if calibration is not None else None
    with writing(out) as staging:
        with log.step("quantize", f"calibrate + quantize {model}") as record:
            result = quantize_model(graph, data, precision)
            if data is None:
                log.write(
                    "quantize",
                    "note",
                    "no calibration data: input and activations use "
                    "fixed<B,6> (docs/quantization.md); pass --calibration X.npy to calibrate",
                )
            golden_inputs, golden_source = _golden_inputs(result.graph, data)
            report, golden = _check(result, golden_inputs, data)
            record.summary = _summary(result, report)
        _write(staging, result, report, golden, golden_source, target_info.name, log, str(calibration or ""))
    return Bundle(out), report


def _golden_inputs(graph: ModelGraph, data: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Model-shaped inputs for the self-test: calibration samples, or seeded normal noise."""
    spec = graph.hardware.input
    assert spec.shape is not None
    tail = tuple(d for d in spec.shape[1:] if isinstance(d, int))  # partition guarantees fixed feature dims
    count = graph.fixed_batch or GOLDEN_COUNT
    if data is not None:
        flat = data[:count]
        if graph.fixed_batch and len(flat) < graph.fixed_batch:
            raise InputDataError(f"calibration data needs at least {graph.fixed_batch} samples (the model's batch)")
        source = f"first {len(flat)} calibration samples"
    else:
        flat = np.random.default_rng(GOLDEN_SEED).standard_normal((count, graph.hardware.n_in))
        source = f"{count} samples of normal(0, 1) noise, seed {GOLDEN_SEED}"
    return flat.reshape((len(flat), *tail)).astype(spec.dtype), source


def _check(
    result: QuantizedBuild, golden_inputs: np.ndarray, data: np.ndarray | None
) -> tuple[QuantReport, dict[str, np.ndarray]]:
    """Report on the calibration data (or the golden inputs) and compute the golden vectors."""
    graph = result.graph
    emulated = result.emulated()
    reference = OnnxRunner(graph.source, graph.fixed_batch)  # the float model, already checked by intake
    input_name = graph.hardware.input.name
    sample = golden_inputs if data is None else data
    report = hardware_report(graph.hardware, result.quantized, sample.reshape(len(sample), -1), result.calibration)
    shaped = sample.reshape((len(sample), *golden_inputs.shape[1:])).astype(golden_inputs.dtype)
    if graph.fixed_batch:
        shaped = shaped[: len(shaped) - len(shaped) % graph.fixed_batch]
    report.outputs = compare_outputs(
        graph.outputs, emulated.infer({input_name: shaped}), reference.run({input_name: shaped})
    )
    expected = emulated.infer({input_name: golden_inputs})
    golden = {f"input.{input_name}": golden_inputs}
    golden.update({f"output.{name}": as_array(value) for name, value in expected.items()})
    raw_in = emulated.emulator.quantize_input(golden_inputs)
    golden["hw.input_raw"] = raw_in.astype(np.int64)
    golden["hw.output_raw"] = emulated.emulator.run_raw(raw_in).astype(np.int64)
    return report, golden


def _summary(result: QuantizedBuild, report: QuantReport) -> str:
    parts = [f"{len(result.graph.hardware.dense_layers)} dense layers", f"input {result.quantized.input_format}"]
    if report.top1_agreement is not None:
        parts.append(f"top-1 agreement {report.top1_agreement:.2%}")
    saturated = report.input_saturated + sum(
        layer.output_saturated + layer.accumulator_saturated for layer in report.layers
    )
    parts.append(f"{saturated} saturated values on {report.samples} samples")
    return ", ".join(parts)


def _write(
    staging: Path,
    result: QuantizedBuild,
    report: QuantReport,
    golden: dict[str, np.ndarray],
    golden_source: str,
    target: str,
    log: BuildLog,
    calibration_label: str,
) -> None:
    graph = result.graph
    (staging / files.SOURCE_MODEL).write_bytes(graph.source)
    if graph.host.model:
        (staging / files.HOST_MODEL).write_bytes(graph.host.model)
    result.quantized.save(staging / files.QUANTIZED)
    write_json(staging / files.REPORT, report.to_json())
    np.savez(staging / files.GOLDEN, **golden)  # type: ignore[arg-type]  # numpy's stubs misread **arrays
    options = {
        "precision": result.precision.to_json(),
        "calibration_sha256": result.calibration_sha256,
    }
    tools = tool_versions()
    cache_key = hashlib.sha256(
        json.dumps(
            {
                "model": graph.sha256,
                "target": target,
                "options": options,
                "engine": gatewright.__version__,
                "tools": tools,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    manifest = {
        "schema_version": files.SCHEMA_VERSION,
        "model": {
            "name": graph.name,
            "sha256": graph.sha256,
            "file": files.SOURCE_MODEL,
            "opset": graph.opset,
            "producer": graph.producer,
            "fixed_batch": graph.fixed_batch,
        },
        "target": target,
        "engine": {"name": "gatewright", "version": gatewright.__version__},
        "tools": tools,
        "inputs": [spec.to_json() for spec in graph.inputs],
        "outputs": [spec.to_json() for spec in graph.outputs],
        "split": result.split,
        "quantization": {
            "file": files.QUANTIZED,
            "report": files.REPORT,
            "calibration": None
            if result.calibration is None
            else {
                "file": calibration_label,
                "samples": result.calibration.samples,
                "sha256": result.calibration_sha256,
            },
            "rounding": "RND: round to nearest, ties toward +infinity",
            "overflow": "SAT: saturate to the format's range",
            "formats": result.quantized.tensor_formats(),
        },
        "architecture": None,
        "results": {"macs": graph.hardware.macs},
        "golden": {"file": files.GOLDEN, "count": len(next(iter(golden.values()))), "source": golden_source},
        "options": options,
        "cache_key": cache_key,
        "steps": [step.to_json() for step in log.steps],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(staging / files.MANIFEST, manifest)
    (staging / files.LOG).write_text(log.text())
