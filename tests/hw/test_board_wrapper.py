"""The UART board wrapper: the host codec (gatewright.hw.framing) and gw_board simulated with Verilator."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gatewright.errors import DeviceError, InputDataError
from gatewright.hw import framing
from gatewright.hw.framing import (
    ErrorResponse,
    FrameDecoder,
    IdentResponse,
    InferResponse,
    check_ident,
    decode_values,
    encode_batch,
    encode_ident,
    encode_infer,
)
from gatewright.toolchain.tools import find_tool
from gatewright.toolchain.verilator import build_simulator

RTL = Path(framing.__file__).parent / "rtl"


def _ok_infer(payload: bytes) -> bytes:
    return bytes([0x5A, 0x02, 0x00]) + payload


def _ident_frame(design_id: int, n_in: int, in_bits: int, n_out: int, out_bits: int, version: int = 1) -> bytes:
    return (
        bytes([0x5A, 0x01, 0x00, version])
        + design_id.to_bytes(4, "little")
        + n_in.to_bytes(2, "little")
        + bytes([in_bits])
        + n_out.to_bytes(2, "little")
        + bytes([out_bits])
    )


# ---------------------------------------------------------------------------------------------------------------
# framing.py, pure Python


def test_encode_ident_and_infer_exact_bytes() -> None:
    assert encode_ident() == b"\xa5\x01"
    # 12-bit values: two bytes each, little endian, sign-extended to 16 bits
    assert encode_infer(np.array([1, -1, -2048], dtype=np.int64), 12) == bytes(
        [0xA5, 0x02, 0x01, 0x00, 0xFF, 0xFF, 0x00, 0xF8]
    )
    # 8-bit values: one byte each
    assert encode_infer(np.array([127, -128, 5]), 8) == bytes([0xA5, 0x02, 0x7F, 0x80, 0x05])
    # 20-bit values: three bytes each
    assert encode_infer(np.array([-3, 0x7FFFF]), 20) == bytes([0xA5, 0x02, 0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0x07])
    assert framing.infer_request_size(3, 12) == 8 and framing.infer_response_size(2, 20) == 9


def test_encode_batch_is_frames_in_row_order() -> None:
    raw = np.array([[1, 2], [-1, -2], [3, -4]], dtype=np.int64)
    data = encode_batch(raw, 9)
    size = framing.infer_request_size(2, 9)
    assert len(data) == 3 * size
    assert [data[i * size : (i + 1) * size] for i in range(3)] == [encode_infer(row, 9) for row in raw]
    assert encode_batch(np.zeros((0, 4), dtype=np.int64), 8) == b""


@pytest.mark.parametrize("bits", range(2, 53))
def test_values_round_trip_with_sign_extension(bits: int) -> None:
    rng = np.random.default_rng(bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    vals = np.concatenate([[lo, hi, 0, -1, 1], rng.integers(lo, hi, size=40, endpoint=True)]).astype(np.int64)
    frame = encode_infer(vals, bits)
    nbytes = (bits + 7) // 8
    assert len(frame) == 2 + nbytes * vals.size
    payload = frame[2:]
    # every value's bytes are its two's complement in 8*nbytes bits
    for i, v in enumerate(vals.tolist()):
        assert payload[i * nbytes : (i + 1) * nbytes] == (v % (1 << (8 * nbytes))).to_bytes(nbytes, "little")
    np.testing.assert_array_equal(decode_values(payload, vals.size, bits), vals)
    # the decoder turns the same bytes into a response
    (resp,) = FrameDecoder(vals.size, bits).feed(_ok_infer(payload))
    assert isinstance(resp, InferResponse) and resp.values.dtype == np.int64
    np.testing.assert_array_equal(resp.values, vals)


def test_decoder_one_byte_at_a_time() -> None:
    vals = np.array([-5, 524287, -524288], dtype=np.int64)
    stream = _ident_frame(0xCAFE0001, 4, 12, 3, 20) + _ok_infer(encode_infer(vals, 20)[2:]) + b"\x5a\x42\x01"
    dec = FrameDecoder()  # learns the output shape from IDENT
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
        if i < 13:
            assert got == [] and dec.buffered == i + 1
    assert got[0] == IdentResponse(1, 0xCAFE0001, 4, 12, 3, 20)
    assert isinstance(got[1], InferResponse)
    np.testing.assert_array_equal(got[1].values, vals)
    assert got[2] == ErrorResponse(command=0x42, status=framing.STATUS_UNKNOWN_COMMAND)
    assert "0x42" in got[2].message and "unknown command" in got[2].message
    assert len(got) == 3 and dec.buffered == 0 and dec.skipped == 0


def test_decoder_skips_garbage_before_sync() -> None:
    dec = FrameDecoder(1, 8)
    assert dec.feed(b"\x00\x13\xff") == []
    assert dec.skipped == 3 and dec.buffered == 0
    (resp,) = dec.feed(b"\x77\x5a\x02\x00\x80")
    assert isinstance(resp, InferResponse) and resp.values.tolist() == [-128]
    assert dec.skipped == 4


def test_decoder_rejects_malformed_frames_and_resynchronizes() -> None:
    dec = FrameDecoder(2, 12)
    # a value that is not sign-extended (0x0800 in 16 bits is outside the 12-bit range)
    with pytest.raises(DeviceError, match=r"value 1 is 2048, outside the signed 12-bit range.*00 08"):
        dec.feed(_ok_infer(b"\x01\x00\x00\x08"))
    # the rest of the bad frame holds no sync byte: it is skipped, and the next frame decodes
    (resp,) = dec.feed(_ok_infer(b"\xff\xff\x00\xf8"))
    assert isinstance(resp, InferResponse) and resp.values.tolist() == [-1, -2048]
    with pytest.raises(DeviceError, match="unknown command byte 0x33"):
        dec.feed(b"\x5a\x33\x00")
    with pytest.raises(DeviceError, match="protocol version 9"):
        dec.feed(_ident_frame(1, 1, 8, 1, 8, version=9))


def test_decoder_keeps_responses_completed_before_an_error() -> None:
    dec = FrameDecoder(1, 8)
    with pytest.raises(DeviceError):
        dec.feed(_ok_infer(b"\x05") + b"\x5a\x33\x00" + _ok_infer(b"\x06"))
    got = dec.feed(b"")
    assert [r.values.tolist() for r in got if isinstance(r, InferResponse)] == [[5], [6]]


def test_decoder_needs_the_output_shape() -> None:
    with pytest.raises(DeviceError, match="send IDENT first"):
        FrameDecoder().feed(_ok_infer(b"\x01"))
    with pytest.raises(ValueError):
        FrameDecoder(n_out=3)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(InputDataError, match=r"value 2048 at index \(1,\) does not fit a signed 12-bit"):
        encode_infer(np.array([0, 2048]), 12)
    with pytest.raises(InputDataError, match=r"value -129 at index \(1, 0\)"):
        encode_batch(np.array([[1], [-129]]), 8)
    with pytest.raises(InputDataError, match="shape"):
        encode_infer(np.zeros((2, 2), dtype=np.int64), 8)
    with pytest.raises(InputDataError, match="dtype float"):
        encode_infer(np.array([0.5]), 8)
    with pytest.raises(InputDataError, match="1 to 64 bits"):
        encode_infer(np.array([0]), 65)


def test_check_ident_names_every_mismatch() -> None:
    ident = IdentResponse(1, 0x1234, 3, 12, 2, 20)
    check_ident(ident, design_id=0x1234, n_in=3, in_bits=12, n_out=2, out_bits=20)
    with pytest.raises(DeviceError, match=r"design_id 4660 \(expected 4661\), out_bits 20 \(expected 16\)"):
        check_ident(ident, design_id=0x1235, n_in=3, in_bits=12, n_out=2, out_bits=16)


# ---------------------------------------------------------------------------------------------------------------
# gw_board in Verilator, around a small hand-written gw_core

N_IN, IN_BITS, N_OUT, OUT_BITS = 3, 12, 2, 20
CLKS_PER_BIT = 4
DESIGN_ID = 0x6A7E5EED

# out0 = in0 + in1, out1 = in2 * -3; registered output; an LFSR holds in_ready low on some cycles.
TEST_CORE = """\
`default_nettype none
module gw_core (
  input  wire        clk,
  input  wire        rst,
  input  wire        in_valid,
  output wire        in_ready,
  input  wire [35:0] in_data,
  output reg         out_valid,
  input  wire        out_ready,
  output reg  [39:0] out_data
);
  reg  [7:0] lfsr;
  wire signed [19:0] a = {{8{in_data[11]}}, in_data[11:0]};
  wire signed [19:0] b = {{8{in_data[23]}}, in_data[23:12]};
  wire signed [19:0] c = {{8{in_data[35]}}, in_data[35:24]};
  wire signed [19:0] sum = a + b;
  wire signed [19:0] prod = c * -20'sd3;
  assign in_ready = (!out_valid || out_ready) && lfsr[0];
  always @(posedge clk) begin
    if (rst) begin
      lfsr <= 8'h5b;
      out_valid <= 1'b0;
      out_data <= 40'd0;
    end else begin
      lfsr <= {lfsr[6:0], lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3]};
      if (out_valid && out_ready) out_valid <= 1'b0;
      if (in_valid && in_ready) begin
        out_valid <= 1'b1;
        out_data <= {prod, sum};
      end
    end
  end
endmodule
`default_nettype wire
"""


def _verilator() -> list[str]:
    return find_tool("verilator")


def _stub_core(n_in: int, in_bits: int, n_out: int, out_bits: int) -> str:
    return f"""\
