"""What a bundle can be built for: one table of targets and their resources."""

from __future__ import annotations

from dataclasses import dataclass

from gatewright.errors import GatewrightError


@dataclass(frozen=True)
class Target:
    name: str
    family: str  # ecp5 | ice40 | generic
    device: str  # the device name nextpnr expects
    package: str
    luts: int
    dsps: int  # ECP5 MULT18X18D, iCE40 SB_MAC16
    bram_kbits: int
    default_clock_mhz: float
    place_and_route: bool = True


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("ecp5-25k", "ecp5", "25k", "CABGA381", 24288, 28, 1008, 100.0),
        Target("ecp5-45k", "ecp5", "45k", "CABGA381", 43848, 72, 1944, 100.0),
        Target("ecp5-85k", "ecp5", "85k", "CABGA381", 83640, 156, 3744, 100.0),
        Target("ice40-up5k", "ice40", "up5k", "sg48", 5280, 8, 120, 24.0),
        Target("ice40-hx8k", "ice40", "hx8k", "ct256", 7680, 0, 128, 48.0),
        Target("generic", "generic", "", "", 0, 0, 0, 100.0, place_and_route=False),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise GatewrightError(f"unknown target '{name}'; choose one of {', '.join(TARGETS)}") from None
