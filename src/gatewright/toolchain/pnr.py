"""Place and route with nextpnr (ECP5 / iCE40), its JSON report, and bitstream packing."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gatewright.errors import ToolError
from gatewright.toolchain.tools import find_tool, relpath, run_tool, staged_outputs

__all__ = ["ClockTiming", "PnrResult", "Utilization", "pack", "parse_report", "place_and_route"]

DEVICES: dict[str, tuple[str, ...]] = {
    "ecp5": ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k", "um5g-45k", "um5g-85k"),
    "ice40": ("lp384", "lp1k", "lp4k", "lp8k", "hx1k", "hx4k", "hx8k", "up3k", "up5k", "u1k", "u2k", "u4k"),
}
# Where nextpnr writes the placed-and-routed design, and what the packer makes of it.
_PNR_SUFFIX = {"ecp5": ".config", "ice40": ".asc"}
_BIT_SUFFIX = {"ecp5": ".bit", "ice40": ".bin"}
_IO_PLACE_FAIL = re.compile(r"Unable to find a placement location for cell '.*\$(sb_io|tr_io)'")
_IO_USAGE = re.compile(r"^Info:\s+(SB_IO|TRELLIS_IO):\s+(\d+)/\s*(\d+)")


@dataclass(frozen=True)
class Utilization:
    used: int
    available: int

    @property
    def fraction(self) -> float:
        return self.used / self.available if self.available else 0.0


@dataclass(frozen=True)
class ClockTiming:
    name: str
    achieved_mhz: float
    constraint_mhz: float

    @property
    def met(self) -> bool:
        return self.achieved_mhz >= self.constraint_mhz


@dataclass(frozen=True)
class PnrResult:
    """A placed and routed design and what nextpnr reported about it.

    ``fmax_mhz`` is the lowest achieved frequency over the design's clocks; it is None when nextpnr
    timed no register-to-register path (e.g. every register sits inside a DSP block), and then
    ``timing_met`` is True because no path failed.
    """

    family: str
    device: str
    package: str
    clock_mhz: float
    output: Path  # ECP5 Trellis text config (.config) or iCE40 ASCII bitstream (.asc)
    report: Path
    log: Path
    utilization: dict[str, Utilization] = field(default_factory=dict)
    clocks: dict[str, ClockTiming] = field(default_factory=dict)
    fmax_mhz: float | None = None
    timing_met: bool = True
    seconds: float = 0.0


def parse_report(report: dict[str, object]) -> tuple[dict[str, Utilization], dict[str, ClockTiming]]:
    """Utilization per bel type and timing per clock from a nextpnr ``--report`` JSON document."""
    util_raw = report.get("utilization", {})
    fmax_raw = report.get("fmax", {})
    assert isinstance(util_raw, dict) and isinstance(fmax_raw, dict)
    utilization = {str(bel): Utilization(int(v["used"]), int(v["available"])) for bel, v in sorted(util_raw.items())}
    clocks = {
        str(name): ClockTiming(str(name), float(v["achieved"]), float(v["constraint"]))
        for name, v in sorted(fmax_raw.items())
    }
    return utilization, clocks


def _io_hint(log: Path) -> str:
    text = log.read_text(encoding="utf-8", errors="replace")
    if not _IO_PLACE_FAIL.search(text):
        return ""
    usage = ""
    for line in text.splitlines():
        m = _IO_USAGE.match(line)
        if m:
            usage = f" (the design needs {m[2]} IO pins, the package has {m[3]})"
    return (
        f"\n       The top-level ports do not fit the package's IO pins{usage}. Wrap the core so that fewer"
        "\n       signals reach pins (a serial or memory-mapped interface), or choose a larger package."
    )


class RoutingStalled(ToolError):
    """nextpnr's router is not converging: the design is too congested to route in reasonable time."""


