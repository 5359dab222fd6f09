"""``board``: an FPGA board programmed with openFPGALoader, spoken to over a serial line (UART).

URI: ``board:NAME?port=PORT&baud=115200&program=auto|always|never&cable=CABLE&timeout=2``. ``NAME``
names the board (``BOARDS``); ``PORT`` is anything pyserial's ``serial_for_url`` opens (``/dev/ttyUSB0``,
a pseudo-terminal, ``socket://host:port``). The options may also be given as keyword arguments.

The board runs the bundle's bitstream: the generated core behind ``gw_board``, the UART wrapper whose
framing protocol is docs/framing.md. Loading a bundle programs the board where needed (``program``),
then asks it IDENT and checks that it runs this bundle's design. An inference quantizes the input on
the host as the emulator does, sends one INFER frame per sample under the protocol's flow control,
and runs the dequantization and host part of the model exactly as ``emu`` does.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import serial

from gatewright.build.bundle import Bundle
from gatewright.cache import cache_root
from gatewright.devices.base import Device, DeviceInfo, Model
from gatewright.devices.emu import HardwareModel
from gatewright.errors import DeviceError, InferenceError, ToolError
from gatewright.hw import framing
from gatewright.hw.framing import FrameDecoder, IdentResponse, InferResponse
from gatewright.toolchain.tools import run_tool

log = logging.getLogger("gatewright")

BOARDS_VARIABLE = "GATEWRIGHT_BOARDS"
OPTIONS = ("port", "baud", "program", "cable", "timeout")
PROGRAM_MODES = ("auto", "always", "never")
DEFAULT_BAUD = 115200
DEFAULT_TIMEOUT_S = 2.0
PROGRAM_TIMEOUT_S = 600.0  # writing a bitstream through a slow probe (CMSIS-DAP) takes minutes
REOPEN_S = 5.0  # after programming, a USB serial port may vanish and come back (ULX3S: one FTDI chip)
IDENT_TRIES = 3  # a freshly configured board loses bytes during its power-on reset
POLL_S = 0.02  # serial read timeout: how often the host checks its deadlines
MIN_QUIET_S = 0.05


@dataclass(frozen=True)
class BoardSpec:
    """A board gatewright can program: its openFPGALoader ``-b`` name, the targets its FPGA fits, and
    the oscillator on the clock pin (gw_top has no PLL: the build's --clock-mhz must equal it)."""

    name: str
    loader: str
    fpga: str
    clock_mhz: float
    targets: tuple[str, ...]


BOARDS: dict[str, BoardSpec] = {
    b.name: b
    for b in (
        BoardSpec("ulx3s", "ulx3s", "ECP5 LFE5U-25F/45F/85F", 25.0, ("ecp5-25k", "ecp5-45k", "ecp5-85k")),
        BoardSpec("orangecrab", "orangeCrab", "ECP5 LFE5U-25F/85F", 48.0, ("ecp5-25k", "ecp5-85k")),
        BoardSpec("colorlight-i5", "colorlight-i5", "ECP5 LFE5U-25F", 25.0, ("ecp5-25k",)),
        BoardSpec("ecp5-evn", "ecp5_evn", "ECP5 LFE5UM5G-85F", 12.0, ("ecp5-85k",)),
        BoardSpec("icebreaker", "ice40_generic", "iCE40 UP5K", 12.0, ("ice40-up5k",)),
        BoardSpec("ice40-hx8k-breakout", "ice40_generic", "iCE40 HX8K", 12.0, ("ice40-hx8k",)),
    )
}


@dataclass(frozen=True)
class Expected:
    """What the board must answer to IDENT for a bundle: its design id and vector shapes."""

    design_id: int
    n_in: int
    in_bits: int
    n_out: int
    out_bits: int

    @classmethod
    def of(cls, bundle: Bundle) -> Expected:
        architecture = bundle.manifest.get("architecture") or {}
        try:
            return cls(
                int(str(architecture["design_id"]), 16),
                *(int(architecture[key]) for key in ("n_in", "in_bits", "n_out", "out_bits")),
            )
        except (KeyError, TypeError, ValueError):
            raise DeviceError(
                f"{bundle.path}: the bundle has no hardware design (built --until quantize?); a board runs "
                "bundles built with `--until bitstream` (or `--until rtl` for a simulated board)"
            ) from None

    def check(self, ident: IdentResponse) -> None:
        framing.check_ident(
            ident,
            design_id=self.design_id,
            n_in=self.n_in,
            in_bits=self.in_bits,
            n_out=self.n_out,
            out_bits=self.out_bits,
        )


class UartLink:
    """The serial line to a board running ``gw_board``: IDENT, pipelined INFER, and resynchronization."""

    def __init__(self, port: str, baud: int, timeout: float, expected: Expected) -> None:
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.expected = expected
        self.in_step = False  # True once an IDENT answered as expected and no exchange failed since
        try:
            self.serial = serial.serial_for_url(
                port, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=POLL_S, write_timeout=timeout
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            raise DeviceError(
                f"cannot open serial port '{port}' ({exc}); check the port= option, that the board is plugged "
                "in, and that you may use the port (on Linux: the dialout group)"
            ) from None

    def _read(self) -> bytes:
        data: bytes = self.serial.read(max(1, self.serial.in_waiting))
        return data

    def _byte_time(self) -> float:
        return 10.0 / self.baud

    def ident(self, timeout: float | None = None) -> IdentResponse:
        """Ask IDENT; responses that come before its answer are late answers to earlier requests."""
        wait = timeout if timeout is not None else self.timeout
        decoder = FrameDecoder(self.expected.n_out, self.expected.out_bits)
        try:
            self.serial.write(framing.encode_ident())
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"cannot send IDENT on '{self.port}' ({exc})") from None
        deadline = time.monotonic() + wait
        received, problem = 0, ""
        while time.monotonic() < deadline:
            try:
                chunk = self._read()
            except (serial.SerialException, OSError) as exc:
                raise DeviceError(f"reading '{self.port}' failed while waiting for IDENT ({exc})") from None
            received += len(chunk)
            try:
                responses = decoder.feed(chunk)
            except DeviceError as exc:  # keep listening: the decoder hunts for the next sync byte
                problem = f" ({exc})"
                continue
            for response in responses:
                if isinstance(response, IdentResponse):
                    return response
        heard = f"{received} bytes that hold no IDENT answer{problem}" if received else "nothing"
        raise DeviceError(
            f"no answer to IDENT on '{self.port}' within {wait:g} s (heard {heard}); check that the board is "
            f"programmed with this bundle (program=auto programs it), the port, and the baud rate ({self.baud})"
        )

    def drain(self) -> None:
        """Read until the line has been quiet for longer than the board's frame timeout, then drop
        what came: late answers to earlier requests must not be taken for answers to the next ones."""
        quiet = max(MIN_QUIET_S, 2 * framing.DEFAULT_TIMEOUT_BYTES * self._byte_time())
        end = time.monotonic() + self.timeout
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            if self._read():
                last = time.monotonic()
        self.serial.reset_input_buffer()

    def resync(self) -> None:
        """Get back in step after a failed exchange (docs/framing.md): stay silent until the board has
        dropped any partial frame and sent what it had queued, IDENT, then let any other late answer
        (an earlier IDENT's) go by."""
        self.in_step = False
        self.drain()
        self.expected.check(self.ident())
        self.drain()
        self.in_step = True

    def infer(self, raw: np.ndarray) -> np.ndarray:
        """Raw input vectors ``(batch, n_in)`` to raw output vectors ``(batch, n_out)``, one INFER each.

        Request k+1 goes out once the first byte of response k has arrived (the protocol's flow control),
        so the line carries a request and a response at the same time. A failure resynchronizes the link
        and raises InferenceError; the next call works again.
        """
        shape = self.expected
        count = len(raw)
        out = np.zeros((count, shape.n_out), dtype=np.int64)
        if count == 0:
            return out
        frames = framing.encode_batch(raw, shape.in_bits)
        size = framing.infer_request_size(shape.n_in, shape.in_bits)
        per_response = self.timeout + 2 * (size + framing.infer_response_size(shape.n_out, shape.out_bits)) * (
            self._byte_time()
        )
        if not self.in_step:
            try:
                self.resync()
            except (DeviceError, serial.SerialException, OSError) as exc:
                raise InferenceError(
                    f"the link to the board is out of step and cannot be recovered: {exc}", "unavailable"
                ) from None
        try:
            self.in_step = False  # until every answer is in: an interrupted call leaves answers in flight
            self.serial.reset_input_buffer()  # bytes that came while idle are line noise, not answers
            decoder = FrameDecoder(shape.n_out, shape.out_bits)
            done = sent = 0
            deadline = time.monotonic() + per_response
            while done < count:
                started = done + (1 if decoder.buffered else 0)  # responses whose first byte has arrived
                while sent < count and sent <= started:
                    self.serial.write(frames[sent * size : (sent + 1) * size])  # one write: no stall mid-frame
                    sent += 1
                chunk = self._read()
                if not chunk:
                    if time.monotonic() > deadline:
                        raise _Failed(
                            f"no answer from the board on '{self.port}' within {per_response:.3g} s "
                            f"({done} of {count} responses received)",
                            "unavailable",
                        )
                    continue
                for response in decoder.feed(chunk):
                    if not isinstance(response, InferResponse):
                        what = response.message if isinstance(response, framing.ErrorResponse) else "IDENT"
                        raise _Failed(f"response {done} of {count} is not an INFER result: {what}", "internal")
                    out[done] = response.values
                    done += 1
                    deadline = time.monotonic() + per_response
            self.in_step = True
        except _Failed as exc:
            raise InferenceError(self._recover(str(exc)), exc.status) from None
        except DeviceError as exc:  # a malformed response, or a resync that found the board out of step
            raise InferenceError(self._recover(str(exc)), "internal") from None
        except (serial.SerialException, OSError) as exc:
            self.in_step = False
            raise InferenceError(f"the serial port '{self.port}' failed ({exc})", "unavailable") from None
        return out

    def _recover(self, problem: str) -> str:
        """Resynchronize after ``problem``; the message for the user says whether that worked."""
        try:
            self.resync()
        except (DeviceError, serial.SerialException, OSError) as exc:
            return f"{problem}; resynchronizing failed too ({exc})"
        return f"{problem}; the link is resynchronized, the next request can go ahead"

    def close(self) -> None:
        self.serial.close()


class _Failed(Exception):
    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class BoardModel(HardwareModel):
    """The emulated model with the hardware part replaced by the board, reached over a UART."""

    link: UartLink

    def run_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.link.infer(raw)

    def close(self) -> None:
        self.link.close()


class BoardDevice(Device):
    kind = "board"

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri)
        name, _, query = uri.partition(":")[2].partition("?")
        if not name:
            raise DeviceError(f"device '{uri}' names no board; write board:NAME?port=PORT (boards: {_known()})")
        given: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in given:
                raise DeviceError(f"device '{uri}': option '{key}' given twice")
            given[key] = value
        given.update(options)
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise DeviceError(
                f"device '{uri}': unknown option(s) {', '.join(unknown)}; a board takes {', '.join(OPTIONS)}"
            )
        self.name = name
        self.spec = BOARDS.get(name)
        self.port = str(given.get("port") or "")
        if not self.port:
            raise DeviceError(
                f"device '{uri}' needs a serial port: add it to the URI (board:{name}?port=/dev/ttyUSB0) or pass "
                "port=...; a simulated board's port comes from gatewright.hw.bridge.PtyBridge (docs/board.md)"
            )
        if "://" not in self.port and not os.path.exists(self.port):
            raise DeviceError(f"device '{uri}': serial port {self.port} does not exist; is the board plugged in?")
        self.baud = int(_positive(uri, "baud", given.get("baud", DEFAULT_BAUD), integer=True))
        self.timeout = _positive(uri, "timeout", given.get("timeout", DEFAULT_TIMEOUT_S), integer=False)
        self.program = str(given.get("program", "auto"))
        if self.program not in PROGRAM_MODES:
            raise DeviceError(f"device '{uri}': program={self.program}; choose one of {', '.join(PROGRAM_MODES)}")
        self.cable = str(given["cable"]) if given.get("cable") else None

    @classmethod
    def discover(cls) -> list[str]:
        """The boards named in ``GATEWRIGHT_BOARDS`` (comma-separated URIs): serial ports cannot say
        which board sits behind them."""
        return [uri.strip() for uri in os.environ.get(BOARDS_VARIABLE, "").split(",") if uri.strip()]

    def info(self) -> DeviceInfo:
        fpga = f" ({self.spec.fpga})" if self.spec else ""
        return DeviceInfo(
            uri=self.uri,
            kind=self.kind,
            description=f"FPGA board '{self.name}'{fpga} over a UART on {self.port}, programmed with openFPGALoader",
            max_models=1,  # one bitstream per FPGA
            max_batch=None,
            dtypes=("float32", "float64"),
            runs="bundle",
            extra={
                "board": self.name,
                "port": self.port,
                "baud": self.baud,
                "program": self.program,
                "cable": self.cable,
                "openfpgaloader_board": self.spec.loader if self.spec else None,
                "targets": list(self.spec.targets) if self.spec else [],
                "clock_mhz": self.spec.clock_mhz if self.spec else None,
            },
        )

    def _load(self, source: Bundle | Path) -> Model:
        if not isinstance(source, Bundle):
            raise DeviceError(
                f"{source}: a board runs firmware bundles, not plain models; build one first with "
                f"`gatewright build {source} --target TARGET --out DIR` and load DIR"
            )
        expected = Expected.of(source)
        bundle_baud = (source.manifest.get("architecture") or {}).get("baud")
        if bundle_baud and int(bundle_baud) != self.baud:
            log.warning("%s: the bundle's UART runs at %s baud, the port at %s", self.uri, bundle_baud, self.baud)
        model = BoardModel.from_bundle(source)  # a damaged bundle fails before the board is touched
        assert isinstance(model, BoardModel)
        programmed = ""
        mismatch = self._mismatch(expected) if self.program == "auto" else None
        if self.program == "always" or mismatch:
            try:
                argv = program_command(self.name, self.spec, source, self.cable)
            except DeviceError as exc:
                if mismatch:
                    raise DeviceError(f"{self.uri}: the board does not run this bundle ({mismatch}); {exc}") from None
                raise
            self._run_loader(argv, source)
            programmed = f" (just programmed with {argv[-1]})"
            link = self._open_after_programming(expected)
        else:
            link = UartLink(self.port, self.baud, self.timeout, expected)
        try:
            expected.check(self._ident(link, IDENT_TRIES if programmed else 1))
        except DeviceError as exc:
            link.close()
            raise DeviceError(f"{self.uri} on {self.port}{programmed}, loading {source.path}: {exc}") from None
        except BaseException:
            link.close()
            raise
        link.in_step = True
        model.link = link
        return model

    def _mismatch(self, expected: Expected) -> str | None:
        """Why the board does not run the bundle (no answer, another design), or None when it does."""
        link = UartLink(self.port, self.baud, self.timeout, expected)
        try:
            expected.check(link.ident())
        except DeviceError as exc:
            log.info("%s: the board needs programming: %s", self.uri, exc)
            return str(exc)
        finally:
            link.close()
        return None

    def _ident(self, link: UartLink, tries: int) -> IdentResponse:
        # a freshly configured board may lose the first request in its power-on reset; the silence of
        # a timed-out try is longer than the board's frame timeout, so the next try starts clean
        for attempt in range(1, tries + 1):
            try:
                ident = link.ident()
            except DeviceError:
                if attempt == tries:
                    raise
                continue
            if attempt > 1:
                link.drain()  # an earlier try may still be answered
            return ident
        raise AssertionError("unreachable")

    def _open_after_programming(self, expected: Expected) -> UartLink:
        deadline = time.monotonic() + REOPEN_S
        while True:
            try:
                return UartLink(self.port, self.baud, self.timeout, expected)
            except DeviceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _run_loader(self, argv: list[str], bundle: Bundle) -> None:
        logfile = cache_root() / "board" / f"openFPGALoader-{self.name}.log"
        log.info("%s: programming: %s", self.uri, " ".join(argv))
        try:
            run_tool(argv, cwd=bundle.path, log_path=logfile, timeout=PROGRAM_TIMEOUT_S)
        except ToolError as exc:
            raise DeviceError(
                f"programming board '{self.name}' failed: {exc}\n       Check the USB connection, the board "
                "name and the cable (cable=...), and that you may use the USB device (udev rules)."
            ) from None

    def _release(self, model: Model) -> None:
        if isinstance(model, BoardModel):
            model.close()


