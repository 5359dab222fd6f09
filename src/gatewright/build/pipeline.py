"""The build pipeline: model in, firmware bundle out, one logged step at a time.

Steps run in order and ``until`` stops after one of them. This release has the ``quantize`` step
(intake, calibration, quantization, report, golden vectors); RTL generation and the tool chain add
``rtl, sim, synth, pnr, bitstream`` after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

import gatewright
from gatewright.build import bundle as files
from gatewright.build import hardware as hw_steps
from gatewright.build.bundle import Bundle, write_json, writing
from gatewright.build.hardware import HardwareOptions, unknown_arch
from gatewright.build.log import BuildLog
from gatewright.cache import cache_root
from gatewright.devices.emu import EmulatedModel
from gatewright.errors import GatewrightError, InputDataError, ModelLoadError, ToolError
from gatewright.hw.plan import FitError
from gatewright.model import ModelGraph, intake
from gatewright.model.runtime import OnnxRunner
from gatewright.quant import Calibration, PrecisionConfig, QuantizedModel, as_batch, calibrate, quantize
from gatewright.quant.report import QuantReport, as_array, compare_outputs, hardware_report
from gatewright.targets import TARGETS, Target, get_target
from gatewright.toolchain.pnr import PnrResult, RoutingStalled
from gatewright.toolchain.tools import find_tool
from gatewright.toolchain.tools import tool_versions as toolchain_versions

STEPS = ("quantize", "rtl", "sim", "synth", "pnr", "bitstream")
GOLDEN_COUNT = 64
GOLDEN_SEED = 0
MAX_FIT_ATTEMPTS = 3
TARGET_FILL = 0.9  # synthesis may use at most this share of the target's LUTs (routing needs the rest)


def tool_versions(steps: tuple[str, ...] = STEPS[:1], target: Target | None = None) -> dict[str, str]:
    """Versions of the libraries and of the external tools the given steps run (part of the cache key)."""
    versions = {
        "python": platform.python_version(),
        **{name: version(name) for name in ("numpy", "onnx", "onnxruntime")},
    }
    if "rtl" in steps:
        versions["da4ml"] = version("da4ml")
    tools = ["verilator"] if "sim" in steps else []
    if target is not None and target.place_and_route:
        if "synth" in steps:
            tools.append("yosys")
        if "pnr" in steps:
            tools.append(f"nextpnr-{target.family}")
        if "bitstream" in steps:
            tools.append("ecppack" if target.family == "ecp5" else "icepack")
    versions.update(_tool_versions_cached(tools))
    return versions


def _tool_versions_cached(names: list[str]) -> dict[str, str]:
    """Asking a YoWASP tool its version takes a second; remember it per executable (path, size, mtime)."""
    found: dict[str, str] = {}
    store = cache_root() / "tool-versions.json"
    try:
        known: dict[str, str] = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    changed = False
    for name in names:
        program = find_tool(name)[0]
        executable = Path(shutil.which(program) or program)
        try:
            stat = executable.stat()
            fingerprint = f"{name}|{executable}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            fingerprint = f"{name}|{executable}"
        if fingerprint not in known:
            known[fingerprint] = toolchain_versions([name])[name]
            changed = True
        found[name] = known[fingerprint]
    if changed:
        with contextlib.suppress(OSError):
            store.parent.mkdir(parents=True, exist_ok=True)
            temporary = store.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(known, indent=1))
            os.replace(temporary, store)
    return found


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
    until: str | None = None,
    calibration: str | Path | None = None,
    precision: PrecisionConfig | None = None,
    echo: Callable[[str], None] | None = None,
    hardware: HardwareOptions | None = None,
    use_cache: bool = True,
) -> tuple[Bundle, QuantReport | None]:
    """Build a bundle for ``target`` up to step ``until``, written atomically to ``out``.

    An identical earlier request (same model bytes, target, options, steps, engine and tool
    versions) returns a copy of its bundle from the cache; the report is then None.
    """
    target_info = get_target(target)
    hardware = hardware or HardwareOptions()
    if until is not None and until not in STEPS:
        raise GatewrightError(f"unknown step '{until}'; the steps are: {', '.join(STEPS)}")
    if problem := unknown_arch(hardware.arch):
        raise GatewrightError(problem)
    if hardware.clock_mhz is not None and not 0 < hardware.clock_mhz <= 1000:
        raise GatewrightError(f"--clock-mhz {hardware.clock_mhz}: give a frequency between 0 and 1000 MHz")
    if hardware.reuse is not None and hardware.reuse < 1:
        raise GatewrightError(f"--reuse {hardware.reuse}: the reuse factor is a positive integer")
    if hardware.reuse is not None and hardware.arch != "folded":
        raise GatewrightError(
            f"--reuse sets how folded layers share their multipliers; --arch {hardware.arch} does not use it "
            "(add --arch folded, or leave --reuse out and let --arch auto choose)"
        )
    log = BuildLog(echo=echo)
    last = until or (STEPS[-1] if target_info.place_and_route else "sim")
    if not target_info.place_and_route and STEPS.index(last) > STEPS.index("sim"):
        raise GatewrightError(
            f"target {target} is RTL and simulation only: its last step is 'sim', not '{last}'; "
            f"choose an FPGA target (--target {', '.join(t for t in TARGETS if TARGETS[t].place_and_route)})"
        )
    steps = STEPS[: STEPS.index(last) + 1]
    key, tools, options = _request(model, target_info, steps, calibration, precision, hardware)
    cached = bundle_cache() / key
    if use_cache and Bundle.is_bundle(cached):
        with writing(out) as staging:
            shutil.copytree(cached, staging, dirs_exist_ok=True)
        log.write("build", "cached", f"identical request built before: {cached} (use --no-cache to rebuild)")
        return Bundle(out), None

    graph = intake(model)  # a file that is no valid model fails here, before any step starts
    # checked and flattened to (batch, n_in) once; every step below reads this array
    data = as_batch(load_calibration(calibration), graph.hardware) if calibration is not None else None
    with writing(out) as staging:
        try:
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
            hw = _hardware(staging, result, target_info, hardware, steps, log, golden, data)
            _write(
                staging,
                result,
                report,
                golden,
                golden_source,
                target_info.name,
                log,
                str(calibration or ""),
                hw,
                (tools, options, key),
            )
        except BaseException as exc:
            kept = _keep_logs(staging, Path(out), log)
            if isinstance(exc, GatewrightError) and kept:
                raise type(exc)(f"{exc}\n       step logs kept in {kept}") from None
            raise
    shutil.rmtree(Path(out).parent / f"{Path(out).name}.failed", ignore_errors=True)  # from an earlier failure
    if use_cache:
        _store(Path(out), cached)
    return Bundle(out), report


def _hardware(
    staging: Path,
    result: QuantizedBuild,
    target: Target,
    options: HardwareOptions,
    steps: tuple[str, ...],
    log: BuildLog,
    golden: dict[str, np.ndarray],
    data: np.ndarray | None,
) -> dict[str, Any]:
    """The steps after quantize; returns the manifest's architecture and results."""
    if "rtl" not in steps:
        return {}
    quantized, n_in = result.quantized, result.graph.hardware.n_in
    clock = hw_steps.clock_mhz(target, options)
    vectors = {"golden vectors": golden["hw.input_raw"]}
    if data is not None:
        vectors["calibration data"] = result.emulated().emulator.quantize_input(data).astype(np.int64)
    found: dict[str, Any] = {}
    scale, congestion = 1.0, 0
    for attempt in range(1, MAX_FIT_ATTEMPTS + 1):
        with log.step("rtl", f"generate RTL (--arch {options.arch}, attempt {attempt})") as record:
            design, chosen, ident = hw_steps.rtl_step(
                staging,
                quantized,
                n_in,
                target,
                options,
                lambda line: log.write("rtl", "plan", line),
                scale,
                congestion,
            )
            record.summary = (
                f"{len(design.files)} files, {len(design.stages)} stages, latency {design.latency} cycles, "
                f"II {design.interval}"
            )
        found = {"design": design, "ident": ident}
        if "sim" not in steps:
            break
        with log.step("sim", "verilator: build the simulator, stream golden + calibration vectors") as record:
            checked = hw_steps.sim_step(staging, design, quantized, vectors)
            record.summary = (
                "bit-exact on "
                + ", ".join(f"{n} {label}" for label, n in checked["vectors"].items())
                + f" (and with backpressure); latency {checked['latency_cycles']} cycles, II "
                f"{checked['initiation_interval']}" + (" (simulator reused)" if checked["simulator_reused"] else "")
            )
        found["sim"] = checked
        if "synth" not in steps:
            break
        with log.step("synth", f"yosys synth_{target.family} -top {hw_steps.BOARD_TOP}") as record:
            synthesized = hw_steps.synth_step(staging, design, target)
            cells = hw_steps.logic_cells(target, synthesized)
            record.summary = (
                f"{cells} LUTs of {target.luts}, {synthesized.ffs} FFs, {synthesized.dsps} DSPs of {target.dsps}, "
                f"{synthesized.brams} block RAMs"
            )
        found["synth"] = synthesized
        over = _overflow(target, cells, synthesized.dsps)
        if over:
            if options.arch != "auto" or attempt == MAX_FIT_ATTEMPTS:
                raise FitError(
                    f"the design does not fit {target.name}: {over}. "
                    + ("Try --arch auto." if options.arch != "auto" else "Choose a larger target or narrower formats.")
                )
            estimated = max(chosen.estimate.luts, 1)
            scale *= max(1.25, cells / (TARGET_FILL * target.luts) if cells > estimated else 1.25)
            log.write("synth", "refit", f"{over}: folding further (LUT estimates x{scale:.2f})")
            continue
        if "pnr" not in steps:
            break
        clock_arg = f"--{target.device} --package {target.package} --freq {clock:g}"
        try:
            with log.step("pnr", f"nextpnr-{target.family} {clock_arg}") as record:
                routed = hw_steps.pnr_step(staging, synthesized, target, clock)
                latency = found["sim"]["latency_cycles"] if "sim" in found else design.latency
                placed = _placed(target, routed, latency, synthesized.ffs)
                record.summary = (
                    f"{placed['luts']['used']} LUTs, {placed['dsps']['used']} DSPs, Fmax "
                    + (f"{routed.fmax_mhz:.1f} MHz" if routed.fmax_mhz else "n/a")
                    + ("" if routed.timing_met else f" (below the {clock:g} MHz constraint)")
                )
        except RoutingStalled as exc:
            if options.arch != "auto" or attempt == MAX_FIT_ATTEMPTS:
                raise ToolError(
                    f"{exc}. "
                    + ("Try --arch auto, which folds" if options.arch != "auto" else "Fold")
                    + " further (--arch folded --reuse R with a larger R), or choose a larger target."
                ) from None
            congestion += 1
            log.write("pnr", "refit", f"{exc}: folding further (congestion level {congestion})")
            continue
        except ToolError as exc:
            unplaceable = "Unable to place" in str(exc) or "no BELs remaining" in str(exc)
            if not unplaceable or options.arch != "auto" or attempt == MAX_FIT_ATTEMPTS:
                raise
            scale *= 1.25
            log.write("pnr", "refit", f"the design does not place: folding further (LUT estimates x{scale:.2f})")
            continue
        found["pnr"] = routed
        break
    design = found["design"]
    architecture = {
        "top": hw_steps.CORE,
        "board_top": hw_steps.BOARD_TOP,
        "design_id": f"{found['ident']:08x}",
        "baud": hw_steps.BAUD,
        "clock_mhz": clock,
        "n_in": design.n_in,
        "in_bits": design.in_bits,
        "n_out": design.n_out,
        "out_bits": design.out_bits,
        "stages": [stage.to_json() for stage in design.stages],
        "reuse_factor": max((stage.reuse_factor for stage in design.stages), default=1),
        "pipeline_depth": design.latency,
        "initiation_interval": design.interval,
        "rtl": hw_steps.RTL_DIR,
    }
    results: dict[str, Any] = {"latency_cycles": design.latency, "initiation_interval": design.interval}
    if "sim" in found:
        results.update(
            latency_cycles=found["sim"]["latency_cycles"],
            initiation_interval=found["sim"]["initiation_interval"],
            simulation={"bit_exact": True, "vectors": found["sim"]["vectors"]},
        )
    if "synth" in found:
        synthesized = found["synth"]
        results["synthesis"] = {
            "luts": hw_steps.logic_cells(target, synthesized),
            "ffs": synthesized.ffs,
            "dsps": synthesized.dsps,
            "brams": synthesized.brams,
            "cells": synthesized.cells,
        }
    if "pnr" in steps:
        routed = found["pnr"]
        results.update(_placed(target, routed, results["latency_cycles"], found["synth"].ffs))
        if not routed.timing_met:
            log.write(
                "pnr",
                "warn",
                f"timing not met at {clock:g} MHz: run the design at {results['fmax_mhz']} MHz "
                "or below, or rebuild with a lower --clock-mhz",
            )
        if "bitstream" in steps:
            packer = "ecppack" if target.family == "ecp5" else "icepack"
            with log.step("bitstream", packer) as record:
                bitstream = hw_steps.bitstream_step(staging, routed, target)
                record.summary = f"{bitstream.name}, {bitstream.stat().st_size} bytes"
            architecture["bitstream"] = bitstream.name
    return {"architecture": architecture, "results": results}


