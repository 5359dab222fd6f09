"""Compile QoR: what gatewright's builds cost in LUTs, FFs, DSPs, Fmax and build time, and how its unrolled
design compares with da4ml's bare design and a naive hand-written one on the same quantized weights.

    .venv/bin/python benchmarks/compile_qor.py [--quick] [--json out.json] [--markdown out.md]

Part 1 builds three MLPs with ``--arch auto`` (no cache), calibrated on their training split: digits
64-32-10 and synth5 16-64-32-32-5 on ecp5-85k, iris 4-8-3 on ice40-up5k, and measures float (onnxruntime)
and quantized (``emu`` device) accuracy on the held-out split.
Part 2 takes the quantized weights of the ecp5 models and runs four cores through the same yosys and
nextpnr on ecp5-85k at the same clock, each inside the bundle's own UART wrapper (gw_top / gw_board):
gatewright ``--arch unrolled``; da4ml's own flow for the whole network (trace, ``VerilogModel``); a naive
design (constant multiplications summed, one register per layer and one at the output); and a pass-through
core that measures the wrapper alone. da4ml and naive cores accept an input every cycle and ignore
``out_ready`` (fine for resources, not for a board). Both are checked with Verilator against the emulator.
``--quick``: the iris model only, and the comparison on its weights. ``--only``, ``--part``, ``--designs``
split the work over several processes (two cores run two place-and-route jobs at once); ``--merge`` prints
the table of their ``--json`` files together.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.build.hardware import HardwareOptions, latency_cutoff
from gatewright.build.pipeline import build
from gatewright.hw import sim
from gatewright.quant.emulator import Emulator
from gatewright.quant.qir import QActivation, QDense, QuantizedModel
from gatewright.targets import TARGETS, Target
from gatewright.toolchain.pnr import place_and_route
from gatewright.toolchain.synth import synthesize

WORK = Path("test-artifacts/compile-qor")  # ignored by git; YoWASP tools cannot reach /tmp
STEPS = ("quantize", "rtl", "sim", "synth", "pnr", "bitstream")
COMPARE_TARGET = "ecp5-85k"
TOOL_TIMEOUT = 1800.0
DESIGNS = ("da4ml", "naive", "wrapper")
PNR_BELS = {
    "ecp5": {"luts": "TRELLIS_COMB", "dsps": "MULT18X18D", "brams": "DP16KD"},
    "ice40": {"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM"},
}


@dataclass
class Case:
    name: str
    target: str
    model: Path
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ----------------------------------------------------------------------------------------------- models


def _export(pipeline: Any, x_train: np.ndarray, path: Path) -> Path:
    from skl2onnx import to_onnx

    onnx_model = to_onnx(
        pipeline, x_train[:1].astype(np.float32), options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    path.write_bytes(onnx_model.SerializeToString())
    return path


def _sklearn_case(name: str, target: str, x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...]) -> Case:
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mlp = MLPClassifier(hidden_layer_sizes=hidden, max_iter=2000, random_state=0)
    pipeline = make_pipeline(StandardScaler(), mlp).fit(x_train, y_train)
    return Case(name, target, _export(pipeline, x_train, WORK / f"{name}.onnx"), x_train, x_test, y_test)


def make_cases(quick: bool, only: tuple[str, ...] = ()) -> list[Case]:
    from sklearn.datasets import load_iris, make_classification

    from gatewright.demo import train_digits_mlp

    def wanted(name: str) -> bool:
        return not only or any(part in name for part in only)

    cases = []
    if not quick and wanted("digits 64-32-10"):
        model, x_train, x_test, y_test = train_digits_mlp(WORK)
        cases.append(Case("digits 64-32-10", COMPARE_TARGET, model, x_train, x_test, y_test))
    if not quick and wanted("synth5 16-64-32-32-5"):
        x, y = make_classification(n_samples=4000, n_features=16, n_informative=12, n_classes=5, random_state=0)
        cases.append(_sklearn_case("synth5 16-64-32-32-5", COMPARE_TARGET, x, y, (64, 32, 32)))
    if wanted("iris 4-8-3"):
        cases.append(_sklearn_case("iris 4-8-3", "ice40-up5k", *load_iris(return_X_y=True), (8,)))
    return cases


# ----------------------------------------------------------------------------------------------- part 1


def gatewright_build(case: Case, arch: str, target: str, until: str = "bitstream") -> tuple[Path, dict[str, Any]]:
    calibration = WORK / f"{case.name.split()[0]}-calibration.npy"
    np.save(calibration, case.x_train)
    out = WORK / f"{case.name.split()[0]}-{target}-{arch}.bundle"
    shutil.rmtree(out, ignore_errors=True)
    print(f"$ gatewright build {case.model} --target {target} --arch {arch} --until {until} --no-cache", flush=True)
    build(
        case.model,
        out,
        target=target,
        until=until,
        calibration=calibration,
        hardware=HardwareOptions(arch=arch),
        use_cache=False,
        echo=lambda line: print("   ", line, flush=True),
    )
    return out, json.loads((out / "manifest.json").read_text())


def accuracies(case: Case, bundle_dir: Path) -> tuple[float, float]:
    import onnxruntime as ort

    from gatewright import devices
    from gatewright.build.bundle import Bundle

    session = ort.InferenceSession(str(case.model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = case.x_test.astype(np.float32)
    float_labels = session.run(None, {name: x})[0]
    with devices.open("emu") as device:
        model = device.load(Bundle(bundle_dir))
        outputs = model.infer({name: x})
    quant_labels = next(iter(outputs.values()))
    return float(np.mean(float_labels == case.y_test)), float(np.mean(np.asarray(quant_labels) == case.y_test))


def row_from_manifest(case: Case, design: str, manifest: dict[str, Any]) -> dict[str, Any]:
    results = manifest["results"]
    architecture = manifest["architecture"]
    stages = [
        s["arch"] + (f"(p{s['parallel']})" if s["arch"] == "folded" else "") for s in architecture.get("stages", [])
    ]
    return {
        "model": case.name,
        "target": manifest["target"]["name"] if isinstance(manifest["target"], dict) else manifest["target"],
        "design": design,
        "arch": " ".join(stages),
        "luts": results.get("luts"),
        "ffs": results.get("synthesis", {}).get("ffs"),  # post-synthesis FFs (iCE40's placed figure counts LCs)
        "dsps": results.get("dsps"),
        "brams": results.get("brams"),
        "fmax_mhz": results.get("fmax_mhz"),
        "clock_mhz": results.get("clock_mhz"),
        "latency_cycles": results.get("latency_cycles"),
        "latency_ns": results.get("latency_ns"),
        "ii": results.get("initiation_interval"),
        "bit_exact": results.get("simulation", {}).get("bit_exact"),
        "steps": {s["name"]: s["duration_s"] for s in manifest.get("steps", [])},
    }


# ----------------------------------------------------------------------------------------------- part 2


def _dense_with_activation(model: QuantizedModel) -> list[tuple[QDense, QActivation | None]]:
    pairs: list[tuple[QDense, QActivation | None]] = []
    for layer in model.layers:
        if isinstance(layer, QDense):
            pairs.append((layer, None))
        else:
            if not pairs or pairs[-1][1] is not None or layer.kind not in ("relu", "clip"):
                raise NotImplementedError(f"layer {layer.name} ({layer.kind}): only dense + relu/clip here")
            pairs[-1] = (pairs[-1][0], layer)
    for (a, _), (b, _) in itertools.pairwise(pairs):
        assert a.output == b.input, f"{a.name} output {a.output} != {b.name} input {b.input}"
    return pairs


def _sint(value: int, width: int) -> str:
    return f"-{width}'sd{-value}" if value < 0 else f"{width}'sd{value}"


def _stream_wrapper(n_in: int, in_bits: int, n_out: int, out_bits: int, latency: int, body: list[str]) -> str:
    """gw_core with the streaming interface around a fixed-latency pipeline: in_ready = 1, out_ready ignored."""
    return "\n".join(
        [
            "module gw_core (",
            "    input wire clk, input wire rst,",
            f"    input wire in_valid, output wire in_ready, input wire [{n_in * in_bits - 1}:0] in_data,",
            f"    output wire out_valid, input wire out_ready, output wire [{n_out * out_bits - 1}:0] out_data",
            ");",
            "assign in_ready = 1'b1;  // accepts every cycle; out_ready is ignored (resource comparison only)",
            f"reg [{latency - 1}:0] vld;",
            "always @(posedge clk) vld <= rst ? "
            + f"{latency}'b0 : "
            + ("in_valid;" if latency == 1 else f"{{vld[{latency - 2}:0], in_valid}};"),
            f"assign out_valid = vld[{latency - 1}];",
            *body,
            "endmodule",
            "",
        ]
    )


def naive_core(model: QuantizedModel) -> tuple[str, int]:
    """Per layer: register the input, acc_j = sum_k $signed(x_k) * W[k][j] + bias, RND, SAT, relu."""
    pairs = _dense_with_activation(model)
    lines: list[str] = []
    fmt = model.input_format
    width = pairs[0][0].n_in * fmt.bits
    lines += [f"reg [{width - 1}:0] l0_in;", "always @(posedge clk) l0_in <= in_data;"]
    for index, (layer, activation) in enumerate(pairs):
        src, ib, ob = f"l{index}_in", layer.input.bits, layer.output.bits
        bias_shift = layer.accumulator.frac - layer.bias_format.frac
        shift = layer.accumulator.frac - layer.output.frac
        aw = max(layer.accumulator_bound().bit_length() + 1, layer.accumulator.bits) + 2
        for k in range(layer.n_in):
            lines.append(f"wire signed [{ib - 1}:0] l{index}_x{k} = {src}[{(k + 1) * ib - 1}:{k * ib}];")
        outputs = []
        for j in range(layer.n_out):
            terms = [
                f"$signed(l{index}_x{k}) * {_sint(int(layer.weight[k, j]), aw)}"
                for k in range(layer.n_in)
                if int(layer.weight[k, j]) != 0
            ]
            terms.append(_sint(int(layer.bias[j]) << bias_shift, aw))
            acc = f"l{index}_acc{j}"
            lines.append(f"wire signed [{aw - 1}:0] {acc} = " + " + ".join(terms) + ";")
            lo, hi = layer.accumulator.min_int, layer.accumulator.max_int
            sat = f"l{index}_sacc{j}"
            lines.append(
                f"wire signed [{aw - 1}:0] {sat} = {acc} < {_sint(lo, aw)} ? {_sint(lo, aw)} : "
                f"{acc} > {_sint(hi, aw)} ? {_sint(hi, aw)} : {acc};"
            )
            rounded = f"l{index}_rnd{j}"
            if shift > 0:
                lines.append(
                    f"wire signed [{aw - 1}:0] {rounded} = ({sat} + {_sint(1 << (shift - 1), aw)}) >>> {shift};"
                )
            else:
                lines.append(f"wire signed [{aw - 1}:0] {rounded} = {sat} <<< {-shift};")
            lo, hi = layer.output.min_int, layer.output.max_int
            if activation is not None and activation.kind == "relu":
                lo = max(lo, 0)
            elif activation is not None:  # clip
                lo = max(lo, layer.output.min_int if activation.low is None else activation.low)
                hi = min(hi, layer.output.max_int if activation.high is None else activation.high)
            out = f"l{index}_y{j}"
            lines.append(
                f"wire signed [{aw - 1}:0] {out}w = {rounded} < {_sint(lo, aw)} ? {_sint(lo, aw)} : "
                f"{rounded} > {_sint(hi, aw)} ? {_sint(hi, aw)} : {rounded};"
            )
            lines.append(f"wire [{ob - 1}:0] {out} = {out}w[{ob - 1}:0];")
            outputs.append(out)
        nxt = f"l{index + 1}_in"
        lines += [
            f"reg [{layer.n_out * ob - 1}:0] {nxt};",
            f"always @(posedge clk) {nxt} <= {{{', '.join(reversed(outputs))}}};",
        ]
    lines.append(f"assign out_data = l{len(pairs)}_in;")
    latency = len(pairs) + 1
    last = pairs[-1][0]
    return _stream_wrapper(pairs[0][0].n_in, fmt.bits, last.n_out, last.output.bits, latency, lines), latency


def da4ml_core(model: QuantizedModel, cutoff: float, workdir: Path) -> tuple[dict[str, str], int]:
    """The whole network through da4ml's own flow: trace, pipeline at ``cutoff``, VerilogModel."""
    from da4ml.codegen import VerilogModel
    from da4ml.trace import FixedVariableArrayInput, HWConfig, comb_trace
    from da4ml.trace.ops import quantize, relu
    from da4ml.types import minimal_kif

    pairs = _dense_with_activation(model)
    n_in, in_bits = pairs[0][0].n_in, model.input_format.bits
    inp = FixedVariableArrayInput(n_in, hwconf=HWConfig(1, -1, -1)).quantize(1, in_bits - 1, 0)
    x = inp
    for layer, activation in pairs:  # integers throughout: raw values of each format
        bias = [float(int(v) << (layer.accumulator.frac - layer.bias_format.frac)) for v in layer.bias]
        y = x @ layer.weight.astype(np.float64) + np.array(bias)
        if layer.accumulator_bound() > layer.accumulator.max_int:
            y = quantize(y, 1, layer.accumulator.bits - 1, 0, "SAT", "TRN")
        shift = layer.accumulator.frac - layer.output.frac
        y = y * (2.0**-shift)
        y = quantize(y, 1, layer.output.bits - 1, 0, "SAT", "RND")
        if activation is not None and activation.kind == "relu":
            y = relu(y)
        elif activation is not None:
            raise NotImplementedError("clip in the da4ml flow")
        x = y
    comb = comb_trace(inp, x, keep_dead_inputs=True)  # inputs no weight uses stay ports
    project = workdir / "da4ml"
    shutil.rmtree(project, ignore_errors=True)
    VerilogModel(comb, "da4ml_net", project, latency_cutoff=cutoff, print_latency=False).write()
    stages = len(list((project / "src").glob("da4ml_net_stage*.v")))
    # metadata.json's "latency" counts the stages; the module registers each stage's input and its output
    assert int(json.loads((project / "metadata.json").read_text())["latency"]) == stages
    latency = stages + 1
    files = {p.name: p.read_text() for p in sorted((project / "src").glob("*.v")) if not p.stem.endswith("_wrapper")}
    generated = "".join(files.values())
    for path in sorted((project / "src" / "static").glob("*.v")):  # only the blocks the code instantiates
        if f"{path.stem} " in generated or f"{path.stem} #" in generated:
            files[path.name] = path.read_text()
    from da4ml.trace.pipeline import to_pipeline

    pipe = to_pipeline(comb, cutoff, verbose=False) if cutoff > 0 else None
    last = pipe.solutions[-1] if pipe is not None else comb
    first = pipe.solutions[0] if pipe is not None else comb
    assert sum(sum(minimal_kif(q)) for q in first.inp_qint) == n_in * in_bits, "da4ml dropped input bits"
    out_bits = pairs[-1][0].output.bits
    body = [f"wire [{sum(sum(minimal_kif(q)) for q in last.out_qint) - 1}:0] net_out;"]
    body.append("da4ml_net net (.clk(clk), .model_inp(in_data), .model_out(net_out));")
    offset, fields = 0, []
    for j, qint in enumerate(last.out_qint):
        signed, integers, fraction = (int(v) for v in minimal_kif(qint))
        width = signed + integers + fraction
        if width == 0:
            fields.append(f"{out_bits}'d0")
            continue
        value = f"net_out[{offset + width - 1}:{offset}]"
        offset += width
        if fraction < 0:  # low bits that are always zero were dropped
            value, width = f"{{{value}, {-fraction}'b0}}", width - fraction
        body.append(f"wire [{width - 1}:0] o{j} = {value};")
        pad = out_bits - width
        fill = f"{{{pad}{{o{j}[{width - 1}]}}}}" if signed else f"{pad}'d0"
        fields.append(f"o{j}" if pad == 0 else f"{{{fill}, o{j}}}" if pad > 0 else f"o{j}[{out_bits - 1}:0]")
    body.append("assign out_data = {" + ", ".join(reversed(fields)) + "};")
    files["gw_core.v"] = _stream_wrapper(n_in, in_bits, len(last.out_qint), out_bits, latency, body)
    return files, latency


