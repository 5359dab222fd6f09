"""The advisor: which FPGA configurations of a model can meet a user's constraints, best first.

For each candidate (target, weight and activation bits, architecture) it checks, without building:
- operator support: the model's intake must give a hardware part (else only the CPU can run it);
- accuracy: the quantized model runs on the integer emulator (bit-exact with the hardware) over the
  user's data, against the labels (or, without labels, top-1 agreement with the float model);
- fit: predicted LUTs and DSPs against the target's (and ``--max-luts``);
- latency: the FPGA's own latency, predicted cycles over predicted Fmax.
Resources, Fmax and cycles come from the predictor learned from the bench results; with too few
results, from the architecture planner's analytic estimates at the target's clock (said so).

Candidates that meet every constraint come first, cheapest device first, then fewest LUTs, then
lowest latency. ``experiment_file`` writes the best ones as a bench experiment, so that
``gatewright advise --run N`` (or ``gatewright bench run``) builds and measures them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gatewright.bench.measure import classes
from gatewright.bench.predictor import Predictor, PredictorError, features
from gatewright.build.hardware import HardwareOptions
from gatewright.build.pipeline import TARGET_FILL, quantize_model
from gatewright.errors import GatewrightError
from gatewright.hw.plan import FitError
from gatewright.model import intake
from gatewright.model.runtime import OnnxRunner
from gatewright.quant import PrecisionConfig
from gatewright.targets import TARGETS

WEIGHT_BITS = (4, 6, 8)
ACTIVATION_BITS = (8, 16)


@dataclass(frozen=True)
class Constraints:
    max_latency_us: float | None = None
    min_accuracy: float | None = None
    max_luts: int | None = None
    family: str | None = None
    targets: tuple[str, ...] = ()


@dataclass
class Candidate:
    target: str
    weight_bits: int
    activation_bits: int
    arch: str = "auto"
    accuracy: float | None = None  # against the labels, else agreement with the float model
    accuracy_kind: str = "accuracy"
    estimate: dict[str, Any] = field(default_factory=dict)  # luts, dsps, fmax_mhz, latency_cycles, hw_latency_us
    source: str = "predictor"  # or "planner"
    fits: bool = True
    meets: bool = True
    why: list[str] = field(default_factory=list)  # the constraints it misses

    @property
    def name(self) -> str:
        return f"{self.target}-w{self.weight_bits}a{self.activation_bits}"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "name": self.name}


def advise(
    model: Path,
    constraints: Constraints,
    data: np.ndarray,
    labels: np.ndarray | None,
    calibration: np.ndarray | None,
    records: list[dict[str, Any]],
) -> tuple[list[Candidate], str]:
    """Every candidate, ranked; and a note on where the estimates came from."""
    graph = intake(model)  # raises UnsupportedModelError: no hardware part, nothing to advise on FPGAs
    targets = _targets(constraints)
    predictors: dict[str, Predictor | None] = {}
    notes = []
    for family in sorted({TARGETS[t].family for t in targets}):
        try:
            predictors[family] = Predictor.learn(records, family)
            notes.append(f"{family}: predictor learned from the bench results")
        except PredictorError as exc:
            predictors[family] = None
            notes.append(f"{family}: planner estimates at the target clock ({exc})")
    name = graph.inputs[0].name
    reference = OnnxRunner(graph.source, graph.fixed_batch)
    float_classes = classes(reference.run({name: data}), len(data))
    candidates = []
    for weight_bits, activation_bits in itertools.product(WEIGHT_BITS, ACTIVATION_BITS):
        precision = PrecisionConfig()
        precision.set("weight", weight_bits, "advisor")
        precision.set("activation", activation_bits, "advisor")
        precision.set("input", activation_bits, "advisor")
        built = quantize_model(graph, calibration if calibration is not None else data, precision)
        predicted = classes(built.emulated().infer({name: data}), len(data))
        accuracy, kind = _accuracy(predicted, labels, float_classes)
        for target in targets:
            candidate = Candidate(target, weight_bits, activation_bits, accuracy=accuracy, accuracy_kind=kind)
            _estimate(candidate, built.quantized, graph.hardware.n_in, predictors[TARGETS[target].family])
            judge(candidate, constraints)
            candidates.append(candidate)
    candidates.sort(
        key=lambda c: (
            not c.meets,
            TARGETS[c.target].luts,
            c.estimate.get("luts") or 0,
            c.estimate.get("hw_latency_us") or 0,
            -(c.accuracy or 0),
        )
    )
    return candidates, "; ".join(notes)


def _targets(constraints: Constraints) -> list[str]:
    names = list(constraints.targets) or [name for name, t in TARGETS.items() if t.place_and_route]
    for name in names:
        if name not in TARGETS or not TARGETS[name].place_and_route:
            choices = ", ".join(n for n, t in TARGETS.items() if t.place_and_route)
            raise GatewrightError(f"--target {name}: not an FPGA target; choose among {choices}")
    if constraints.family:
        families = sorted({t.family for t in TARGETS.values() if t.place_and_route})
        if constraints.family not in families:
            raise GatewrightError(f"--family {constraints.family}: unknown; choose one of {', '.join(families)}")
        names = [n for n in names if TARGETS[n].family == constraints.family]
    return names


def _accuracy(
    predicted: np.ndarray | None, labels: np.ndarray | None, reference: np.ndarray | None
) -> tuple[float | None, str]:
    if predicted is None:
        return None, "accuracy"
    if labels is not None:
        return float(np.mean(predicted == labels)), "accuracy"
    if reference is not None:
        return float(np.mean(predicted == reference)), "agreement"
    return None, "accuracy"


def _estimate(candidate: Candidate, quantized: Any, n_in: int, predictor: Predictor | None) -> None:
    target = TARGETS[candidate.target]
    try:
        row = features(quantized, n_in, candidate.target, HardwareOptions(arch=candidate.arch))
    except FitError as exc:
        candidate.fits, candidate.meets = False, False
        candidate.why.append(f"does not fit: {exc}")
        return
    if predictor is not None:
        candidate.estimate = dict(predictor.predict(row))
        candidate.source = "predictor"
    else:
        fmax = row["clock_mhz"]
        candidate.estimate = {
            "luts": row["plan_luts"],
            "dsps": row["plan_dsps"],
            "fmax_mhz": fmax,
            "latency_cycles": row["plan_latency"],
            "hw_latency_us": round(row["plan_latency"] / fmax, 4),
        }
        candidate.source = "planner"
    luts, dsps = candidate.estimate.get("luts"), candidate.estimate.get("dsps")
    if luts is not None and luts > TARGET_FILL * target.luts:
        candidate.fits = False
        candidate.why.append(f"~{luts:.0f} LUTs exceed {TARGET_FILL:.0%} of the {target.luts} of {target.name}")
    if dsps is not None and dsps > target.dsps:
        candidate.fits = False
        candidate.why.append(f"~{dsps:.0f} DSPs exceed the {target.dsps} of {target.name}")


def judge(candidate: Candidate, constraints: Constraints) -> None:
    estimate = candidate.estimate
    if constraints.max_luts is not None and (estimate.get("luts") or 0) > constraints.max_luts:
        candidate.why.append(f"~{estimate['luts']:.0f} LUTs > --max-luts {constraints.max_luts}")
    latency = estimate.get("hw_latency_us")
    if constraints.max_latency_us is not None and (latency is None or latency > constraints.max_latency_us):
        shown = "unknown" if latency is None else f"~{latency:.3f} us"
        candidate.why.append(f"latency {shown} > {constraints.max_latency_us:g} us")
    if constraints.min_accuracy is not None and (candidate.accuracy or 0) < constraints.min_accuracy:
        candidate.why.append(
            f"{candidate.accuracy_kind} {candidate.accuracy if candidate.accuracy is not None else 0:.2%} "
            f"< {constraints.min_accuracy:.2%}"
        )
    candidate.meets = candidate.fits and not candidate.why


def experiment_file(
    chosen: list[Candidate],
    model: Path,
    data: Path,
    labels: Path | None,
    calibration: Path | None,
    path: Path,
    device: str = "sim",
    scale: float = 1.0,
    offset: float = 0.0,
) -> Path:
    """A bench experiment that builds and measures ``chosen`` on ``device`` (written to ``path``)."""
    application: dict[str, Any] = {"model": str(model.resolve()), "data": str(data.resolve())}
    if scale != 1.0 or offset != 0.0:
        application["preprocessing"] = {"scale": scale, "offset": offset}
    if labels is not None:
        application["labels"] = str(labels.resolve())
    if calibration is not None:
        application["calibration"] = str(calibration.resolve())
    spec = {
        "applications": {"advised": application},
        "targets": {f"{device}-{c.target}": {"device": device, "build": c.target} for c in chosen},
        "measurements": {"latency": {"scenario": "SingleStream", "min_queries": 100, "min_duration_s": 1.0}},
        "optimizations": {
            c.name: {
                "weight_bits": c.weight_bits,
                "activation_bits": c.activation_bits,
                "input_bits": c.activation_bits,
            }
            for c in chosen
        },
        "experiments": {
            f"advised-{c.name}": {
                "application": "advised",
                "targets": [f"{device}-{c.target}"],
                "measurements": ["latency"],
                "optimizations": [c.name],
            }
            for c in chosen
        },
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(spec, sort_keys=False))
    temporary.replace(path)
    return path
