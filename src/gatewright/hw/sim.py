"""Cycle-accurate simulation of the generated core: Verilator builds it with a C++ harness that
streams whole batches; the compiled simulator is cached by content and reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatewright.cache import cached_build
from gatewright.errors import InferenceError
from gatewright.hw.core import CORE, STATIC_RTL

HARNESS = STATIC_RTL / "sim_harness.cpp"
REQUEST, RESPONSE = 0x51535747, 0x52535747
BINARY = "gw_sim"


@dataclass(frozen=True)
class SimShape:
    n_in: int
    in_bits: int
    n_out: int
    out_bits: int

    def defines(self) -> list[str]:
        return [
            f"-DN_IN={self.n_in}",
            f"-DIN_BITS={self.in_bits}",
            f"-DN_OUT={self.n_out}",
            f"-DOUT_BITS={self.out_bits}",
        ]


def simulator_key(rtl_dir: Path, sources: list[str], shape: SimShape) -> str:
    from gatewright.toolchain.verilator import verilator_version

    digest = hashlib.sha256()
    for name in sources:
        digest.update(name.encode() + b"\0" + (rtl_dir / name).read_bytes() + b"\0")
    digest.update(HARNESS.read_bytes())
    digest.update(" ".join(shape.defines()).encode())
    digest.update(verilator_version().encode())
    return digest.hexdigest()[:32]


def build(rtl_dir: Path, sources: list[str], shape: SimShape, log_path: Path) -> tuple[Path, bool]:
    """The simulator binary for this RTL: from the cache when built before, else Verilated now.
    Returns (binary, reused)."""
    from gatewright.toolchain.verilator import build_simulator

    def make(work: Path) -> Path:
        for name in sources:
            shutil.copyfile(rtl_dir / name, work / name)
        # the sizes as #defines in the harness itself: Verilator's precompiled headers break on -CFLAGS -D...
        defines = "".join(f"#define {d[2:].replace('=', ' ')}\n" for d in shape.defines())
        (work / HARNESS.name).write_text(defines + HARNESS.read_text())
        return build_simulator(
            work,
            [work / name for name in sources],
            CORE,
            [work / HARNESS.name],
            BINARY,
            log_path,
            jobs=os.cpu_count() or 2,
            extra_args=["-Wno-lint", "-Wno-style"],
        )

    return cached_build("sim", simulator_key(rtl_dir, sources, shape), BINARY, make)


@dataclass
class SimResult:
    outputs: np.ndarray  # int64 (batch, n_out) raw
    cycles: int  # first input accepted to last output delivered
    latency: int  # first input's handshake to its output


class Simulator:
    """A running simulator process: batches in, raw outputs and cycle counts out. Thread-safe."""

    def __init__(self, binary: Path, shape: SimShape) -> None:
        self.shape = shape
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def run(self, raw: np.ndarray, backpressure: bool = False) -> SimResult:
        raw = np.ascontiguousarray(raw, dtype="<i8").reshape(-1, self.shape.n_in)
        count = raw.shape[0]
        if count == 0:
            return SimResult(np.zeros((0, self.shape.n_out), dtype=np.int64), 0, 0)
        with self._lock:
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(struct.pack("<III", REQUEST, count, int(backpressure)) + raw.tobytes())
                process.stdin.flush()
                head = process.stdout.read(32)
                magic, got, cycles, latency, status = struct.unpack("<IIQQQ", head)
                body = process.stdout.read(8 * count * self.shape.n_out)
            except (OSError, struct.error, ValueError) as exc:
                raise InferenceError(
                    f"the simulator stopped answering ({exc}): {self._stderr()}", status="unavailable"
                ) from None
        if magic != RESPONSE or got != count or len(body) != 8 * count * self.shape.n_out:
            raise InferenceError(f"the simulator answered out of protocol: {self._stderr()}")
        if status:
            raise InferenceError(f"the simulated core stalled: {count} inputs did not all come out; the RTL is faulty")
        outputs = np.frombuffer(body, dtype="<i8").reshape(count, self.shape.n_out).astype(np.int64)
        return SimResult(outputs, int(cycles), int(latency))

    def _stderr(self) -> str:
        self._process.poll()
        if self._process.returncode is None:
            return "no error output"
        assert self._process.stderr is not None
        return self._process.stderr.read().decode(errors="replace").strip() or f"exit {self._process.returncode}"

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_simulator(rtl_dir: Path, sources: list[str], shape: SimShape, log_path: Path) -> Simulator:
    binary, _ = build(rtl_dir, sources, shape, log_path)
    return Simulator(binary, shape)


__all__ = ["SimResult", "SimShape", "Simulator", "build", "open_simulator"]
