"""Experiment files: what they expand to, and the file, line and fix each mistake reports."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gatewright.bench.config import (
    Application,
    ConfigError,
    Experiments,
    Measurement,
    Optimization,
    Run,
    TargetSpec,
    load,
)
from gatewright.bench.data import Preprocessing, load_array, load_labels

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bench"

# line 1..4: an application, defined before every case below
HEAD = """\
applications:
  digits:
    model: model.onnx
    data: data.npy
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    np.save(tmp_path / "data.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "labels.npy", np.array([0, 1, 1]))
    np.savez(tmp_path / "arrays.npz", x=np.ones((3, 4)), y=np.array([1, 0, 1]))
    return tmp_path


def write(folder: Path, text: str, name: str = "exp.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


FULL = """\
applications:
  digits:
    model: model.onnx
    data: data.npy
    labels: labels.npy
    calibration: arrays.npz
    calibration_key: x
    preprocessing: {scale: 0.0625, offset: 0, mean: [1, 2, 3, 4], std: 2, shape: [1, 2, 2], dtype: float64}
    samples: 2
  remote:
    model: s3://models/digits.onnx
    data: arrays.npz
    data_key: x
targets:
  cpu: {device: cpu}
  emu-25k: {device: emu, build: ecp5-25k}
  fast: "sim@ecp5-85k"
  far: {device: "remote://gpu1:9000/sim"}
  ulx3s: {device: "board:ulx3s?port=/dev/ttyUSB0", build: ecp5-85k}
  p45: {predict: ecp5-45k}
measurements:
  latency: {scenario: singlestream, warmup_queries: 50, min_queries: 200, min_duration_s: 2, max_duration_s: 30}
  multi: {scenario: MultiStream, samples_per_query: 4}
  server: {scenario: server, target_qps: 500, target_latency_ms: 5}
  offline: {scenario: Offline, offline_samples: 1000, percentile: 50}
optimizations:
  w8: {weight_bits: 8}
  w4a8: {weight_bits: 4, activation_bits: 8, input_bits: 12}
  folded: {arch: folded, reuse: 64, clock_mhz: 50}
  custom: {precision: {defaults: {weight: 6}, layers: {fc1: {weight: "fixed<4,2>"}}}}
experiments:
  digits-sweep:
    application: digits
    targets: [cpu, emu-25k, "sim@ecp5-25k", ecp5-85k-pred]
    measurements: [latency, multi]
    optimizations: [w8, folded]
    sweep: {weight_bits: [4, 6, 8]}
  plain:
    application: remote
    targets: [far, p45]
"""


def test_every_field_is_read_and_resolved(folder: Path) -> None:
    experiments = load(write(folder, FULL))
    digits = experiments.applications["digits"]
    assert digits == Application(
        name="digits",
        model=str(folder / "model.onnx"),
        data=folder / "data.npy",
        labels=folder / "labels.npy",
        calibration=folder / "arrays.npz",
        calibration_key="x",
        preprocessing=Preprocessing(0.0625, 0.0, (1.0, 2.0, 3.0, 4.0), 2.0, (1, 2, 2), "float64"),
        samples=2,
    )
    remote = experiments.applications["remote"]
    assert remote.model == "s3://models/digits.onnx"  # a URI is kept as written
    assert (remote.data, remote.data_key) == (folder / "arrays.npz", "x")
    assert (remote.calibration, remote.calibration_key) == (remote.data, "x")  # default: the data
    assert remote.preprocessing == Preprocessing()

    targets = experiments.targets
    assert targets["cpu"] == TargetSpec("cpu", "cpu", None, None)
    assert targets["emu-25k"] == TargetSpec("emu-25k", "emu", "ecp5-25k")
    assert targets["fast"] == TargetSpec("fast", "sim", "ecp5-85k")
    assert targets["far"] == TargetSpec("far", "remote://gpu1:9000/sim", "generic")  # RTL and simulation only
    assert targets["ulx3s"].build == "ecp5-85k"
    assert targets["p45"] == TargetSpec("p45", "emu", None, "ecp5-45k")
    assert [t.kind for t in targets.values()] == ["cpu", "fpga", "fpga", "fpga", "fpga", "predicted"]

    latency, multi, server, offline = experiments.measurements.values()
    assert latency == Measurement(
        name="latency", scenario="SingleStream", warmup_queries=50, min_queries=200, min_duration_s=2, max_duration_s=30
    )
    assert latency.percentile == 90.0
    assert (multi.scenario, multi.samples_per_query, multi.percentile) == ("MultiStream", 4, 99.0)
    assert (server.scenario, server.target_qps, server.target_latency_ms, server.percentile) == ("Server", 500, 5, 99)
    assert (offline.offline_samples, offline.percentile) == (1000, 50.0)
    assert server.scenario_settings() == {
        "scenario": "Server",
        "warmup_queries": 32,
        "min_queries": 600,  # LoadGen's early stopping needs about 460 queries to vouch for a p99
        "min_duration_s": 1.0,
        "max_duration_s": 60.0,
        "samples_per_query": 8,
        "target_qps": 500.0,
        "target_latency_ms": 5.0,
        "percentile": 99.0,
        "offline_samples": None,
    }

    optimizations = experiments.optimizations
    w4a8 = optimizations["w4a8"].precision_config()
    assert (w4a8.spec("weight").bits, w4a8.spec("activation").bits, w4a8.spec("input").bits) == (4, 8, 12)
    custom = optimizations["custom"].precision_config()
    assert custom.spec("weight").bits == 6
    assert (custom.spec("weight", "fc1").bits, custom.spec("weight", "fc1").int_bits) == (4, 2)
    folded = optimizations["folded"].hardware_options()
    assert folded.to_json() == {"arch": "folded", "clock_mhz": 50.0, "reuse": 64}
    assert optimizations["w8"].hardware_options().arch == "auto"


def test_a_sweep_multiplies_fpga_runs_and_runs_cpu_once(folder: Path) -> None:
    runs = load(write(folder, FULL)).runs(["digits-sweep"])
    # cpu: 1 float run per measurement; 3 fpga targets x 2 optimizations x 3 widths, per measurement
    assert len(runs) == 2 + 3 * 2 * 3 * 2
    cpu = [run for run in runs if run.target.kind == "cpu"]
    assert [(r.optimization.name, r.measurement.name) for r in cpu] == [("float", "latency"), ("float", "multi")]
    assert cpu[0].optimization == Optimization(name="float")
    emu = [run for run in runs if run.target.name == "emu-25k"]
    assert [(r.optimization.name, r.measurement.name) for r in emu[:4]] == [
        ("w8,weight_bits=4", "latency"),
        ("w8,weight_bits=4", "multi"),
        ("w8,weight_bits=6", "latency"),
        ("w8,weight_bits=6", "multi"),
    ]
    assert emu[0].optimization.weight_bits == 4  # the sweep applies on top of w8
    folded = [r.optimization for r in emu if r.optimization.name.startswith("folded")]
    assert {(o.name, o.arch, o.reuse, o.weight_bits) for o in folded} == {
        (f"folded,weight_bits={bits}", "folded", 64, bits) for bits in (4, 6, 8)
    }
    assert list(dict.fromkeys(r.target.name for r in runs)) == ["cpu", "emu-25k", "sim@ecp5-25k", "ecp5-85k-pred"]
    shorthand = next(r.target for r in runs if r.target.name == "sim@ecp5-25k")
    assert shorthand == TargetSpec("sim@ecp5-25k", "sim", "ecp5-25k")
    predicted = next(r.target for r in runs if r.target.name == "ecp5-85k-pred")
    assert predicted == TargetSpec("ecp5-85k-pred", "emu", None, "ecp5-85k")


def test_defaults_name_the_optimization_default_and_a_bare_sweep_by_its_fields(folder: Path) -> None:
    path = write(
        folder,
        HEAD
        + """\
optimizations:
  folded: {arch: folded}
experiments:
  a: {application: digits, targets: [emu]}
  b:
    application: digits
    targets: [cpu, emu, sim]
    sweep: {weight_bits: [4, 6, 8]}
  c:
    application: digits
    targets: [emu]
    optimizations: [folded]
    sweep: {reuse: [16, 32], clock_mhz: [50]}
""",
    )
    experiments = load(path)
    (a,) = experiments.experiments["a"]
    assert (a.optimization.name, a.measurement) == ("default", Measurement(name="SingleStream"))
    assert a.target == TargetSpec("emu", "emu", "generic")
    b = experiments.experiments["b"]
    assert len(b) == 1 + 2 * 3  # 3 targets x 3 widths, cpu once
    assert [r.optimization.name for r in b] == ["float"] + ["weight_bits=4", "weight_bits=6", "weight_bits=8"] * 2
    assert [r.optimization.name for r in experiments.experiments["c"]] == [
        "folded,reuse=16,clock_mhz=50",
        "folded,reuse=32,clock_mhz=50",
    ]
    assert [r.experiment for r in experiments.runs()] == ["a"] + ["b"] * 7 + ["c"] * 2  # file order


def test_a_run_survives_json(folder: Path) -> None:
    runs = load(write(folder, FULL)).runs()
    for run in runs:
        shipped = json.loads(json.dumps(run.to_json()))
        assert Run.from_json(shipped) == run
    assert runs[3].to_json()["application"]["data"] == str(folder / "data.npy")
    assert runs[3].to_json()["application"]["preprocessing"]["shape"] == [1, 2, 2]


def test_only_runs_the_experiments_asked_for(folder: Path) -> None:
    experiments = load(write(folder, FULL))
    assert {r.experiment for r in experiments.runs(["plain"])} == {"plain"}
    assert len(experiments.runs(["plain"])) == 2
    with pytest.raises(
        ConfigError, match=r"exp.yaml: unknown experiment 'nope'; defined experiments: digits-sweep, plain"
    ):
        experiments.runs(["nope"])


def test_the_example_bench_loads_with_its_data(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        applications:
          digits:
            model: {EXAMPLES}/digits_mlp.onnx
            data: {EXAMPLES}/digits_test.npy
            labels: {EXAMPLES}/digits_test_labels.npy
            calibration: {EXAMPLES}/digits_train.npy
            preprocessing: {{scale: 0.0625, shape: [64]}}
            samples: 100
        experiments:
          digits: {{application: digits, targets: [cpu, emu@ecp5-25k]}}
        """,
    )
    app = load(path).applications["digits"]
    assert app.model == str(EXAMPLES / "digits_mlp.onnx")
    x = app.preprocessing.apply(load_array(Path(app.data)))
    assert (x.shape, x.dtype, float(x.min()), float(x.max())) == ((540, 64), np.float32, 0.0, 1.0)
    assert load_labels(Path(str(app.labels))).shape == (540,)


def test_the_example_experiment_file_loads() -> None:
    example = EXAMPLES / "digits.yaml"
    experiments = load(example)
    runs = experiments.runs()
    # one cpu run, then emu and sim on two parts and a predicted part, at three weight widths
    assert len(runs) == 1 + 5 * 3
    assert {r.optimization.name for r in runs} == {"float", "weight_bits=4", "weight_bits=6", "weight_bits=8"}
    assert len(load(EXAMPLES / "sweep.yaml").runs()) == 5 * 3 + 2 * 3
    for app in experiments.applications.values():
        assert Path(app.model).is_file()
        assert Path(app.data).is_file()


def test_includes_resolve_paths_against_their_own_file_and_are_overridden(folder: Path) -> None:
    (folder / "shared").mkdir()
    np.save(folder / "shared" / "other.npy", np.ones((2, 4)))
    write(
        folder,
        """\
        applications:
          other: {model: ../model.onnx, data: other.npy}
        targets:
          fast: sim@ecp5-25k
        measurements:
          latency: {scenario: Offline}
        """,
        "shared/common.yaml",
    )
    path = write(
        folder,
        HEAD
        + """\
include: [shared/common.yaml]
measurements:
  latency: {scenario: SingleStream}
experiments:
  x: {application: other, targets: [fast], measurements: [latency]}
""",
    )
    experiments = load(path)
    assert experiments.applications["other"].data == folder / "shared" / "other.npy"
    assert experiments.applications["other"].model == str(folder / "model.onnx")
    assert experiments.measurements["latency"].scenario == "SingleStream"  # the including file wins
    assert list(experiments.applications) == ["other", "digits"]


def test_yaml_merge_keys_are_followed(folder: Path) -> None:
    path = write(
        folder,
        HEAD
        + """\
measurements:
  base: &base {scenario: Server, target_qps: 100}
  strict:
    <<: *base
    target_latency_ms: 2
experiments:
  x: {application: digits, targets: [cpu], measurements: [base, strict]}
""",
    )
    strict = load(path).measurements["strict"]
    assert (strict.scenario, strict.target_qps, strict.target_latency_ms) == ("Server", 100, 2)


EXPERIMENT = "experiments:\n  x: {application: digits, targets: [emu]}\n"  # lines 5-6 after HEAD

ERRORS = [
    # (the file after HEAD, the line, a fragment of the message)
    (
        "experiments:\n  x:\n    application: digits\n    tragets: [cpu]\n",
        8,
        "experiments.x.tragets: unknown key 'tragets'; did you mean 'targets'?",
    ),
    ("experimnts: {}\n", 5, "experimnts: unknown key 'experimnts'; did you mean 'experiments'?"),
    (
        "measurements:\n  m:\n    scenario: Streaming\n" + EXPERIMENT,
        7,
        "measurements.m.scenario: unknown scenario 'Streaming'; choose one of SingleStream, MultiStream, Server, "
        "Offline",
    ),
    (
        "measurements:\n  m: {scenario: Server, samples_per_query: 4}\n" + EXPERIMENT,
        6,
        "measurements.m.samples_per_query: applies to the MultiStream scenario only",
    ),
    (
        "measurements:\n  m:\n    min_duration_s: 90\n" + EXPERIMENT,
        7,
        "measurements.m.min_duration_s: 90 s is above max_duration_s (60 s)",
    ),
    (
        "measurements:\n  m:\n    warmup_queries: -1\n" + EXPERIMENT,
        7,
        "measurements.m.warmup_queries: Input should be greater than or equal to 0 (got -1)",
    ),
    (
        "targets:\n  cpu: {device: cpu}\n  emu-25k: emu@ecp5-25k\n  sim-85k: sim@ecp5-85k\n"
        "experiments:\n  sweep:\n    application: digits\n    targets:\n"
        "      - cpu\n      - emu-25k\n      - sim-86k\n",
        15,
        "experiments.sweep.targets[2]: unknown target 'sim-86k'; defined targets: cpu, emu-25k, sim-85k",
    ),
    (
        "targets:\n  c:\n    device: cpu\n    build: ecp5-25k\n" + EXPERIMENT,
        8,
        "targets.c.build: cpu runs the float model on ONNX Runtime: no build; remove it, or use emu or sim",
    ),
    (
        "targets:\n  t:\n    devce: sim\n" + EXPERIMENT,
        7,
        "targets.t.devce: unknown key 'devce'; did you mean 'device'?",
    ),
    ("targets:\n  t: {device: cuda}\n" + EXPERIMENT, 6, "targets.t.device: unknown device 'cuda'; write one of cpu"),
    ("targets:\n  t: {device: sim, build: ecp5-26k}\n" + EXPERIMENT, 6, "unknown build target 'ecp5-26k'"),
    ("targets:\n  t: {predict: ecp5-45k, device: emu}\n" + EXPERIMENT, 6, "a predicted target is not built"),
    ("targets:\n  t: generic-pred\n" + EXPERIMENT, 6, "targets.t: cannot predict 'generic'"),
    ("targets:\n  t: board:ulx3s\n" + EXPERIMENT, 6, "a board runs a bitstream: give a place-and-route build target"),
    ("targets:\n  t: 'remote://me:secret@gpu1:9000/sim'\n" + EXPERIMENT, 6, "the URI holds credentials"),
    ("targets:\n  t: 'remote://gpu1/sim'\n" + EXPERIMENT, 6, "write remote://HOST:PORT/DEVICE"),
    ("experiments:\n  x:\n    application: digits\n    targets: [cpu, emu@ecp5-99k]\n", 8, "experiments.x.targets[1]"),
    (
        "experiments:\n  x: {application: digts, targets: [emu]}\n",
        6,
        "unknown application 'digts'; defined applications",
    ),
    ("experiments:\n  x: {application: digits, targets: [emu, emu]}\n", 6, "'emu' is listed twice"),
    (
        "experiments:\n  x: {application: digits, targets: []}\n",
        6,
        "experiments.x.targets: List should have at least 1",
    ),
    ("experiments:\n  x:\n    application: digits\n", 6, "experiments.x.targets: required; add targets: ..."),
    (
        "experiments:\n  x: {application: digits, targets: [emu], measurements: [fast]}\n",
        6,
        "unknown measurement 'fast'; defined measurements: none",
    ),
    (
        "optimizations:\n  o:\n    weight_bits: 8\n    reuse: 4\n" + EXPERIMENT,
        8,
        "optimizations.o.reuse: reuse sets how folded layers share their multipliers: set arch: folded",
    ),
    (
        "optimizations:\n  o: {arch: pipelined}\n" + EXPERIMENT,
        6,
        "unknown architecture 'pipelined'; choose one of auto",
    ),
    ("optimizations:\n  o: {clock_mhz: 2000}\n" + EXPERIMENT, 6, "optimizations.o.clock_mhz: Input should be less"),
    ("optimizations:\n  o: {weight_bits: 1}\n" + EXPERIMENT, 6, "optimizations.o.weight_bits: Input should be greater"),
    (
        "optimizations:\n  o:\n    precision:\n      defaults:\n        weight: 6\n        activaton: 8\n" + EXPERIMENT,
        10,
        "optimizations.o.precision.defaults.activaton: unknown quantity 'activaton'; use one of input, weight",
    ),
    (
        "optimizations:\n  o:\n    precision:\n      layers:\n        fc1:\n          weight: fixed<4>\n" + EXPERIMENT,
        10,
        "optimizations.o.precision.layers.fc1.weight: 'fixed<4>' is not a fixed-point format",
    ),
    (
        "optimizations:\n  o:\n    precision: {default: {weight: 4}}\n" + EXPERIMENT,
        7,
        "optimizations.o.precision.default: unknown key 'default'; a precision mapping has defaults and layers",
    ),
    (
        "experiments:\n  x:\n    application: digits\n    targets: [emu]\n    sweep:\n      reuse: [4, 8]\n",
        10,
        "experiments.x.sweep.reuse: optimization 'reuse=4': reuse sets how folded layers share their multipliers",
    ),
    (
        "experiments:\n  x:\n    application: digits\n    targets: [emu]\n    sweep:\n      weight_bit: [4]\n",
        10,
        "experiments.x.sweep.weight_bit: unknown key 'weight_bit'; did you mean 'weight_bits'?",
    ),
    (
        "experiments:\n  x:\n    application: digits\n    targets: [emu]\n    sweep:\n      weight_bits: []\n",
        10,
        "experiments.x.sweep.weight_bits: give at least one value",
    ),
    ("experiments:\n  x: {application: digits, targets: [emu]}\n  x: {}\n", 7, "experiments.x: duplicate key 'x'"),
    ("experiments:\n  x: {application: digits, targets: [emu\n", 7, "not valid YAML: expected ',' or ']'"),
    ("experiments:\n  x: [emu]\n", 6, "experiments.x: must be a mapping (key: value, ...)"),
    ("experiments: [x]\n", 5, "experiments: must be a mapping of names to definitions"),
    ("", 1, "no experiments; a minimal experiment file is:"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), ERRORS)
def test_each_mistake_names_its_file_line_and_fix(folder: Path, text: str, line: int, fragment: str) -> None:
    path = write(folder, HEAD + text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


@pytest.mark.parametrize(
    ("application", "line", "fragment"),
    [
        ("    model: model.onnx\n    data: nothere.npy\n", 4, "applications.digits.data: no such file"),
        ("    model: gone.onnx\n    data: data.npy\n", 3, "applications.digits.model: no such file"),
        ("    model: ftp://host/m.onnx\n    data: data.npy\n", 3, "unknown scheme in 'ftp://host/m.onnx'"),
        ("    model: s3://key:secret@bucket/m.onnx\n    data: data.npy\n", 3, "the URI holds credentials"),
        ("    model: model.onnx\n    data: model.onnx\n", 4, "'model.onnx' is not .npy, .npz or .csv"),
        ("    model: model.onnx\n    data: data.npy\n    data_key: x\n", 5, "data_key: names an array in an .npz"),
        ("    data: data.npy\n", 2, "applications.digits.model: required; add model: ..."),
        ("    model: model.onnx\n    data: data.npy\n    samples: 0\n", 5, "samples: Input should be greater than"),
        (
            "    model: model.onnx\n    data: data.npy\n    preprocessing:\n      scal: 2\n",
            6,
            "applications.digits.preprocessing.scal: unknown key 'scal'; did you mean 'scale'?",
        ),
        (
            "    model: model.onnx\n    data: data.npy\n    preprocessing:\n      std: 0\n",
            6,
            "applications.digits.preprocessing.std: std must not be 0",
        ),
        (
            "    model: model.onnx\n    data: data.npy\n    preprocessing: {dtype: complex64}\n",
            5,
            "dtype 'complex64' is not a numeric type",
        ),
    ],
)
def test_application_mistakes(folder: Path, application: str, line: int, fragment: str) -> None:
    path = write(folder, "applications:\n  digits:\n" + application + EXPERIMENT)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert fragment in str(caught.value), str(caught.value)


def test_an_error_in_an_included_file_names_that_file(folder: Path) -> None:
    common = write(folder, "targets:\n  ok: emu\n  bad:\n    device: emu\n    build: ecp5-99k\n", "inc/common.yaml")
    path = write(folder, HEAD + "include: [inc/common.yaml]\n" + EXPERIMENT)
    with pytest.raises(ConfigError, match=rf"^{common}:5: targets.bad.build: unknown build target 'ecp5-99k'"):
        load(path)


def test_a_yaml_error_in_an_included_file_names_that_file(folder: Path) -> None:
    common = write(folder, "targets:\n  ok: emu\n   bad: [\n", "common.yaml")
    path = write(folder, HEAD + "include: common.yaml\n" + EXPERIMENT)
    with pytest.raises(ConfigError, match=rf"^{common}:3: not valid YAML"):
        load(path)


def test_an_include_cycle_is_refused(folder: Path) -> None:
    write(folder, "include:\n  - b.yaml\n", "a.yaml")
    b = write(folder, "targets:\n  t: emu\ninclude:\n  - a.yaml\n", "b.yaml")
    path = write(folder, HEAD + "include: [a.yaml]\n" + EXPERIMENT)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{b}:4: include[0]: include cycle: "), message
    assert message.endswith("a.yaml -> b.yaml -> a.yaml; remove one of these includes"), message


def test_a_missing_include_names_the_line(folder: Path) -> None:
    path = write(folder, HEAD + "include:\n  - common.yaml\n  - gone.yaml\n" + EXPERIMENT)
    write(folder, "targets: {t: emu}\n", "common.yaml")
    with pytest.raises(ConfigError, match=rf"^{path}:7: include\[1\]: no such file {folder}/gone.yaml"):
        load(path)


def test_the_same_name_in_two_included_files_is_an_error(folder: Path) -> None:
    one = write(folder, "targets:\n  t: emu\n", "one.yaml")
    two = write(folder, "measurements: {}\ntargets:\n  t: sim\n", "two.yaml")
    path = write(folder, HEAD + "include: [one.yaml, two.yaml]\n" + EXPERIMENT)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{two}:3: targets.t: defined in both {one} and {two}; rename one, or define t in {path} to override both"
    )
    write(folder, HEAD + "include: [one.yaml, two.yaml]\ntargets:\n  t: noop\n" + EXPERIMENT)
    assert load(path).targets["t"].device == "noop"  # the including file settles it


def test_a_missing_file_and_a_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere.yaml: no such experiment file"):
        load(tmp_path / "nothere.yaml")
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"exp.yaml:1: the top level must be a mapping with applications"):
        load(path)


def test_experiments_are_typed_values() -> None:
    assert Experiments.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert TargetSpec("r", "remote://h:1/cpu").kind == "cpu"
    assert TargetSpec("r", "remote://h:1/emu", "generic").kind == "fpga"
