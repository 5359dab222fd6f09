"""Verilog text for the fixed-point operations of the quantized IR, one element at a time.

Everything is emitted as plain wires on unsigned bit vectors holding two's-complement values, with
explicit sign extension: no reliance on Verilog's signedness rules, so yosys and Verilator read
the same thing. Each helper appends lines to an ``Emitter`` and returns the name and width of its
result. The arithmetic is the contract of ``gatewright.quant.fixed``: RND (ties toward +inf) and SAT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatewright.quant.fixed import FixedFormat
from gatewright.quant.qir import ALPHA_FRAC, QActivation


def literal(value: int, width: int) -> str:
    """A ``width``-bit two's-complement literal."""
    return f"{width}'h{value & ((1 << width) - 1):x}"


@dataclass
class Emitter:
    """Collects wire declarations; ``fresh`` gives unique names."""

    prefix: str
    lines: list[str] = field(default_factory=list)
    _count: int = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}{self._count}"

    def wire(self, hint: str, width: int, expression: str) -> str:
        name = self.fresh(hint)
        self.lines.append(f"wire [{width - 1}:0] {name} = {expression};")
        return name


def sign_extend(name: str, width: int, to_width: int) -> str:
    if to_width == width:
        return name
    if to_width < width:
        raise ValueError(f"cannot sign-extend {width} bits to {to_width}")
    return f"{{{{{to_width - width}{{{name}[{width - 1}]}}}}, {name}}}"


def saturate(out: Emitter, name: str, width: int, to_width: int) -> str:
    """SAT: clamp a ``width``-bit signed value into ``to_width`` bits."""
    if to_width >= width:
        return out.wire("sx", to_width, sign_extend(name, width, to_width)) if to_width > width else name
    top = f"{name}[{width - 1}:{to_width - 1}]"
    fits = f"(&{top}) | ~(|{top})"  # the dropped bits and the new sign bit all agree
    low = literal(1 << (to_width - 1), to_width)  # most negative
    high = literal((1 << (to_width - 1)) - 1, to_width)
    return out.wire("sat", to_width, f"({fits}) ? {name}[{to_width - 1}:0] : ({name}[{width - 1}] ? {low} : {high})")


def shift_round(out: Emitter, name: str, width: int, shift: int) -> tuple[str, int]:
    """RND by ``shift`` bits: ``(a + 2^(shift-1)) >> shift`` (arithmetic), or ``a << -shift`` exactly."""
    if shift == 0:
        return name, width
    if shift < 0:
        return out.wire("shl", width - shift, f"{{{name}, {-shift}'b0}}"), width - shift
    wide = max(width, shift) + 1  # room for the carry of the rounding constant
    total = out.wire("rnd", wide, f"{sign_extend(name, width, wide)} + {literal(1 << (shift - 1), wide)}")
    return out.wire("shr", wide - shift, f"{total}[{wide - 1}:{shift}]"), wide - shift


def requantize(out: Emitter, name: str, width: int, accumulator: FixedFormat, output: FixedFormat) -> str:
    """An exact sum (``accumulator.frac`` fraction bits, ``width`` bits) to the output format:
    SAT to the accumulator, RND, SAT to the output."""
    value = saturate(out, name, width, accumulator.bits) if width > accumulator.bits else name
    value_width = min(width, accumulator.bits)
    rounded, rounded_width = shift_round(out, value, value_width, accumulator.frac - output.frac)
    return saturate(out, rounded, rounded_width, output.bits)


def activation(out: Emitter, name: str, layer: QActivation) -> str:
    """relu, clip or leaky_relu on a value in ``layer.format`` (result in the same format)."""
    bits = layer.format.bits
    negative = f"{name}[{bits - 1}]"
    if layer.kind == "relu":
        return out.wire("relu", bits, f"{negative} ? {literal(0, bits)} : {name}")
    if layer.kind == "clip":
        value = name
        if layer.low is not None:
            value = out.wire(
                "lo",
                bits,
                f"($signed({value}) < $signed({literal(layer.low, bits)})) ? {literal(layer.low, bits)} : {value}",
            )
        if layer.high is not None:
            value = out.wire(
                "hi",
                bits,
                f"($signed({value}) > $signed({literal(layer.high, bits)})) ? {literal(layer.high, bits)} : {value}",
            )
        return value
    if layer.kind == "leaky_relu":
        alpha_bits = max(2, abs(layer.alpha).bit_length() + 1)
        wide = bits + alpha_bits
        product = out.wire(
            "lmul", wide, f"{sign_extend(name, bits, wide)} * {literal(layer.alpha, wide)}"
        )  # exact: the true product fits in ``wide`` bits, and the low bits of a product do not depend on signedness
        rounded, rounded_width = shift_round(out, product, wide, ALPHA_FRAC)
        scaled = saturate(out, rounded, rounded_width, bits)
        return out.wire("leaky", bits, f"{negative} ? {scaled} : {name}")
    raise ValueError(f"unknown activation {layer.kind!r}")