def _keep_logs(staging: Path, out: Path, log: BuildLog) -> Path | None:
    """After a failed step: the build log and the tool logs go to ``OUT.failed/`` (no bundle is published)."""
    kept = out.parent / f"{out.name}.failed"
    try:
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        (kept / files.LOG).write_text(log.text())
        reports = staging / hw_steps.REPORTS_DIR
        if reports.is_dir():
            for path in reports.iterdir():
                if path.suffix in (".log", ".ys", ".json") and path.is_file() and path.stat().st_size < 50_000_000:
                    shutil.copyfile(path, kept / path.name)
    except OSError:
        return None
    return kept


def _placed(target: Target, routed: PnrResult, latency_cycles: int, ffs: int) -> dict[str, Any]:
    """LUT, FF, DSP and block RAM used / available, Fmax and latency from nextpnr's report."""
    kinds = {
        "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD"},
        "ice40": {"luts": "ICESTORM_LC", "ffs": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM"},
    }[target.family]
    placed: dict[str, Any] = {}
    for name, bel in kinds.items():
        use = routed.utilization.get(bel)
        placed[name] = {"used": use.used if use else 0, "available": use.available if use else 0}
    fmax = routed.fmax_mhz
    if target.family == "ice40":  # a logic cell holds a LUT and a flip-flop: count flip-flops from synthesis
        placed["ffs"] = {"used": ffs, "available": placed["luts"]["available"]}
    placed["fmax_mhz"] = None if fmax is None else round(fmax, 2)
    placed["clock_mhz"] = routed.clock_mhz
    placed["timing_met"] = routed.timing_met
    placed["latency_ns"] = None if fmax is None else round(latency_cycles * 1000.0 / fmax, 1)
    return placed