def passthrough_core(n_in: int, in_bits: int, n_out: int, out_bits: int) -> str:
    """The wrapper alone: output word j is input word j mod n_in, registered (nothing for yosys to drop)."""
    words = [f"in_q[{(j % n_in) * in_bits + min(in_bits, out_bits) - 1}:{(j % n_in) * in_bits}]" for j in range(n_out)]
    fields = [w if in_bits >= out_bits else f"{{{out_bits - in_bits}'d0, {w}}}" for w in words]
    body = [
        f"reg [{n_in * in_bits - 1}:0] in_q;",
        "always @(posedge clk) in_q <= in_data;",
        "assign out_data = {" + ", ".join(reversed(fields)) + "};",
    ]
    return _stream_wrapper(n_in, in_bits, n_out, out_bits, 1, body)


def simulate(rtl_dir: Path, sources: list[str], model: QuantizedModel, case: Case, shape: sim.SimShape) -> str:
    """Bit-exact check against the emulator on test data and random full-range vectors: 'yes', or what differs."""
    emulator = Emulator(model, kernels=False)
    rng = np.random.default_rng(0)
    fmt = model.input_format
    raw = np.concatenate(
        [
            emulator.quantize_input(model.prepare(case.x_test[:200].astype(np.float64))),
            rng.integers(fmt.min_int, fmt.max_int + 1, size=(100, shape.n_in)),
        ]
    ).astype(np.int64)
    expected = emulator.run_raw(raw).astype(np.int64)
    binary, _ = sim.build(rtl_dir, sources, shape, rtl_dir / "verilator.log")
    with sim.Simulator(binary, shape) as simulator:
        got = simulator.run(raw).outputs
    wrong = int(np.count_nonzero(got != expected))
    return "yes" if wrong == 0 else f"NO: {wrong}/{expected.size} values differ"


