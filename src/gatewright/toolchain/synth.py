"""Synthesis with yosys (synth_ecp5 / synth_ice40) and its cell-count report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gatewright.errors import ToolError
from gatewright.toolchain.tools import find_tool, relpath, run_tool, staged_outputs

__all__ = ["Family", "SynthResult", "cell_resources", "synthesize"]

Family = Literal["ecp5", "ice40"]
FAMILIES: tuple[str, ...] = ("ecp5", "ice40")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


@dataclass(frozen=True)
class SynthResult:
    """What synthesis produced and how many cells of each kind it used.

    ``luts`` counts LUT4 cells only; ECP5 carry chains (CCU2C, two LUT4 positions each) and iCE40
    carries (SB_CARRY, sharing a logic cell with its LUT) are in ``carries``.
    """

    family: str
    top: str
    netlist: Path
    log: Path
    stat: Path
    cells: dict[str, int] = field(default_factory=dict)
    luts: int = 0
    carries: int = 0
    ffs: int = 0
    dsps: int = 0
    brams: int = 0
    seconds: float = 0.0


def cell_resources(family: str, cells: dict[str, int]) -> dict[str, int]:
    """Resources (luts, carries, ffs, dsps, brams) estimated from post-synthesis cell types."""

    def count(*prefixes: str) -> int:
        return sum(n for cell, n in cells.items() if cell.startswith(prefixes))

    if family == "ecp5":
        return {
            "luts": cells.get("LUT4", 0),
            "carries": cells.get("CCU2C", 0),
            "ffs": cells.get("TRELLIS_FF", 0),
            "dsps": cells.get("MULT18X18D", 0),
            "brams": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0),
        }
    if family == "ice40":
        return {
            "luts": cells.get("SB_LUT4", 0),
            "carries": cells.get("SB_CARRY", 0),
            "ffs": count("SB_DFF"),
            "dsps": cells.get("SB_MAC16", 0),
            "brams": count("SB_RAM40_4K"),
        }
    raise ToolError(f"unknown FPGA family '{family}'; choose one of {', '.join(FAMILIES)}")


def _quoted(path: str) -> str:
    if any(c in path for c in '"\n;'):
        raise ToolError(f"source path {path!r} contains a quote, newline or ';'; rename the file")
    return f'"{path}"'


def _cells_from_stat(stat_path: Path, top: str) -> dict[str, int]:
    data = json.loads(stat_path.read_text(encoding="utf-8"))
    design = data.get("design")
    if design is None:  # older yosys: per-module only; after flattening the top holds everything
        modules = data.get("modules", {})
        design = modules.get(f"\\{top}") or modules.get(top) or {}
    return {str(k): int(v) for k, v in design.get("num_cells_by_type", {}).items()}


def synthesize(
    workdir: Path,
    sources: Sequence[str | Path],
    top: str,
    family: Family,
    *,
    dsp: bool = True,
    defines: dict[str, str] | None = None,
    include_dirs: Sequence[str | Path] = (),
    log_name: str = "synth.log",
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> SynthResult:
    """Synthesize ``sources`` (Verilog / SystemVerilog) for ``family`` into ``workdir/<top>.json``.

    ``dsp`` lets yosys map multipliers to hard DSP blocks (ECP5 MULT18X18D, iCE40 SB_MAC16). iCE40
    DSP blocks exist on the UltraPlus parts only: pass ``dsp=False`` for hx8k.
    Writes the yosys script (``synth.ys``), the log, the netlist and ``<top>.stat.json`` into workdir.
    """
    if family not in FAMILIES:
        raise ToolError(f"unknown FPGA family '{family}'; choose one of {', '.join(FAMILIES)}")
    if not _IDENT.fullmatch(top):
        raise ToolError(f"top module name {top!r} is not a Verilog identifier")
    if not sources:
        raise ToolError(f"nothing to synthesize for '{top}': no source files given")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    netlist = workdir / f"{top}.json"
    stat = workdir / f"{top}.stat.json"
    log = workdir / log_name
    script_path = workdir / "synth.ys"
    read_opts = ["-sv"]
    read_opts += [f"-D{name}={value}" for name, value in (defines or {}).items()]
    read_opts += [f"-I{_quoted(relpath(d, workdir))}" for d in include_dirs]
    srcs = " ".join(_quoted(relpath(s, workdir)) for s in sources)
    with staged_outputs(netlist, stat) as (netlist_tmp, stat_tmp):
        if family == "ecp5":
            synth_cmd = f"synth_ecp5 -top {top}{'' if dsp else ' -nodsp'} -json {netlist_tmp.name}"
        else:
            synth_cmd = f"synth_ice40{' -dsp' if dsp else ''} -top {top} -json {netlist_tmp.name}"
        script = f"read_verilog {' '.join(read_opts)} {srcs}\n{synth_cmd}\ntee -q -o {stat_tmp.name} stat -json\n"
        script_path.write_text(script, encoding="utf-8")
        full_log = workdir / f"{log.stem}.yosys{log.suffix}"
        run = run_tool(
            [*find_tool("yosys"), "-l", full_log.name, "-s", script_path.name],
            cwd=workdir,
            log_path=log,
            on_line=on_line,
            timeout=timeout,
            tool_log=full_log,
        )
    cells = _cells_from_stat(stat, top)
    return SynthResult(
        family=family,
        top=top,
        netlist=netlist,
        log=log,
        stat=stat,
        cells=cells,
        seconds=run.seconds,
        **cell_resources(family, cells),
    )