module gw_core (input wire clk, input wire rst, input wire in_valid, output wire in_ready,
  input wire [{n_in * in_bits - 1}:0] in_data, output wire out_valid, input wire out_ready,
  output wire [{n_out * out_bits - 1}:0] out_data);
  /* verilator lint_off UNUSEDSIGNAL */
  wire unused = ^{{clk, rst, in_valid, out_ready, in_data}};
  /* verilator lint_on UNUSEDSIGNAL */
  assign in_ready = 1'b1;
  assign out_valid = 1'b0;
  assign out_data = {{{n_out * out_bits}{{1'b0}}}};
endmodule
"""


def _params(n_in: int, in_bits: int, n_out: int, out_bits: int, clks_per_bit: int) -> list[str]:
    return [f"-GN_IN={n_in}", f"-GIN_BITS={in_bits}", f"-GN_OUT={n_out}", f"-GOUT_BITS={out_bits}",
            f"-GCLKS_PER_BIT={clks_per_bit}"]  # fmt: skip


@pytest.fixture(scope="module")
def bridge_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler to build the Verilator model")
    work = tmp_path_factory.mktemp("board")
    for name in ("gw_uart.v", "uart_bridge.cpp"):
        shutil.copy(RTL / name, work / name)
    (work / "gw_core.v").write_text(TEST_CORE)
    params = [*_params(N_IN, IN_BITS, N_OUT, OUT_BITS, CLKS_PER_BIT), f"-GDESIGN_ID=32'h{DESIGN_ID:08x}"]
    return build_simulator(
        work,
        [work / "gw_uart.v", work / "gw_core.v"],
        "gw_board",
        [work / "uart_bridge.cpp"],
        "gw_board_bridge",
        work / "verilator.log",
        extra_args=["-Wall", *params, "-CFLAGS", f"-DGW_CLKS_PER_BIT={CLKS_PER_BIT}"],
    )


class Board:
    """The bridge subprocess: frames go to its stdin, response bytes come back from its stdout."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.decoder = FrameDecoder(N_OUT, OUT_BITS)
        self.received = 0
        self._chunks: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            self._chunks.put(chunk)

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def poll(self, timeout: float) -> list[framing.Response]:
        """Responses completed by the bytes that arrive within ``timeout`` seconds (at least one chunk)."""
        try:
            chunk = self._chunks.get(timeout=timeout)
        except queue.Empty:
            return []
        self.received += len(chunk)
        return self.decoder.feed(chunk)

    def collect(self, count: int, timeout: float = 30.0) -> list[framing.Response]:
        got: list[framing.Response] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += self.poll(0.1)
        assert len(got) == count, f"expected {count} responses, got {got}"
        return got

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def board(bridge_binary: Path) -> Iterator[Board]:
    b = Board(bridge_binary)
    yield b
    if b.proc.poll() is None:
        b.proc.kill()
        b.proc.wait()


def _expected(raw: np.ndarray) -> np.ndarray:
    return np.stack([raw[:, 0] + raw[:, 1], raw[:, 2] * -3], axis=1)


@pytest.mark.toolchain
@pytest.mark.slow
def test_board_ident_matches_its_parameters(board: Board) -> None:
    board.send(b"\x13\x37" + encode_ident())  # garbage before the sync byte is ignored
    (ident,) = board.collect(1)
    assert ident == IdentResponse(1, DESIGN_ID, N_IN, IN_BITS, N_OUT, OUT_BITS)
    assert isinstance(ident, IdentResponse)
    check_ident(ident, design_id=DESIGN_ID, n_in=N_IN, in_bits=IN_BITS, n_out=N_OUT, out_bits=OUT_BITS)
    assert board.close() == 0
    assert board.received == framing.IDENT_RESPONSE_SIZE and board.decoder.skipped == 0


@pytest.mark.toolchain
@pytest.mark.slow
def test_board_infers_a_batch_under_backpressure(board: Board) -> None:
    rng = np.random.default_rng(7)
    lo, hi = -(1 << (IN_BITS - 1)), (1 << (IN_BITS - 1)) - 1
    extremes = np.array([[lo, lo, lo], [hi, hi, hi], [lo, hi, 0], [-1, -1, -1], [0, 0, 0], [hi, 1, lo]])
    raw = np.concatenate([extremes, rng.integers(lo, hi, size=(150, N_IN), endpoint=True)]).astype(np.int64)
    frames = encode_batch(raw, IN_BITS)
    size = framing.infer_request_size(N_IN, IN_BITS)
    rsp_size = framing.infer_response_size(N_OUT, OUT_BITS)
    # flow control: request k+1 goes out once the first byte of response k has arrived
    got: list[framing.Response] = []
    board.send(frames[:size])
    sent = 1
    deadline = time.monotonic() + 60
    while len(got) < len(raw) and time.monotonic() < deadline:
        got += board.poll(0.1)
        while sent < len(raw) and board.received >= (sent - 1) * rsp_size + 1:
            board.send(frames[sent * size : (sent + 1) * size])
            sent += 1
    assert len(got) == len(raw) and all(isinstance(r, InferResponse) for r in got)
    out = np.stack([r.values for r in got if isinstance(r, InferResponse)])
    np.testing.assert_array_equal(out, _expected(raw))
    assert board.close() == 0
    assert board.decoder.skipped == 0 and board.decoder.buffered == 0


@pytest.mark.toolchain
@pytest.mark.slow
def test_board_drops_a_stalled_frame_after_the_timeout(board: Board) -> None:
    raw = np.array([[100, -7, 5], [-2048, 2047, -2048]], dtype=np.int64)
    first, second = encode_infer(raw[0], IN_BITS), encode_infer(raw[1], IN_BITS)
    board.send(first[:5])  # sync, command and 1.5 of 3 values, then silence
    assert board.poll(0.5) == []  # far longer than 64 byte-times of simulated time
    board.send(second)
    (resp,) = board.collect(1)
    assert isinstance(resp, InferResponse)
    np.testing.assert_array_equal(resp.values, _expected(raw[1:])[0])
    assert board.poll(0.3) == []  # nothing more: the stalled frame got no response
    assert board.close() == 0


@pytest.mark.toolchain
@pytest.mark.slow
def test_board_answers_an_unknown_command_with_an_error(board: Board) -> None:
    board.send(b"\xa5\x7e")
    (err,) = board.collect(1)
    assert err == ErrorResponse(command=0x7E, status=framing.STATUS_UNKNOWN_COMMAND)
    assert board.received == framing.ERROR_RESPONSE_SIZE
    board.send(encode_infer(np.array([1, 2, -1]), IN_BITS))  # the board is still in step
    (resp,) = board.collect(1)
    assert isinstance(resp, InferResponse) and resp.values.tolist() == [3, 3]
    assert board.close() == 0


@pytest.mark.toolchain
@pytest.mark.parametrize(
    ("n_in", "in_bits", "n_out", "out_bits", "clks_per_bit"),
    [(1, 8, 1, 8, 104), (5, 16, 1, 3, 17), (1, 2, 7, 52, 4), (2, 64, 3, 64, 1250), (300, 9, 2, 8, 4), (4, 8, 1, 1, 4)],
)
def test_gw_board_lints_clean_for_many_shapes(
    tmp_path: Path, n_in: int, in_bits: int, n_out: int, out_bits: int, clks_per_bit: int
) -> None:
    (tmp_path / "gw_core.v").write_text(_stub_core(n_in, in_bits, n_out, out_bits))
    argv = [*_verilator(), "--lint-only", "-Wall", "--top-module", "gw_board",
            *_params(n_in, in_bits, n_out, out_bits, clks_per_bit), str(RTL / "gw_uart.v"), "gw_core.v"]  # fmt: skip
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr


@pytest.mark.toolchain
@pytest.mark.slow
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_gw_board_synthesizes(tmp_path: Path, family: str) -> None:
    yosys = find_tool("yosys")  # a dependency: native on PATH, else the venv's YoWASP build
    shutil.copy(RTL / "gw_uart.v", tmp_path / "gw_uart.v")
    (tmp_path / "gw_core.v").write_text(TEST_CORE)
    script = (
        "read_verilog gw_uart.v gw_core.v\n"
        f"chparam -set N_IN {N_IN} -set IN_BITS {IN_BITS} -set N_OUT {N_OUT} -set OUT_BITS {OUT_BITS} gw_board\n"
        f"synth_{family} -top gw_board\n"
        "tee -o stat.txt stat\n"
    )
    (tmp_path / "synth.ys").write_text(script)
    # YoWASP yosys may drop stdout after ABC: read the log file it writes instead
    proc = subprocess.run([*yosys, "-l", "synth.log", "-s", "synth.ys"], cwd=tmp_path, capture_output=True, timeout=300)
    log = (tmp_path / "synth.log").read_text()
    assert proc.returncode == 0 and "End of script" in log, log[-3000:]
    stat = (tmp_path / "stat.txt").read_text()
    assert ("TRELLIS_FF" if family == "ecp5" else "SB_DFF") in stat