def synth_and_route(workdir: Path, sources: list[Path], target: Target, clock: float, dsp: bool) -> dict[str, Any]:
    synthesized = synthesize(workdir, sources, "gw_top", target.family, dsp=dsp, timeout=TOOL_TIMEOUT)  # type: ignore[arg-type]
    routed = place_and_route(
        workdir, synthesized.netlist, target.family, target.device, target.package, clock, timeout=TOOL_TIMEOUT
    )
    bels = PNR_BELS[target.family]
    use = {k: routed.utilization.get(bel) for k, bel in bels.items()}
    return {
        **{k: {"used": u.used, "available": u.available} if u else None for k, u in use.items()},
        "ffs": synthesized.ffs,
        "fmax_mhz": None if routed.fmax_mhz is None else round(routed.fmax_mhz, 2),
        "clock_mhz": clock,
        "steps": {"synth": round(synthesized.seconds, 1), "pnr": round(routed.seconds, 1)},
    }


def compare(
    case: Case, reference: tuple[Path, dict[str, Any]], designs: tuple[str, ...] = DESIGNS
) -> list[dict[str, Any]]:
    """gatewright unrolled, da4ml bare, naive, and the wrapper alone on ``case``'s weights on ecp5-85k."""
    target = TARGETS[COMPARE_TARGET]
    rows: list[dict[str, Any]] = []
    bundle_dir, manifest = reference
    if "luts" not in manifest["results"]:  # --part compare: the gatewright figures come from a --part builds run
        print("    gatewright's own figures: from the --part builds run (--merge)", flush=True)
    elif manifest["target"] != COMPARE_TARGET or any(
        s["arch"] != "unrolled" for s in manifest["architecture"]["stages"]
    ):
        auto_weights = (bundle_dir / "quantized.json").read_text()
        try:
            bundle_dir, manifest = gatewright_build(case, "unrolled", COMPARE_TARGET, until="pnr")
        except Exception as exc:  # a finding, not a reason to stop
            rows.append(failed(case, "gatewright unrolled", exc))
            return rows
        same = (bundle_dir / "quantized.json").read_text() == auto_weights
        print(f"    quantized.json identical to the --arch auto bundle's: {same}", flush=True)
        rows.append(row_from_manifest(case, "gatewright unrolled", manifest))
    else:
        rows.append(row_from_manifest(case, "gatewright unrolled (= auto)", manifest))
    model = QuantizedModel.load(bundle_dir / "quantized.json")
    clock = float(manifest["architecture"]["clock_mhz"])
    wrapper = [bundle_dir / "rtl" / "gw_uart.v", bundle_dir / "rtl" / "gw_top.v"]
    arch = manifest["architecture"]
    shape = sim.SimShape(arch["n_in"], arch["in_bits"], arch["n_out"], arch["out_bits"])
    cutoff = latency_cutoff(target, clock)

    def variant(design: str, make: Any, dsp: bool) -> None:
        if design.split()[0] not in designs:
            return
        workdir = WORK / f"{case.name.split()[0]}-{COMPARE_TARGET}-{design.split()[0]}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        print(f"--- {case.name}: {design} on {COMPARE_TARGET} at {clock:g} MHz", flush=True)
        started = time.monotonic()
        try:
            files, latency, check = make(workdir)
            rtl = workdir / "rtl"
            rtl.mkdir()
            for name, text in files.items():
                (rtl / name).write_text(text)
            order = sorted(files, key=lambda n: n == "gw_core.v")
            exact = simulate(rtl, order, model, case, shape) if check else "n/a"
            print(f"    bit-exact against the emulator: {exact}", flush=True)
            placed = synth_and_route(workdir / "reports", [rtl / n for n in order] + wrapper, target, clock, dsp)
        except Exception as exc:
            rows.append(failed(case, design, exc))
            return
        row = {"model": case.name, "target": COMPARE_TARGET, "design": design, **placed}
        fmax = placed["fmax_mhz"]
        row.update(latency_cycles=latency, latency_ns=None if not fmax else round(latency * 1000 / fmax, 1))
        row.update(ii=1, bit_exact=exact, arch=design.split()[0])
        row["steps"]["total"] = round(time.monotonic() - started, 1)
        print(f"    {json.dumps({k: row[k] for k in ('luts', 'ffs', 'dsps', 'fmax_mhz')})}", flush=True)
        rows.append(row)

    variant("da4ml bare", lambda w: (*da4ml_core(model, cutoff, w), True), dsp=True)
    variant("naive (no DSP)", lambda w: ({"gw_core.v": naive_core(model)[0]}, naive_core(model)[1], True), dsp=False)
    variant(
        "wrapper only",
        lambda w: ({"gw_core.v": passthrough_core(shape.n_in, shape.in_bits, shape.n_out, shape.out_bits)}, 1, False),
        dsp=True,
    )
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """LUT and FF ratios of each comparison core to gatewright's unrolled design on the same weights."""
    for model in {row["model"] for row in rows}:
        mine = [row for row in rows if row["model"] == model and "error" not in row]
        reference = next((r for r in mine if r["design"].startswith("gatewright unrolled")), None)
        if reference is None:  # the auto build stands in when every stage is unrolled on the comparison target
            reference = next(
                (r for r in mine if r["design"] == "gatewright auto" and r.get("target") == COMPARE_TARGET), None
            )
            if reference is not None and set(reference["arch"].split()) != {"unrolled"}:
                reference = None
        wrapper = next((r for r in mine if r["design"] == "wrapper only"), None)
        for row in mine:
            if reference is not None and row["design"] in ("da4ml bare", "naive (no DSP)"):
                row["lut_ratio"] = _ratio(row, reference, "luts", wrapper)
                row["ff_ratio"] = _ratio(row, reference, "ffs", wrapper)