def program_command(name: str, spec: BoardSpec | None, bundle: Bundle, cable: str | None = None) -> list[str]:
    """The openFPGALoader command that loads the bundle's bitstream into the board's SRAM."""
    if spec is None:
        raise DeviceError(
            f"unknown board '{name}', so gatewright cannot program it (boards: {_known()}); program it yourself "
            "and use program=never"
        )
    target = str(bundle.manifest.get("target"))
    if target not in spec.targets:
        raise DeviceError(
            f"{bundle.path}: the bundle is built for {target}, board '{name}' carries an {spec.fpga}; "
            f"rebuild it with --target {' or --target '.join(spec.targets)}"
        )
    architecture = bundle.manifest.get("architecture") or {}
    clock = architecture.get("clock_mhz")
    if clock is not None and not math.isclose(float(clock), spec.clock_mhz):
        raise DeviceError(
            f"{bundle.path}: the bundle is built for a {clock:g} MHz clock, board '{name}' clocks its FPGA at "
            f"{spec.clock_mhz:g} MHz, so the UART would run at the wrong baud rate; rebuild it with "
            f"--clock-mhz {spec.clock_mhz:g}"
        )
    bitstream_name = architecture.get("bitstream")
    bitstream = bundle.path / str(bitstream_name) if bitstream_name else None
    if bitstream is None or not bitstream.is_file():
        raise DeviceError(
            f"{bundle.path}: the bundle has no bitstream to program; build it with `--until bitstream` "
            f"(--target {target})"
        )
    loader = shutil.which("openFPGALoader")
    if loader is None:
        raise DeviceError(
            "openFPGALoader is not on PATH: install it (`apt-get install openfpgaloader`, or from "
            "https://github.com/trabucayre/openFPGALoader), or program the board yourself and use program=never"
        )
    return [loader, "-b", spec.loader, *(["--cable", cable] if cable else []), str(bitstream)]


def _known() -> str:
    return ", ".join(BOARDS)


def _positive(uri: str, key: str, value: Any, integer: bool) -> float:
    try:
        number: float = int(value) if integer else float(value)
    except (TypeError, ValueError):
        number = 0
    if not number > 0:
        kind = "a positive whole number" if integer else "a positive number"
        raise DeviceError(f"device '{uri}': {key}={value} is not {kind}")
    return number
