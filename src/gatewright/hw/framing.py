"""Host side of the UART framing protocol spoken by the board wrapper ``gw_board`` (rtl/gw_uart.v).

The protocol is specified in docs/framing.md. In short::

    request   A5 cmd payload          cmd 01 IDENT (no payload), 02 INFER (n_in values)
    response  5A cmd status payload   status 00 OK; any other status: an error, no payload
    a value   ceil(bits / 8) bytes, little endian, two's complement sign-extended to whole bytes
    IDENT OK  version(1) design_id(4) n_in(2) in_bits(1) n_out(2) out_bits(1), multi-byte fields LE

This module only turns values into bytes and bytes into values; it does no I/O. The host sends
request k+1 only once it has received the first byte of response k (see docs/framing.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gatewright.errors import DeviceError, InputDataError

PROTOCOL_VERSION = 1
REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A
CMD_IDENT = 0x01
CMD_INFER = 0x02
STATUS_OK = 0x00
STATUS_UNKNOWN_COMMAND = 0x01
STATUS_NAMES = {STATUS_OK: "ok", STATUS_UNKNOWN_COMMAND: "unknown command"}
IDENT_PAYLOAD_BYTES = 11
DEFAULT_TIMEOUT_BYTES = 64
MAX_BITS = 64

IntArray = npt.NDArray[np.int64]


def value_bytes(bits: int) -> int:
    """Bytes one value of ``bits`` bits takes on the wire."""
    _check_bits(bits, "bits")
    return (bits + 7) // 8


def infer_request_size(n_in: int, in_bits: int) -> int:
    """Length in bytes of one INFER request frame."""
    return 2 + n_in * value_bytes(in_bits)


def infer_response_size(n_out: int, out_bits: int) -> int:
    """Length in bytes of one successful INFER response frame."""
    return 3 + n_out * value_bytes(out_bits)


IDENT_RESPONSE_SIZE = 3 + IDENT_PAYLOAD_BYTES
ERROR_RESPONSE_SIZE = 3


def encode_ident() -> bytes:
    """The IDENT request: ask the board for its design id and vector shapes."""
    return bytes((REQUEST_SYNC, CMD_IDENT))


def encode_infer(raw: npt.ArrayLike, in_bits: int) -> bytes:
    """One INFER request carrying the input vector ``raw`` (shape ``(n_in,)``, raw fixed-point integers)."""
    vec = _as_int_array(raw, in_bits, ndim=1)
    return encode_batch(vec[np.newaxis, :], in_bits)


def encode_batch(raw: npt.ArrayLike, in_bits: int) -> bytes:
    """INFER requests for each row of ``raw`` (shape ``(batch, n_in)``), concatenated in row order.

    Every frame is ``infer_request_size(n_in, in_bits)`` bytes long, so frame ``i`` is the slice
    ``[i * size, (i + 1) * size)``; send them one by one under the flow-control rule.
    """
    mat = _as_int_array(raw, in_bits, ndim=2)
    batch, n_in = mat.shape
    nbytes = value_bytes(in_bits)
    shifts = np.arange(nbytes, dtype=np.int64) * 8
    # arithmetic shift of int64 sign-extends: byte b of value v is (v >> 8b) & 0xFF
    payload = ((mat[:, :, np.newaxis] >> shifts) & 0xFF).astype(np.uint8).reshape(batch, n_in * nbytes)
    header = np.tile(np.array([REQUEST_SYNC, CMD_INFER], dtype=np.uint8), (batch, 1))
    return np.concatenate([header, payload], axis=1).tobytes()


def decode_values(payload: bytes, count: int, bits: int) -> IntArray:
    """``count`` sign-extended little-endian values of ``bits`` bits each from ``payload``."""
    nbytes = value_bytes(bits)
    if len(payload) != count * nbytes:
        raise DeviceError(
            f"malformed response: expected {count} values of {nbytes} bytes ({count * nbytes} bytes), "
            f"got {len(payload)} bytes"
        )
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(count, nbytes).astype(np.uint64)
    word = np.bitwise_or.reduce(raw << (np.arange(nbytes, dtype=np.uint64) * np.uint64(8)), axis=1)
    unused = 64 - 8 * nbytes
    # move the top wire bit to bit 63, then shift back arithmetically: sign extension from 8*nbytes bits
    values = (word << np.uint64(unused)).view(np.int64) >> np.int64(unused)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = np.flatnonzero((values < lo) | (values > hi))
    if bad.size:
        i = int(bad[0])
        raise DeviceError(
            f"malformed response: value {i} is {int(values[i])}, outside the signed {bits}-bit range "
            f"[{lo}, {hi}] (bytes {payload[i * nbytes : (i + 1) * nbytes].hex(' ')} are not sign-extended); "
            "the UART link corrupted data or the bitstream does not match the bundle (check IDENT)"
        )
    return values.astype(np.int64)


@dataclass(frozen=True)
class IdentResponse:
    """What the board says it is: compare with the bundle through :func:`check_ident`."""

    protocol_version: int
    design_id: int
    n_in: int
    in_bits: int
    n_out: int
    out_bits: int


@dataclass(frozen=True)
class InferResponse:
    """One output vector, raw fixed-point integers, shape ``(n_out,)``."""

    values: IntArray


@dataclass(frozen=True)
class ErrorResponse:
    """The board refused a request: ``command`` is the command byte it received."""

    command: int
    status: int

    @property
    def message(self) -> str:
        name = STATUS_NAMES.get(self.status, "unknown status")
        return f"board answered command 0x{self.command:02x} with status 0x{self.status:02x} ({name})"


Response = IdentResponse | InferResponse | ErrorResponse


def check_ident(ident: IdentResponse, *, design_id: int, n_in: int, in_bits: int, n_out: int, out_bits: int) -> None:
    """Raise DeviceError unless the board's IDENT matches what the bundle expects."""
    expected = IdentResponse(PROTOCOL_VERSION, design_id, n_in, in_bits, n_out, out_bits)
    if ident == expected:
        return
    diffs = [
        f"{name} {getattr(ident, name)} (expected {getattr(expected, name)})"
        for name in ("protocol_version", "design_id", "n_in", "in_bits", "n_out", "out_bits")
        if getattr(ident, name) != getattr(expected, name)
    ]
    raise DeviceError(
        "the board's bitstream does not match the bundle: " + ", ".join(diffs) + ". Program the board with "
        "this bundle's bitstream, or load the bundle the board was built from."
    )