def _used(row: dict[str, Any], key: str) -> int | None:
    value = row.get(key)
    return value.get("used") if isinstance(value, dict) else value


def _ratio(row: dict[str, Any], reference: dict[str, Any], key: str, wrapper: dict[str, Any] | None) -> str:
    """row / reference, raw and (in brackets) with the wrapper's own cost taken off both."""
    mine, theirs = _used(row, key), _used(reference, key)
    if not mine or not theirs or row.get("design") == "wrapper only":
        return ""
    text = f"{mine / theirs:.2f}"
    base = _used(wrapper, key) if wrapper else None
    if base is not None and theirs > base:
        text += f" ({(mine - base) / (theirs - base):.2f})"
    return text


def failed(case: Case, design: str, exc: Exception) -> dict[str, Any]:
    print(f"!!! {case.name} {design}: {type(exc).__name__}: {exc}", flush=True)
    traceback.print_exc()
    return {"model": case.name, "design": design, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}


# ----------------------------------------------------------------------------------------------- report

COLUMNS = (
    ("model", "model"),
    ("target", "target"),
    ("design", "design"),
    ("arch", "arch per stage"),
    ("luts", "LUT"),
    ("ffs", "FF"),
    ("dsps", "DSP"),
    ("brams", "BRAM"),
    ("fmax", "Fmax / clock MHz"),
    ("latency", "latency cyc / ns"),
    ("ii", "II"),
    ("lut_ratio", "LUT / gw (core only)"),
    ("ff_ratio", "FF / gw (core only)"),
    ("bit_exact", "bit-exact"),
    ("accuracy", "acc float / quant"),
    ("steps", "s: quantize rtl sim synth pnr bitstream"),
)


