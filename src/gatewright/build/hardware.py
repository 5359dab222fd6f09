"""The hardware steps of a build: rtl, sim, synth, pnr, bitstream.

Each works in the bundle's staging directory: ``rtl/`` (the generated core, the board wrapper,
the simulation harness, ``design.json``), ``reports/`` (tool logs and reports) and the bitstream.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.errors import GatewrightError
from gatewright.hw import sim
from gatewright.hw.core import CORE, STATIC_RTL, Design, generate, stage_specs
from gatewright.hw.plan import Plan, plan
from gatewright.quant.emulator import Emulator
from gatewright.quant.qir import QuantizedModel
from gatewright.targets import Target
from gatewright.toolchain.pnr import PnrResult, RouteWatch, pack, place_and_route
from gatewright.toolchain.synth import Family, SynthResult, synthesize

RTL_DIR = "rtl"
REPORTS_DIR = "reports"
BOARD_TOP = "gw_top"
BOARD_RTL = "gw_uart.v"
BAUD = 115200
ARCHES = ("auto", "unrolled", "folded")


def unknown_arch(arch: str) -> str | None:
    """What is wrong with ``arch`` (None when it names an architecture): one message for every front end."""
    return None if arch in ARCHES else f"unknown architecture '{arch}'; choose one of {', '.join(ARCHES)}"


class BitExactError(GatewrightError):
    """The simulated RTL does not compute what the emulator computes."""


@dataclass(frozen=True)
class HardwareOptions:
    arch: str = "auto"
    clock_mhz: float | None = None
    reuse: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "clock_mhz": self.clock_mhz, "reuse": self.reuse}


def clock_mhz(target: Target, options: HardwareOptions) -> float:
    return options.clock_mhz or target.default_clock_mhz


def latency_cutoff(target: Target, clock: float) -> float:
    """Adder levels per pipeline stage of an unrolled layer (da4ml's latency unit), by clock."""
    # measured: a da4ml adder level costs about 3 ns on ECP5 (with routing), over 10 ns on an
    # iCE40 UP5K (5 levels reached 18 MHz)
    if target.family == "ecp5":
        return float(max(1, math.floor(280.0 / clock)))
    if target.family == "ice40":
        return float(max(1, math.floor(60.0 / clock)))
    return 4.0


def design_id(rtl_dir: Path, sources: list[str]) -> int:
    """32 bits of the core's hash: the board answers IDENT with it, so a host can tell which bundle it runs."""
    digest = hashlib.sha256()
    for name in sources:
        digest.update((rtl_dir / name).read_bytes())
    return int.from_bytes(digest.digest()[:4], "little")


def rtl_step(
    staging: Path,
    quantized: QuantizedModel,
    n_in: int,
    target: Target,
    options: HardwareOptions,
    note: Callable[[str], None],
    scale: float = 1.0,
    congestion: int = 0,
) -> tuple[Design, Plan, int]:
    """Plan and generate the core, write it with the board wrapper and the harness into ``rtl/``."""
    clock = clock_mhz(target, options)
    cutoff = latency_cutoff(target, clock)
    specs = stage_specs(quantized, n_in)
    chosen = plan(specs, target, options.arch, cutoff, options.reuse, scale, congestion, log=note)
    design = generate(quantized, n_in, chosen.choices, cutoff, chosen.prebuilt)
    rtl_dir = staging / RTL_DIR
    shutil.rmtree(rtl_dir, ignore_errors=True)  # a retry replaces the previous attempt
    design.write(rtl_dir)
    shutil.copyfile(STATIC_RTL / BOARD_RTL, rtl_dir / BOARD_RTL)
    shutil.copyfile(sim.HARNESS, rtl_dir / sim.HARNESS.name)
    ident = design_id(rtl_dir, design.sources)
    clocks_per_bit = max(4, round(clock * 1e6 / BAUD))
    (rtl_dir / f"{BOARD_TOP}.v").write_text(
        f"// {BOARD_TOP}: gw_core behind a UART at {BAUD} baud ({clock:g} MHz clock); see docs/framing.md\n"
        f"module {BOARD_TOP} (input wire clk, input wire uart_rx, output wire uart_tx);\n"
        f"gw_board #(.N_IN({design.n_in}), .IN_BITS({design.in_bits}), .N_OUT({design.n_out}), "
        f".OUT_BITS({design.out_bits}), .CLKS_PER_BIT({clocks_per_bit}), .DESIGN_ID(32'h{ident:08x})) "
        "board (.clk(clk), .uart_rx(uart_rx), .uart_tx(uart_tx));\n"
        "endmodule\n"
    )
    return design, chosen, ident


def shape(design: Design) -> sim.SimShape:
    return sim.SimShape(design.n_in, design.in_bits, design.n_out, design.out_bits)


def sim_step(
    staging: Path, design: Design, quantized: QuantizedModel, vectors: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Run every vector set through the simulated core and compare every output bit with the emulator.

    Also runs the first set with random backpressure on the output, so stalls are proven harmless.
    Returns what was checked and the measured latency and initiation interval.
    """
    rtl_dir = staging / RTL_DIR
    binary, reused = sim.build(rtl_dir, design.sources, shape(design), staging / REPORTS_DIR / "verilator.log")
    emulator = Emulator(quantized, kernels=False)  # the reference path: no fast-path assumptions
    checked: dict[str, int] = {}
    latency = interval = 0
    with sim.Simulator(binary, shape(design)) as simulator:
        for index, (label, raw) in enumerate(vectors.items()):
            raw = np.asarray(raw, dtype=np.int64).reshape(-1, design.n_in)
            expected = emulator.run_raw(raw).astype(np.int64)
            runs = [simulator.run(raw)] + ([simulator.run(raw, backpressure=True)] if index == 0 else [])
            for result in runs:
                _compare(label, result.outputs, expected, design.out_bits)
            checked[label] = len(raw)
            if index == 0:
                latency = runs[0].latency
                # cycles = latency + II * (n - 1) for a steady stream
                interval = round((runs[0].cycles - latency) / (len(raw) - 1)) if len(raw) > 1 else design.interval
    return {
        "bit_exact": True,
        "vectors": checked,
        "latency_cycles": latency,
        "initiation_interval": interval,
        "simulator_reused": reused,
    }


def _compare(label: str, got: np.ndarray, expected: np.ndarray, bits: int) -> None:
    if np.array_equal(got, expected):
        return
    row, column = (int(v) for v in np.argwhere(got != expected)[0])
    wrong = int(np.count_nonzero(got != expected))
    mask = (1 << bits) - 1
    raise BitExactError(
        f"simulation differs from the emulator on {label}: vector {row}, output {column}: RTL "
        f"{int(got[row, column])} (0x{int(got[row, column]) & mask:0{(bits + 3) // 4}x}), emulator "
        f"{int(expected[row, column])} (0x{int(expected[row, column]) & mask:0{(bits + 3) // 4}x}); {wrong} values "
        "differ in all. This is a gatewright bug: please report it with the bundle's rtl/ and quantized.json"
    )


def synth_step(staging: Path, design: Design, target: Target) -> SynthResult:
    rtl_dir = staging / RTL_DIR
    sources = [rtl_dir / name for name in (*design.sources, BOARD_RTL, f"{BOARD_TOP}.v")]
    family: Family = "ecp5" if target.family == "ecp5" else "ice40"
    return synthesize(staging / REPORTS_DIR, sources, BOARD_TOP, family, dsp=target.dsps > 0)


def pnr_step(staging: Path, synthesized: SynthResult, target: Target, clock: float) -> PnrResult:
    """Place and route; a routing that will not converge stops early with ``RoutingStalled``."""
    return place_and_route(
        staging / REPORTS_DIR,
        synthesized.netlist,
        target.family,
        target.device,
        target.package,
        clock,
        route_watch=RouteWatch(),
    )


def bitstream_step(staging: Path, routed: PnrResult, target: Target) -> Path:
    built = pack(staging / REPORTS_DIR, target.family, routed)
    final = staging / f"firmware{built.suffix}"
    shutil.move(built, final)
    return final


def logic_cells(target: Target, synthesized: SynthResult) -> int:
    """Logic cells synthesis used: on ECP5 LUT positions, each carry cell (CCU2C) taking two; on
    iCE40 logic cells, each holding a LUT, its carry and a flip-flop (at least the larger count)."""
    if target.family == "ecp5":
        return synthesized.luts + 2 * synthesized.carries
    return max(synthesized.luts, synthesized.ffs)


__all__ = [
    "ARCHES",
    "BOARD_TOP",
    "CORE",
    "BitExactError",
    "HardwareOptions",
    "bitstream_step",
    "clock_mhz",
    "logic_cells",
    "pnr_step",
    "rtl_step",
    "sim_step",
    "synth_step",
]