class RouteWatch:
    """Watches nextpnr's router and gives up on a routing that will not finish.

    Router1 prints the arcs still to route every thousand iterations. Over the last ``window_s``
    seconds (wall clock) their decrease gives a rate; when the remaining arcs at that rate would take
    the routing past ``budget_s`` seconds, the design is congested: more time rarely helps, a smaller
    design does. A congested router also prints less and less often (each arc searches longer), so
    silence counts as no progress. A design that routes keeps a steady rate.
    """

    _PROGRESS = re.compile(r"^Info:\s+\d+\s+\|\s+\d+\s+\d+\s+\|\s+\d+\s+\d+\s+\|\s+(\d+)\|")

    def __init__(
        self, budget_s: float = 1800.0, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget_s = budget_s
        self.window_s = window_s
        self.clock = clock
        self.samples: list[tuple[float, int]] = []  # (time, arcs remaining)

    def __call__(self, line: str) -> None:
        match = self._PROGRESS.match(line)
        if match:
            self.samples.append((self.clock(), int(match.group(1))))

    def check(self) -> RoutingStalled | None:
        if not self.samples:
            return None
        now = self.clock()
        started, latest = self.samples[0][0], self.samples[-1][1]
        if now - started < self.window_s:
            return None
        before = next(r for t, r in reversed(self.samples) if t <= now - self.window_s)
        rate = (before - latest) / self.window_s  # arcs per second, net of rip-ups
        finish = now - started + (latest / rate if rate > 0 else math.inf)
        if finish <= self.budget_s:
            return None
        return RoutingStalled(
            f"nextpnr's routing is congested: {latest} arcs left after {now - started:.0f} s of routing, "
            f"{max(rate, 0):.0f} arcs/s over the last {self.window_s:.0f} s; it would not finish within "
            f"{self.budget_s:.0f} s"
        )


def place_and_route(
    workdir: Path,
    netlist: Path,
    family: str,
    device: str,
    package: str,
    clock_mhz: float,
    *,
    constraints: Path | None = None,
    seed: int | None = None,
    allow_timing_fail: bool = True,
    name: str | None = None,
    log_name: str = "pnr.log",
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
    route_watch: RouteWatch | None = None,
) -> PnrResult:
    """Place and route ``netlist`` (yosys JSON) on ``device``/``package`` aiming at ``clock_mhz``.

    Without ``constraints`` (an LPF for ECP5, a PCF for iCE40) nextpnr places every IO itself; with them,
    pins they leave out are placed freely too. A design that misses ``clock_mhz`` still returns (with
    ``timing_met`` False) unless ``allow_timing_fail`` is False, which makes nextpnr fail instead.
    """
    if family not in DEVICES:
        raise ToolError(f"unknown FPGA family '{family}'; choose one of {', '.join(DEVICES)}")
    if device not in DEVICES[family]:
        raise ToolError(f"unknown {family} device '{device}'; choose one of {', '.join(DEVICES[family])}")
    if clock_mhz <= 0:
        raise ToolError(f"clock frequency must be positive, got {clock_mhz} MHz")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stem = name or Path(netlist).stem
    output = workdir / f"{stem}{_PNR_SUFFIX[family]}"
    report = workdir / f"{stem}.pnr.json"
    log = workdir / log_name
    argv = [*find_tool(f"nextpnr-{family}"), f"--{device}", "--package", package]
    argv += ["--json", relpath(netlist, workdir), "--freq", f"{clock_mhz:g}"]
    if constraints is not None:
        kind = "lpf" if family == "ecp5" else "pcf"
        argv += [f"--{kind}", relpath(constraints, workdir), f"--{kind}-allow-unconstrained"]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if allow_timing_fail:
        argv.append("--timing-allow-fail")
    with staged_outputs(output, report) as (output_tmp, report_tmp):
        argv += ["--textcfg" if family == "ecp5" else "--asc", output_tmp.name, "--report", report_tmp.name]
        try:
            watch_lines = route_watch if on_line is None else _both(on_line, route_watch)
            run = run_tool(
                argv,
                cwd=workdir,
                log_path=log,
                on_line=watch_lines,
                timeout=timeout,
                stop_check=route_watch.check if route_watch else None,
            )
        except ToolError as exc:
            hint = _io_hint(log) if log.exists() else ""
            if hint:
                raise ToolError(f"{exc}{hint}") from exc
            raise
    utilization, clocks = parse_report(json.loads(report.read_text(encoding="utf-8")))
    fmax = min((c.achieved_mhz for c in clocks.values()), default=None)
    return PnrResult(
        family=family,
        device=device,
        package=package,
        clock_mhz=clock_mhz,
        output=output,
        report=report,
        log=log,
        utilization=utilization,
        clocks=clocks,
        fmax_mhz=fmax,
        timing_met=all(c.met for c in clocks.values()),
        seconds=run.seconds,
    )


def _both(first: Callable[[str], None], second: Callable[[str], None] | None) -> Callable[[str], None]:
    def call(line: str) -> None:
        first(line)
        if second is not None:
            second(line)

    return call


def pack(
    workdir: Path,
    family: str,
    pnr: PnrResult,
    *,
    compress: bool = True,
    log_name: str = "pack.log",
    timeout: float | None = None,
) -> Path:
    """Turn a place-and-route result into the bitstream: ``.bit`` (ecppack) or ``.bin`` (icepack)."""
    if family != pnr.family:
        raise ToolError(f"cannot pack a {pnr.family} design as {family}; pass the family it was routed for")
    workdir = Path(workdir)
    bitstream = workdir / f"{pnr.output.stem}{_BIT_SUFFIX[family]}"
    with staged_outputs(bitstream) as (tmp,):
        if family == "ecp5":
            argv = [*find_tool("ecppack"), *(["--compress"] if compress else [])]
        else:
            argv = [*find_tool("icepack")]
        argv += [relpath(pnr.output, workdir), tmp.name]
        run_tool(argv, cwd=workdir, log_path=workdir / log_name, timeout=timeout)
    return bitstream