def _overflow(target: Target, cells: int, dsps: int) -> str:
    problems = []
    if cells > TARGET_FILL * target.luts:
        problems.append(f"{cells} LUTs > {int(TARGET_FILL * 100)}% of {target.luts}")
    if dsps > target.dsps:
        problems.append(f"{dsps} DSPs > {target.dsps}")
    return ", ".join(problems)


def _read(path: str | Path, what: str, error: type[GatewrightError]) -> bytes:
    """A file's bytes for the cache key, or ``error`` saying why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None


def request_key(
    model: str | Path,
    target: str = "generic",
    calibration: str | Path | None = None,
    precision: PrecisionConfig | None = None,
    hardware: HardwareOptions | None = None,
) -> str:
    """The cache key ``build`` gives this request (all of the target's steps): the name its bundle is
    stored under, so a control plane finds firmware built before, here or on another machine."""
    target_info = get_target(target)
    last = STEPS[-1] if target_info.place_and_route else "sim"
    steps = STEPS[: STEPS.index(last) + 1]
    return _request(model, target_info, steps, calibration, precision, hardware or HardwareOptions())[0]


def _request(
    model: str | Path,
    target: Target,
    steps: tuple[str, ...],
    calibration: str | Path | None,
    precision: PrecisionConfig | None,
    hardware: HardwareOptions,
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The cache key of a build request, with the tool versions and options that went into it."""
    model_bytes = _read(model, "model file", ModelLoadError)
    calibration_bytes = _read(calibration, "calibration file", InputDataError) if calibration is not None else None
    tools = tool_versions(steps, target)
    options = {
        "precision": (precision or PrecisionConfig()).to_json(),
        "calibration_sha256": None if calibration_bytes is None else hashlib.sha256(calibration_bytes).hexdigest(),
        "hardware": hardware.to_json(),
        "steps": list(steps),
    }
    key = cache_key(hashlib.sha256(model_bytes).hexdigest(), target.name, options, tools)
    return key, tools, options


def cache_key(model_sha256: str, target: str, options: dict[str, Any], tools: dict[str, str]) -> str:
    return hashlib.sha256(
        json.dumps(
            {
                "model": model_sha256,
                "target": target,
                "options": options,
                "engine": gatewright.__version__,
                "tools": tools,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


def bundle_cache() -> Path:
    return cache_root() / "bundles"


def _store(bundle: Path, cached: Path) -> None:
    """Copy a finished bundle into the cache (atomically; a failure only costs the reuse)."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
        shutil.copytree(bundle, staging, dirs_exist_ok=True)
        if cached.exists():
            shutil.rmtree(staging, ignore_errors=True)
            return
        os.replace(staging, cached)
    except OSError:
        return


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
    hardware: dict[str, Any],
    build_options: tuple[dict[str, str], dict[str, Any], str],
) -> None:
    graph = result.graph
    tools, options, cache_key = build_options
    (staging / files.SOURCE_MODEL).write_bytes(graph.source)
    if graph.host.model:
        (staging / files.HOST_MODEL).write_bytes(graph.host.model)
    result.quantized.save(staging / files.QUANTIZED)
    write_json(staging / files.REPORT, report.to_json())
    np.savez(staging / files.GOLDEN, **golden)  # type: ignore[arg-type]  # numpy's stubs misread **arrays
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
        "architecture": hardware.get("architecture"),
        "results": {"macs": graph.hardware.macs, **hardware.get("results", {})},
        "golden": {"file": files.GOLDEN, "count": len(next(iter(golden.values()))), "source": golden_source},
        "options": options,
        "cache_key": cache_key,
        "steps": [step.to_json() for step in log.steps],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(staging / files.MANIFEST, manifest)
    (staging / files.LOG).write_text(log.text())