def cells(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [row["model"], row.get("target", ""), row["design"], "FAILED: " + row["error"]] + [""] * (
            len(COLUMNS) - 4
        )

    def used(key: str) -> str:
        value = row.get(key)
        if isinstance(value, dict):
            return f"{value['used']}/{value['available']}"
        return "" if value is None else str(value)

    fmax = row.get("fmax_mhz")
    steps = row.get("steps", {})
    out = {
        **{k: str(row.get(k, "")) for k in ("model", "target", "design", "arch", "lut_ratio", "ff_ratio")},
        **{k: used(k) for k in ("luts", "ffs", "dsps", "brams")},
        "fmax": f"{fmax if fmax else 'n/a'} / {row.get('clock_mhz', '')}",
        "latency": f"{row.get('latency_cycles', '')} / {row.get('latency_ns', '')}",
        "ii": str(row.get("ii", "")),
        "bit_exact": {True: "yes", None: ""}.get(row.get("bit_exact"), str(row.get("bit_exact"))),
        "accuracy": (f"{row['float_accuracy']:.2%} / {row['quant_accuracy']:.2%}" if "float_accuracy" in row else ""),
        "steps": " ".join(f"{steps[s]:.1f}" if s in steps else "-" for s in STEPS)
        if "quantize" in steps
        else " ".join(f"{k} {v}" for k, v in steps.items()),
    }
    return [out[key] for key, _ in COLUMNS]


def print_table(rows: list[dict[str, Any]]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Compile QoR", show_lines=False)
    for _, title in COLUMNS:
        table.add_column(title)
    for row in rows:
        table.add_row(*cells(row))
    Console(width=250).print(table)
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="iris on ice40-up5k and its comparison only")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    parser.add_argument("--only", nargs="+", default=(), help="only the models whose name contains one of these")
    parser.add_argument(
        "--part",
        choices=("all", "builds", "compare"),
        default="all",
        help="builds: part 1 only; compare: part 2 only, its gatewright figures left to a --part builds run",
    )
    parser.add_argument("--designs", nargs="+", choices=DESIGNS, default=DESIGNS, help="which comparison cores")
    parser.add_argument("--merge", nargs="+", type=Path, default=(), help="print the rows of these --json files")
    args = parser.parse_args()
    if args.merge:
        loaded = [json.loads(path.read_text()) for path in args.merge]
        rows = [row for data in loaded for row in data["rows"]]
        add_ratios(rows)
        markdown = print_table(rows)
        if args.markdown:
            args.markdown.write_text(markdown)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    cache = (
        WORK / f"cache-{os.getpid()}"
    )  # a cold simulator cache, so the sim step's time includes building the simulator
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["GATEWRIGHT_CACHE"] = str(cache.resolve())
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    tools: dict[str, str] = {}
    built: dict[str, tuple[Case, tuple[Path, dict[str, Any]]]] = {}
    for case in make_cases(args.quick, tuple(args.only)):
        if args.part == "compare" and case.target == COMPARE_TARGET:
            try:
                built[case.name] = (case, gatewright_build(case, "unrolled", COMPARE_TARGET, until="rtl"))
            except Exception as exc:
                rows.append(failed(case, "gatewright unrolled --until rtl", exc))
            continue
        print(f"=== {case.name} on {case.target}, --arch auto", flush=True)
        try:
            bundle_dir, manifest = gatewright_build(case, "auto", case.target)
            float_acc, quant_acc = accuracies(case, bundle_dir)
        except Exception as exc:
            rows.append(failed(case, "gatewright auto", exc))
            continue
        row = row_from_manifest(case, "gatewright auto", manifest)
        row.update(float_accuracy=float_acc, quant_accuracy=quant_acc)
        rows.append(row)
        tools.update(manifest.get("tools", {}))
        if case.target == COMPARE_TARGET or args.quick:
            built[case.name] = (case, (bundle_dir, manifest))
    for case, reference in built.values() if args.part != "builds" else ():
        print(f"=== {case.name}: same weights, four cores on {COMPARE_TARGET}", flush=True)
        rows += compare(case, reference, tuple(args.designs))
    shutil.rmtree(cache, ignore_errors=True)
    add_ratios(rows)
    markdown = print_table(rows)
    elapsed = time.monotonic() - started
    print(f"total {elapsed / 60:.1f} min; tools: {json.dumps(tools)}")
    if args.markdown:
        args.markdown.write_text(markdown)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "tools": tools, "seconds": elapsed}, indent=1, default=str))


if __name__ == "__main__":
    main()
