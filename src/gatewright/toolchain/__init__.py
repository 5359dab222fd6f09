"""Thin wrappers over external open FPGA tools (yosys, nextpnr, packers, verilator) and their reports.

Nothing else in gatewright shells out: each step is a function with typed inputs that runs its tool
with an explicit argument list, keeps the log, and returns a typed result.
"""

from gatewright.errors import ToolError
from gatewright.toolchain.pnr import ClockTiming, PnrResult, Utilization, pack, parse_report, place_and_route
from gatewright.toolchain.synth import SynthResult, cell_resources, synthesize
from gatewright.toolchain.tools import TOOL_PACKAGES, ToolRun, find_tool, relpath, run_tool, tool_versions
from gatewright.toolchain.verilator import build_simulator, verilator_version

__all__ = [
    "TOOL_PACKAGES",
    "ClockTiming",
    "PnrResult",
    "SynthResult",
    "ToolError",
    "ToolRun",
    "Utilization",
    "build_simulator",
    "cell_resources",
    "find_tool",
    "pack",
    "parse_report",
    "place_and_route",
    "relpath",
    "run_tool",
    "synthesize",
    "tool_versions",
    "verilator_version",
]
