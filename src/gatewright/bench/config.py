"""Experiment files: which model runs on which targets, measured how, built how; checked before anything runs.

An experiment file (YAML)::

    include: [common.yaml]             # optional; relative to this file; included files may include others
    applications:
      digits:
        model: digits_mlp.onnx         # a path relative to this file, or file://, s3://, oci://, http(s)://
        data: digits_test.npy          # model inputs: .npy, .npz (data_key: the array) or .csv
        labels: digits_test_labels.npy # optional (labels_key for an .npz)
        calibration: digits_train.npy  # optional (calibration_key); default: the data
        preprocessing: {scale: 0.0625, offset: 0, mean: null, std: null, shape: [64], dtype: float32}
        samples: 540                   # optional: only the first N samples (and labels)
    targets:
      cpu: {device: cpu}                          # ONNX Runtime on the float model (no build)
      emu-25k: {device: emu, build: ecp5-25k}     # a device and a build target (default: generic)
      far: {device: "remote://host:9000/sim"}     # devices: cpu, emu, sim, noop, board:NAME, remote://HOST:PORT/DEV
      ecp5-45k-pred: {predict: ecp5-45k}          # no build: the predictor's figures, accuracy on emu
      fast: "sim@ecp5-25k"                        # a shorthand: DEVICE[@BUILD] or TARGET-pred
    measurements:                      # scenario: SingleStream, MultiStream, Server or Offline
      latency: {scenario: SingleStream, warmup_queries: 50, min_queries: 200, min_duration_s: 2}
      server: {scenario: Server, target_qps: 500, target_latency_ms: 10}
    optimizations:
      w4a8: {weight_bits: 4, activation_bits: 8}  # also input_bits
      folded: {arch: folded, reuse: 64, clock_mhz: 50}
      custom: {precision: {defaults: {weight: 6}, layers: {fc1: {weight: 4}}}}  # as a precision file
    experiments:
      digits-sweep:
        application: digits
        targets: [cpu, emu-25k, "sim@ecp5-25k", ecp5-85k-pred]  # defined names or shorthands
        measurements: [latency]        # default: SingleStream with its defaults
        optimizations: [w4a8, folded]  # default: one with every default, named "default"
        sweep: {weight_bits: [4, 6, 8]}  # every combination, on top of each optimization

An experiment runs each target with each optimization under each measurement; a cpu target runs the
float model once per measurement (optimization "float"). Runs come in file order (included files
first), then by target, optimization and measurement. A name defined in a file overrides the one it
includes; two included files may not define the same name; unknown and duplicate keys are errors.
Every mistake is a ``ConfigError`` that starts with ``FILE:LINE:`` and the field's path.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gatewright.bench.data import SUFFIXES, Preprocessing
from gatewright.bench.yamlsource import (
    ConfigError,
    FieldProblem,
    Key,
    Lines,
    dotted,
    explain,
    fail,
    read_sections,
    unknown_key,
    validate,
)
from gatewright.build.hardware import HardwareOptions, unknown_arch
from gatewright.errors import InputDataError, PrecisionError
from gatewright.quant.precision import MAX_VALUE_BITS, PrecisionConfig
from gatewright.targets import TARGETS

SECTIONS = ("applications", "targets", "measurements", "optimizations", "experiments")
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
DEFAULT_PERCENTILE = {"SingleStream": 90.0, "MultiStream": 99.0, "Server": 99.0, "Offline": None}
SCENARIO_ONLY = {
    "samples_per_query": "MultiStream",
    "target_qps": "Server",
    "target_latency_ms": "Server",
    "offline_samples": "Offline",
}
URI_SCHEMES = ("file://", "s3://", "oci://", "http://", "https://")
LOCAL_DEVICES = ("cpu", "emu", "sim", "noop")
DEVICE_FORMS = "cpu, emu, sim, noop, board:NAME or remote://HOST:PORT/DEVICE"
CREDENTIALS = "give them in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GATEWRIGHT_OCI_USERNAME/PASSWORD)"
SHORTHAND = "DEVICE[@BUILD] (e.g. sim@ecp5-25k) or TARGET-pred (e.g. ecp5-45k-pred)"
MINIMAL = """a minimal experiment file is:
  applications:
    digits: {model: digits_mlp.onnx, data: digits_test.npy, labels: digits_test_labels.npy}
  experiments:
    first: {application: digits, targets: [cpu, emu]}"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PreprocessingFields(_Strict):
    scale: float = 1.0
    offset: float = 0.0
    mean: float | list[float] | None = None
    std: float | list[float] | None = None
    shape: list[int] | None = None
    dtype: str = "float32"

    @field_validator("std", "shape", "dtype")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            Preprocessing(**{str(info.field_name): value})
        except InputDataError as exc:
            raise ValueError(str(exc)) from None
        return value