class FrameDecoder:
    """Streaming decoder of board responses: :meth:`feed` bytes as they arrive, get whole responses back.

    ``n_out`` and ``out_bits`` give the shape of INFER responses; left out, they are learnt from the
    first IDENT response. Bytes before a sync byte are skipped and counted in :attr:`skipped`.
    A malformed frame raises DeviceError; the decoder then drops that frame's sync byte and hunts for
    the next one, and responses completed before the error are returned by the next :meth:`feed`.
    """

    def __init__(self, n_out: int | None = None, out_bits: int | None = None) -> None:
        if (n_out is None) != (out_bits is None):
            raise ValueError("give both n_out and out_bits, or neither")
        if out_bits is not None:
            _check_bits(out_bits, "out_bits")
        self.n_out = n_out
        self.out_bits = out_bits
        self.skipped = 0
        self._buf = bytearray()
        self._ready: list[Response] = []

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole response."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Response]:
        """Add received bytes; return the responses they complete, in order."""
        self._buf += data
        while True:
            start = self._buf.find(RESPONSE_SYNC)
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                break
            if start:
                self.skipped += start
                del self._buf[:start]
            try:
                frame = self._parse()
            except DeviceError:
                del self._buf[:1]  # drop this sync byte and look for the next
                raise
            if frame is None:
                break
            response, size = frame
            del self._buf[:size]
            self._ready.append(response)
        ready, self._ready = self._ready, []
        return ready

    def _parse(self) -> tuple[Response, int] | None:
        """The response at the start of the buffer and its size; None if it is not complete yet."""
        buf = self._buf
        if len(buf) < 3:
            return None
        command, status = buf[1], buf[2]
        if status != STATUS_OK:
            return ErrorResponse(command, status), ERROR_RESPONSE_SIZE
        if command == CMD_IDENT:
            if len(buf) < IDENT_RESPONSE_SIZE:
                return None
            return self._ident(bytes(buf[3:IDENT_RESPONSE_SIZE])), IDENT_RESPONSE_SIZE
        if command == CMD_INFER:
            if self.n_out is None or self.out_bits is None:
                raise DeviceError(
                    "received an INFER response before the output shape is known: create the "
                    "FrameDecoder with n_out and out_bits, or send IDENT first"
                )
            size = infer_response_size(self.n_out, self.out_bits)
            if len(buf) < size:
                return None
            return InferResponse(decode_values(bytes(buf[3:size]), self.n_out, self.out_bits)), size
        raise DeviceError(
            f"malformed response: unknown command byte 0x{command:02x} with status OK after the sync byte "
            f"0x{RESPONSE_SYNC:02x} (expected 0x{CMD_IDENT:02x} IDENT or 0x{CMD_INFER:02x} INFER); "
            "check the baud rate and that the board runs a gatewright bitstream"
        )

    def _ident(self, payload: bytes) -> IdentResponse:
        ident = IdentResponse(
            protocol_version=payload[0],
            design_id=int.from_bytes(payload[1:5], "little"),
            n_in=int.from_bytes(payload[5:7], "little"),
            in_bits=payload[7],
            n_out=int.from_bytes(payload[8:10], "little"),
            out_bits=payload[10],
        )
        if ident.protocol_version != PROTOCOL_VERSION:
            raise DeviceError(
                f"the board speaks framing protocol version {ident.protocol_version}, this host speaks "
                f"version {PROTOCOL_VERSION}: rebuild the bitstream with this gatewright version"
            )
        if not (1 <= ident.out_bits <= MAX_BITS and 1 <= ident.in_bits <= MAX_BITS):
            raise DeviceError(
                f"malformed IDENT response: in_bits {ident.in_bits} / out_bits {ident.out_bits} "
                f"outside 1..{MAX_BITS} (payload {payload.hex(' ')})"
            )
        if self.n_out is None:
            self.n_out, self.out_bits = ident.n_out, ident.out_bits
        return ident


def _check_bits(bits: int, what: str) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise InputDataError(f"{what} is {bits}: the UART framing carries values of 1 to {MAX_BITS} bits")


def _as_int_array(raw: npt.ArrayLike, bits: int, ndim: int) -> IntArray:
    _check_bits(bits, "in_bits")
    arr = np.asarray(raw)
    shape = "(n_in,)" if ndim == 1 else "(batch, n_in)"
    if arr.ndim != ndim:
        raise InputDataError(f"input has shape {arr.shape}; an INFER request needs shape {shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputDataError(
            f"input has dtype {arr.dtype}; the board takes raw fixed-point integers (quantize the input first)"
        )
    vals = arr.astype(np.int64)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = np.argwhere((vals < lo) | (vals > hi))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise InputDataError(
            f"input value {int(vals[idx])} at index {idx} does not fit a signed {bits}-bit integer "
            f"[{lo}, {hi}]; quantize and saturate the input to the model's input format first"
        )
    return vals
