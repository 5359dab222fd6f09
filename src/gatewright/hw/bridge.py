"""A simulated board: a bundle's ``gw_board`` (the core behind its UART wrapper) in Verilator, with the
serial line on a pseudo-terminal, so the ``board`` device talks to it exactly as to an FPGA.

``build_bridge`` compiles ``rtl/uart_bridge.cpp`` around the bundle's RTL (cached by content, like the
simulators of ``gatewright.hw.sim``); ``PtyBridge`` runs it with its stdin and stdout on the master side
of a pseudo-terminal and gives the slave side as ``port`` (``/dev/pts/N``) for pyserial::

    with PtyBridge(build_bridge(bundle_dir)) as bridge:
        with devices.open(f"board:sim?port={bridge.port}&program=never") as dev:
            dev.load(bundle_dir).infer(...)

The wrapper gets the parameters the bitstream's top level (``gw_top.v``) gives it: the vector shapes
and the design id. Only ``CLKS_PER_BIT`` differs (4 by default, not the clock / baud ratio of the
board): the protocol does not depend on the bit time, and a short bit keeps the simulation fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tty
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gatewright.cache import cache_root, cached_build
from gatewright.errors import BundleError, DeviceError
from gatewright.hw.core import STATIC_RTL

BRIDGE_CPP = STATIC_RTL / "uart_bridge.cpp"
WRAPPER = "gw_uart.v"
WRAPPER_TOP = "gw_board"
BINARY = "gw_bridge"
PARAMETERS = ("N_IN", "IN_BITS", "N_OUT", "OUT_BITS", "CLKS_PER_BIT", "DESIGN_ID")
_PARAMETER = re.compile(r"\.([A-Z_]+)\s*\(\s*([^()]*?)\s*\)")


@dataclass(frozen=True)
class BoardRtl:
    """What the bridge simulates: the core's sources and the wrapper's parameters (Verilog literals)."""

    rtl_dir: Path
    sources: tuple[str, ...]  # the core, then the wrapper
    parameters: dict[str, str]

    def verilator_args(self) -> list[str]:
        return [f"-G{name}={value}" for name, value in self.parameters.items()]


def board_rtl(bundle_path: str | Path, clks_per_bit: int | None = 4) -> BoardRtl:
    """The RTL of a bundle's board top level, with ``CLKS_PER_BIT`` replaced (None keeps the board's)."""
    bundle = Path(bundle_path)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        architecture = manifest.get("architecture") or {}
        rtl_dir = bundle / str(architecture.get("rtl", "rtl"))
        top_file = rtl_dir / f"{architecture.get('board_top', 'gw_top')}.v"
        design = json.loads((rtl_dir / "design.json").read_text())
        sources = (*(str(name) for name in design["sources"]), WRAPPER)
        top = top_file.read_text()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(
            f"{bundle}: no board top level to simulate ({exc}); build the bundle with `--until rtl` or later"
        ) from None
    # gw_top instantiates gw_board with every parameter: take them as the bitstream gets them
    found = {name: value for name, value in _PARAMETER.findall(top) if name in PARAMETERS}
    missing = [name for name in PARAMETERS if name not in found]
    if missing:
        raise BundleError(f"{top_file}: the gw_board instance lacks {', '.join(missing)}; rebuild the bundle")
    if clks_per_bit is not None:
        if clks_per_bit < 4:
            raise DeviceError(f"clks_per_bit is {clks_per_bit}: the UART wrapper needs at least 4 clocks per bit")
        found["CLKS_PER_BIT"] = str(clks_per_bit)
    for name in sources:
        if not (rtl_dir / name).is_file():
            raise BundleError(f"{rtl_dir}: the bundle lacks {name}; rebuild it")
    return BoardRtl(rtl_dir, sources, {name: found[name] for name in PARAMETERS})


def bridge_key(rtl: BoardRtl) -> str:
    from gatewright.toolchain.verilator import verilator_version

    digest = hashlib.sha256()
    for name in rtl.sources:
        digest.update(name.encode() + b"\0" + (rtl.rtl_dir / name).read_bytes() + b"\0")
    digest.update(BRIDGE_CPP.read_bytes())
    digest.update(" ".join(rtl.verilator_args()).encode())
    digest.update(verilator_version().encode())
    return digest.hexdigest()[:32]


def build_bridge(bundle_path: str | Path, clks_per_bit: int | None = 4, log_path: Path | None = None) -> Path:
    """The UART bridge binary for a bundle's board top level: from the cache when built before, else
    Verilated now (half a minute to a few minutes). Needs Verilator, make and a C++ compiler."""
    from gatewright.toolchain.verilator import build_simulator

    rtl = board_rtl(bundle_path, clks_per_bit)

    def make(work: Path) -> Path:
        for name in rtl.sources:
            shutil.copyfile(rtl.rtl_dir / name, work / name)
        # the default bit time as a #define in the source: Verilator's precompiled headers break on -CFLAGS -D
        cpp = work / BRIDGE_CPP.name
        cpp.write_text(f"#define GW_CLKS_PER_BIT {rtl.parameters['CLKS_PER_BIT']}\n" + BRIDGE_CPP.read_text())
        return build_simulator(
            work,
            [work / name for name in rtl.sources],
            WRAPPER_TOP,  # uart_bridge.cpp includes Vgw_board.h
            [cpp],
            BINARY,
            log_path or cache_root() / "bridge" / "last-build.log",
            jobs=os.cpu_count() or 2,
            extra_args=["-Wno-lint", "-Wno-style", *rtl.verilator_args()],
        )

    return cached_build("bridge", bridge_key(rtl), BINARY, make)[0]


class PtyBridge:
    """A running bridge whose serial line is a pseudo-terminal: open ``port`` with pyserial.

    The bridge exits once its stdin closes, and the master side of a pseudo-terminal reads as closed
    (EIO) whenever no process holds the slave side open, e.g. each time a host closes the port. This
    object keeps a slave descriptor open for the bridge's whole life, so hosts may come and go.
    """

    def __init__(self, binary: str | Path) -> None:
        master, slave = os.openpty()
        # raw: no echo (it would loop the board's replies back into it), no line editing, no CR/LF
        # translation; pyserial sets the same when it opens the port
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open while the bridge runs; close() closes it
        try:
            self.process = subprocess.Popen([str(binary)], stdin=master, stdout=master, stderr=self._stderr)
        except OSError as exc:
            self._close_fds()
            raise DeviceError(f"{binary}: cannot start the UART bridge ({exc}); rebuild it with build_bridge") from None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def send_to_host(self, data: bytes) -> None:
        """Put bytes on the line from the board's side, as noise would: the host reads them from ``port``."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:  # the bridge made the shared master descriptor non-blocking
                continue
            view = view[written:]

    def stderr_text(self) -> str:
        """What the bridge wrote to its standard error (framing errors, argument errors)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def close(self) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # stopped (SIGSTOP) or stuck: SIGKILL works on both
                self.process.kill()
                self.process.wait()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
        self._stderr.close()

    def __enter__(self) -> PtyBridge:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["BoardRtl", "PtyBridge", "board_rtl", "bridge_key", "build_bridge"]