class _ApplicationFields(_Strict):
    model: str
    data: str
    data_key: str | None = None
    labels: str | None = None
    labels_key: str | None = None
    calibration: str | None = None
    calibration_key: str | None = None
    preprocessing: _PreprocessingFields = _PreprocessingFields()
    samples: int | None = Field(default=None, ge=1)


class _TargetFields(_Strict):
    device: str | None = None
    build: str | None = None
    predict: str | None = None


class _MeasurementFields(_Strict):
    scenario: str = "SingleStream"
    warmup_queries: int = Field(default=32, ge=0)
    min_queries: int = Field(default=100, ge=1)
    min_duration_s: float = Field(default=1.0, ge=0)
    max_duration_s: float = Field(default=60.0, gt=0)
    samples_per_query: int = Field(default=8, ge=1)
    target_qps: float | None = Field(default=None, gt=0)  # None: derived at run time
    target_latency_ms: float = Field(default=10.0, gt=0)
    percentile: float | None = Field(default=None, gt=0, le=100)  # default: by scenario
    offline_samples: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _scenario(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        raw = data.get("scenario", "SingleStream")
        spelled = str(raw).lower().replace("-", "").replace("_", "")
        scenario = next((s for s in SCENARIOS if s.lower() == spelled), None)
        if scenario is None:
            raise FieldProblem(("scenario",), f"unknown scenario {raw!r}; choose one of {', '.join(SCENARIOS)}")
        # LoadGen's early stopping needs about 460 queries to vouch for a p99 (64 for a p90)
        min_queries = 600 if scenario in ("MultiStream", "Server") else 100
        return {"percentile": DEFAULT_PERCENTILE[scenario], "min_queries": min_queries, **data, "scenario": scenario}

    @model_validator(mode="after")
    def _consistent(self) -> _MeasurementFields:
        if self.min_duration_s > self.max_duration_s:
            raise FieldProblem(
                ("min_duration_s",),
                f"{self.min_duration_s:g} s is above max_duration_s "
                f"({self.max_duration_s:g} s); raise max_duration_s or lower min_duration_s",
            )
        for name, scenario in SCENARIO_ONLY.items():
            if self.scenario != scenario and getattr(self, name) != type(self).model_fields[name].default:
                raise FieldProblem(
                    (name,), f"applies to the {scenario} scenario only; remove it, or set scenario: {scenario}"
                )
        return self


class Measurement(_MeasurementFields):
    """How a run is measured: a LoadGen scenario and its settings."""

    name: str = "SingleStream"

    def scenario_settings(self) -> dict[str, Any]:
        """The fields of ``bench.scenarios.ScenarioSettings``."""
        return self.model_dump(exclude={"name"})

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class _OptimizationFields(_Strict):
    weight_bits: int | None = Field(default=None, ge=2, le=MAX_VALUE_BITS)
    activation_bits: int | None = Field(default=None, ge=2, le=MAX_VALUE_BITS)
    input_bits: int | None = Field(default=None, ge=2, le=MAX_VALUE_BITS)
    precision: dict[str, Any] | None = None  # a precision file's content: defaults and layers
    arch: str = "auto"
    reuse: int | None = Field(default=None, ge=1)
    clock_mhz: float | None = Field(default=None, gt=0, le=1000)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        if problem := unknown_arch(value):
            raise ValueError(problem)
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_precision(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> _OptimizationFields:
        if self.reuse is not None and self.arch != "folded":
            raise FieldProblem(("reuse",), "reuse sets how folded layers share their multipliers: set arch: folded")
        try:
            self.precision_config()
        except PrecisionError as exc:
            raise ValueError(str(exc)) from None
        return self

    def precision_config(self) -> PrecisionConfig:
        """The precision mapping, then the widths of weights, activations and input."""
        config = PrecisionConfig()
        config.apply_mapping(self.precision, "precision")
        for kind, bits in (
            ("weight", self.weight_bits),
            ("activation", self.activation_bits),
            ("input", self.input_bits),
        ):
            if bits is not None:
                config.set(kind, bits, f"{kind}_bits")
        return config

    def hardware_options(self) -> HardwareOptions:
        return HardwareOptions(self.arch, self.clock_mhz, self.reuse)


class Optimization(_OptimizationFields):
    """How the firmware is built: precision and architecture."""

    name: str = "default"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _check_precision(mapping: dict[str, Any] | None) -> None:
    """Apply the mapping to a fresh config; on a mistake, find the entry that makes it."""
    if mapping is None:
        return
    for key in mapping:
        if key not in ("defaults", "layers"):
            raise FieldProblem((key,), f"unknown key '{key}'; a precision mapping has defaults and layers")
    try:
        PrecisionConfig().apply_mapping(mapping, "precision")
        return
    except PrecisionError as exc:
        problem = str(exc).removeprefix("precision: ")
    for section in ("defaults", "layers"):
        entries = mapping.get(section)
        for key, value in entries.items() if isinstance(entries, dict) else ():
            pairs = value.items() if section == "layers" and isinstance(value, dict) else [(None, value)]
            for kind, one in pairs:
                try:
                    PrecisionConfig().apply_mapping({section: {key: one if kind is None else {kind: one}}}, "p")
                except PrecisionError as exc:
                    full = key if kind is None else f"{key}.{kind}"
                    message = str(exc).removeprefix(f"p: {section}: ").removeprefix(f"{full}: ")
                    raise FieldProblem((section, key) if kind is None else (section, key, kind), message) from None
    raise FieldProblem((), problem)


@dataclass(frozen=True)
class Application:
    """A model and its data, every path resolved (a local file as an absolute path, a URI as written)."""

    name: str
    model: str
    data: Path | str
    data_key: str | None = None
    labels: Path | str | None = None
    labels_key: str | None = None
    calibration: Path | str | None = None  # the data when not given
    calibration_key: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    samples: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        return {**data, "preprocessing": self.preprocessing.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Application:
        paths = {k: _path_or_uri(data[k]) for k in ("data", "labels", "calibration")}
        return cls(**{**data, **paths, "preprocessing": Preprocessing.from_json(data["preprocessing"])})


def _path_or_uri(value: str | None) -> Path | str | None:
    return value if value is None or "://" in value else Path(value)


@dataclass(frozen=True)
class TargetSpec:
    """Where a run runs: a device with the firmware built for ``build``, or the predictor for ``predict``."""

    name: str
    device: str
    build: str | None = None
    predict: str | None = None

    @property
    def kind(self) -> str:
        """``cpu`` (the float model on ONNX Runtime), ``fpga`` (built firmware) or ``predicted``."""
        if self.predict is not None:
            return "predicted"
        inner = self.device.removeprefix("remote://").partition("/")[2] if self.device.startswith("remote://") else ""
        return "cpu" if "cpu" in (self.device, inner) else "fpga"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Run:
    """One application on one target, built one way, measured one way."""

    experiment: str
    application: Application
    target: TargetSpec
    measurement: Measurement
    optimization: Optimization

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "application": self.application.to_json(),
            "target": self.target.to_json(),
            "measurement": self.measurement.to_json(),
            "optimization": self.optimization.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        return cls(
            data["experiment"],
            Application.from_json(data["application"]),
            TargetSpec(**data["target"]),
            Measurement.model_validate(data["measurement"]),
            Optimization.model_validate(data["optimization"]),
        )


@dataclass(frozen=True)
class Experiments:
    """A loaded experiment file: its definitions and the runs of each experiment, in file order."""

    path: Path
    applications: dict[str, Application]
    targets: dict[str, TargetSpec]
    measurements: dict[str, Measurement]
    optimizations: dict[str, Optimization]
    experiments: dict[str, list[Run]]

    def runs(self, only: list[str] | None = None) -> list[Run]:
        """Every run, or those of the experiments named in ``only`` (in file order)."""
        unknown = [name for name in only or [] if name not in self.experiments]
        if unknown:
            raise ConfigError(
                f"{self.path}: unknown experiment {', '.join(map(repr, unknown))}; defined "
                f"experiments: {', '.join(self.experiments)}"
            )
        return [run for name, runs in self.experiments.items() if only is None or name in only for run in runs]


def load(path: str | Path) -> Experiments:
    """Read, check and expand an experiment file; any mistake raises ConfigError with FILE:LINE:."""
    path = Path(path)
    sections, lines = read_sections(path, SECTIONS, "experiment file", MINIMAL)
    if not sections["experiments"]:
        fail(lines, (), f"no experiments; {MINIMAL}")
    apps = {name: _application(lines, name, value) for name, value in sections["applications"].items()}
    targets = {name: _target(lines, name, value, ("targets", name)) for name, value in sections["targets"].items()}
    measurements = {
        name: Measurement(name=name, **validate(lines, _MeasurementFields, value, ("measurements", name)).model_dump())
        for name, value in sections["measurements"].items()
    }
    optimizations = {
        name: Optimization(
            name=name, **validate(lines, _OptimizationFields, value, ("optimizations", name)).model_dump()
        )
        for name, value in sections["optimizations"].items()
    }
    defined = Experiments(path, apps, targets, measurements, optimizations, {})
    experiments = {name: _experiment(lines, defined, name, value) for name, value in sections["experiments"].items()}
    return Experiments(path, apps, targets, measurements, optimizations, experiments)


# checking: pydantic for fields, the rules between them here


def _application(lines: Lines, name: str, value: Any) -> Application:
    """An application with its files found: relative to the file it is written in; URIs kept as written."""
    path = ("applications", name)
    fields = validate(lines, _ApplicationFields, value, path)
    base = lines[path][0].parent

    def resolve(key: str) -> Path | str:
        text, at = getattr(fields, key), (*path, key)
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
            if not text.startswith(URI_SCHEMES):
                fail(lines, at, f"unknown scheme in '{text}'; use a local path or {', '.join(URI_SCHEMES)}")
            if "@" in urlsplit(text).netloc:
                fail(lines, at, f"the URI holds credentials (user:password@); {CREDENTIALS}")
            return str(text)
        file = (base / Path(text).expanduser()).resolve()
        if not file.is_file():
            fail(lines, at, f"no such file {file} (relative paths start at {base.resolve()})")
        if key != "model" and file.suffix.lower() not in SUFFIXES:
            fail(lines, at, f"'{file.name}' is not .npy, .npz or .csv; save the array with numpy.save")
        return file

    located = {key: None if getattr(fields, key) is None else resolve(key) for key in ("data", "labels", "calibration")}
    for key, file in located.items():
        if getattr(fields, f"{key}_key") is not None and not str(file).lower().endswith(".npz"):
            fail(lines, (*path, f"{key}_key"), f"names an array in an .npz file, and {key} is not one; remove it")
    data = located["data"]
    assert data is not None  # required
    return Application(
        name,
        str(resolve("model")),
        data,
        fields.data_key,
        located["labels"],
        fields.labels_key,
        located["calibration"] or data,
        fields.calibration_key if fields.calibration else fields.data_key,
        Preprocessing(**fields.preprocessing.model_dump()),
        fields.samples,
    )


def _shorthand(text: str) -> dict[str, str]:
    """``sim@ecp5-25k`` -> device and build; ``ecp5-45k-pred`` -> predict."""
    if text.endswith("-pred"):
        return {"predict": text.removesuffix("-pred")}
    device, at, build = text.rpartition("@")
    if at and not set(build) & set("/:?"):  # not the @host of a remote URI with credentials
        return {"device": device, "build": build}
    return {"device": text}


def _device_problem(device: str) -> str | None:
    if device in LOCAL_DEVICES:
        return None
    if device.startswith("board:"):
        return None if device.removeprefix("board:").split("?")[0] else "write board:NAME, e.g. board:ulx3s"
    if device.startswith("remote://"):
        address, _, inner = device.removeprefix("remote://").partition("/")
        if "@" in address:
            return "the URI holds credentials (user:password@); give the agent's token in GATEWRIGHT_TOKEN instead"
        parts = urlsplit(f"remote://{address}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port or not inner or inner.startswith("remote:"):
            return f"'{device}' is not a remote device; write remote://HOST:PORT/DEVICE, e.g. remote://gpu1:9000/sim"
        return _device_problem(inner)
    return f"unknown device '{device}'; write one of {DEVICE_FORMS}"


def _target(lines: Lines, name: str, value: Any, path: Key) -> TargetSpec:
    """A target from its definition (a mapping or a shorthand string), by the rules of devices and builds."""
    shorthand = isinstance(value, str)
    fields = validate(lines, _TargetFields, _shorthand(value) if shorthand else value, path)

    def reject(field: str, message: str) -> NoReturn:
        fail(lines, path if shorthand else (*path, field), message)

    pnr = ", ".join(t.name for t in TARGETS.values() if t.place_and_route)
    if fields.predict is not None:
        if fields.device is not None or fields.build is not None:
            reject("predict", "a predicted target is not built (its accuracy runs on emu): remove device and build")
        if fields.predict not in TARGETS or not TARGETS[fields.predict].place_and_route:
            reject(
                "predict", f"cannot predict '{fields.predict}'; the predictor knows the place-and-route targets {pnr}"
            )
        return TargetSpec(name, "emu", None, fields.predict)
    if fields.device is None:
        reject("device", f"required: a device ({DEVICE_FORMS}) or predict: TARGET")
    problem = _device_problem(fields.device)
    if problem:
        reject("device", problem)
    if TargetSpec(name, fields.device).kind == "cpu":
        if fields.build is not None:
            reject("build", "cpu runs the float model on ONNX Runtime: no build; remove it, or use emu or sim")
        return TargetSpec(name, fields.device)
    build = fields.build or "generic"
    if build not in TARGETS:
        reject("build", f"unknown build target '{build}'; choose one of {', '.join(TARGETS)}")
    if fields.device.startswith("board:") and not TARGETS[build].place_and_route:
        reject("build", f"a board runs a bitstream: give a place-and-route build target ({pnr})")
    return TargetSpec(name, fields.device, build)


class _ExperimentFields(_Strict):
    application: str
    targets: list[str] = Field(min_length=1)
    measurements: list[str] | None = Field(default=None, min_length=1)
    optimizations: list[str] | None = Field(default=None, min_length=1)
    sweep: dict[str, list[Any]] | None = None

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        for name, values in (value or {}).items():
            if name not in _OptimizationFields.model_fields:
                raise FieldProblem((name,), unknown_key(name, list(_OptimizationFields.model_fields)))
            if not values:
                raise FieldProblem((name,), "give at least one value, e.g. [4, 6, 8]")
        return value


def _experiment(lines: Lines, defined: Experiments, name: str, value: Any) -> list[Run]:
    path = ("experiments", name)
    fields = validate(lines, _ExperimentFields, value, path)
    app = _pick(lines, defined.applications, fields.application, (*path, "application"), "applications")
    targets: list[TargetSpec] = []
    for index, ref in enumerate(fields.targets):
        at = (*path, "targets", index)
        if ref in defined.targets:
            targets.append(defined.targets[ref])
        elif "@" in ref or ref.endswith("-pred") or ref in LOCAL_DEVICES or ref.startswith(("board:", "remote://")):
            targets.append(_target(lines, ref, ref, at))  # a shorthand, named as written
        else:
            _pick(lines, defined.targets, ref, at, "targets", f"; or a shorthand: {SHORTHAND}")
    measurements = [
        _pick(lines, defined.measurements, ref, (*path, "measurements", i), "measurements")
        for i, ref in enumerate(fields.measurements or [])
    ] or [Measurement()]
    optimizations = [
        _pick(lines, defined.optimizations, ref, (*path, "optimizations", i), "optimizations")
        for i, ref in enumerate(fields.optimizations or [])
    ] or [Optimization()]
    for key, chosen in (("targets", targets), ("measurements", measurements), ("optimizations", optimizations)):
        names = [item.name for item in chosen]
        twice = next((i for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            fail(lines, (*path, key, twice), f"'{names[twice]}' is listed twice; remove one")
    variants = _sweep(lines, optimizations, fields.sweep or {}, (*path, "sweep"))
    return [
        Run(name, app, target, measurement, optimization)
        for target in targets
        for optimization in ([Optimization(name="float")] if target.kind == "cpu" else variants)
        for measurement in measurements
    ]


def _pick(lines: Lines, defined: dict[str, Any], ref: str, at: Key, what: str, more: str = "") -> Any:
    if ref not in defined:
        close = difflib.get_close_matches(ref, list(defined), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        fail(lines, at, f"unknown {what[:-1]} '{ref}'; defined {what}: {', '.join(defined) or 'none'}{hint}{more}")
    return defined[ref]


def _sweep(lines: Lines, bases: list[Optimization], sweep: dict[str, list[Any]], path: Key) -> list[Optimization]:
    """Each combination of the swept values on top of each optimization, checked again."""
    if not sweep:
        return bases
    variants = []
    for base in bases:
        for combination in itertools.product(*sweep.values()):
            values = dict(zip(sweep, combination, strict=True))
            swept = [f"{k}={v if not isinstance(v, dict | list) else json.dumps(v)}" for k, v in values.items()]
            label = ",".join(([] if base.name == "default" else [base.name]) + swept)
            data = {**base.model_dump(exclude={"name"}), **values}
            try:
                variants.append(Optimization(name=label, **_OptimizationFields.model_validate(data).model_dump()))
            except ValidationError as exc:
                where, message = explain(exc, _OptimizationFields, data)
                at = (*path, where[0]) if where and where[0] in values else path
                inner = "" if where in ((), at[-1:]) else f"{dotted(where)}: "
                fail(lines, at, f"optimization '{label}': {inner}{message}")
    return variants
