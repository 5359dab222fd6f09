"""``--arch auto``: choose per dense stage between unrolled and folded (and how many multipliers)
so that the core fits the target with a margin, at the lowest latency.

Estimates come before synthesis: unrolled stages from da4ml's adder-bit cost (it builds the
adder graph, so that count is close to the LUTs synthesis will use), folded stages from their
multipliers, accumulators and buffers. The build checks them against synthesis and place and
route, and asks for a tighter plan (``scale`` > 1) when the real design is larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gatewright.errors import GatewrightError
from gatewright.hw.core import StageChoice
from gatewright.hw.stages import FOLDED, UNROLLED, StageRTL, StageSpec, folded_timing, unrolled
from gatewright.quant.fixed import bits_for_magnitude
from gatewright.targets import Target

# Half the target's LUTs for the core. Above that, nextpnr's placement time and the achievable
# clock degrade fast (an unrolled digits MLP at 75 % of an ECP5-85k placed for over 30 minutes on
# two cores); folding a layer costs microseconds of latency, not minutes of every build.
LUT_MARGIN = 0.5
DSP_MARGIN = 1.0
UNROLL_LIMIT = 16384  # products per layer beyond which unrolling is not even estimated
WRAPPER_LUTS = 400
# synth_ecp5 LUT positions per da4ml adder bit, measured on the digits 64-32-10 MLP (62,689 / 47,663)
UNROLLED_LUTS_PER_COST = 1.3  # UART, framing and vector buffers, measured on ECP5 (order of magnitude)


class FitError(GatewrightError):
    """The model does not fit the target even fully folded."""


@dataclass
class Estimate:
    luts: int
    dsps: int
    latency: int

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.luts + other.luts, self.dsps + other.dsps, self.latency + other.latency)


def multiplier_dsps(target: Target, a_bits: int, b_bits: int) -> int:
    """DSP blocks for one a x b signed multiplier (0 on a part without DSPs)."""
    if target.dsps == 0:
        return 0
    width = 18 if target.family == "ecp5" else 16
    return math.ceil(a_bits / width) * math.ceil(b_bits / width)


def estimate(spec: StageSpec, choice: StageChoice, target: Target, unrolled_cost: float | None) -> Estimate:
    out_bits = spec.output.bits
    requant = spec.n_out * 3 * out_bits  # saturation and rounding per output
    if spec.dense is None:
        return Estimate(spec.n_in * out_bits, 0, 1)
    layer = spec.dense
    if choice.arch == UNROLLED:
        assert unrolled_cost is not None
        return Estimate(int(unrolled_cost * UNROLLED_LUTS_PER_COST) + requant, 0, 4)
    parallel = choice.parallel
    exact = bits_for_magnitude(layer.accumulator_bound())
    dsps = multiplier_dsps(target, spec.input.bits, layer.weight_format.bits)
    multiplier_luts = 0 if dsps else spec.input.bits * layer.weight_format.bits
    per_unit = exact + 3 * out_bits + multiplier_luts
    latency, _ = folded_timing(layer.n_in, layer.n_out, parallel)
    return Estimate(parallel * per_unit + spec.n_in * spec.input.bits + 80, parallel * dsps, latency)


@dataclass
class Plan:
    choices: list[StageChoice]
    prebuilt: dict[int, StageRTL]  # unrolled stages generated while estimating, by stage index
    estimate: Estimate


def plan(
    specs: list[StageSpec],
    target: Target,
    arch: str,
    latency_cutoff: float,
    reuse: int | None = None,
    scale: float = 1.0,
    congestion: int = 0,
    log: Callable[[str], None] = lambda line: None,
) -> Plan:
    """Choices for the dense stages. ``scale`` multiplies every LUT estimate (the build raises it
    when synthesis finds the design larger than estimated). ``congestion`` counts the routings that
    did not converge: from 1 every stage is folded (a folded stage's wires are a fraction of an
    unrolled one's), and each further level halves the LUT budget so that fewer multipliers remain."""
    dense = [s for s in specs if s.dense is not None]
    prebuilt: dict[int, StageRTL] = {}
    if arch == UNROLLED:
        return Plan([StageChoice(UNROLLED)] * len(dense), prebuilt, Estimate(0, 0, 0))
    if arch == FOLDED:
        folded_all = [StageChoice(FOLDED, _parallel_for_reuse(s, reuse) if reuse else s.n_out) for s in dense]
        return Plan(folded_all, prebuilt, Estimate(0, 0, 0))
    if not target.place_and_route:  # RTL and simulation only: no resources to fit, lowest latency
        simple = [
            StageChoice(UNROLLED) if s.n_in * s.n_out <= UNROLL_LIMIT else StageChoice(FOLDED, s.n_out) for s in dense
        ]
        log(
            "plan (no resource limits on "
            + target.name
            + "): "
            + ", ".join(f"{s.label}={c}" for s, c in zip(dense, simple, strict=True))
        )
        return Plan(simple, prebuilt, Estimate(0, 0, 0))
    lut_budget = int(target.luts * LUT_MARGIN / 2 ** max(congestion - 1, 0)) - WRAPPER_LUTS
    dsp_budget = int(target.dsps * DSP_MARGIN)

    costs: dict[int, float | None] = {}
    for spec in dense:
        layer = spec.dense
        assert layer is not None
        if layer.n_in * layer.n_out > UNROLL_LIMIT:
            costs[spec.index] = None
            log(f"{spec.label}: {layer.n_in}x{layer.n_out} products, too many to unroll; folded")
            continue
        stage = unrolled(spec, latency_cutoff)
        prebuilt[spec.index] = stage
        costs[spec.index] = stage.cost

    def total(choices: dict[int, StageChoice]) -> Estimate:
        result = Estimate(0, 0, 0)
        for spec in specs:
            choice = choices.get(spec.index, StageChoice(UNROLLED))
            part = estimate(spec, choice, target, costs.get(spec.index))
            result = result + Estimate(int(part.luts * scale), part.dsps, part.latency)
        return result

    def fits(e: Estimate) -> bool:
        return e.luts <= lut_budget and e.dsps <= dsp_budget

    unroll = congestion == 0
    choices = {
        s.index: StageChoice(UNROLLED) if unroll and costs[s.index] is not None else StageChoice(FOLDED, s.n_out)
        for s in dense
    }
    current = total(choices)
    log(f"budget: {lut_budget} LUTs, {dsp_budget} DSPs for the core (target {target.name}, scale {scale:.2f})")
    if not unroll:
        log(f"routing congested before: every stage folded (total ~{current.luts} LUTs, {current.dsps} DSPs)")
    # fold the largest unrolled stage first: it frees the most LUTs for the least latency
    for spec in sorted(dense, key=lambda s: -(costs[s.index] or 0)):
        if fits(current):
            break
        if choices[spec.index].arch == FOLDED:
            continue
        choices[spec.index] = StageChoice(FOLDED, spec.n_out)
        new = total(choices)
        log(
            f"{spec.label}: unrolled needs ~{int((costs[spec.index] or 0) * scale)} LUTs; folded with "
            f"{spec.n_out} multipliers (total ~{new.luts} LUTs, {new.dsps} DSPs)"
        )
        current = new
    # then halve the multipliers of the stage with the most until the DSPs and LUTs fit
    while not fits(current):
        widest = max(
            (s for s in dense if choices[s.index].arch == FOLDED and choices[s.index].parallel > 1),
            key=lambda s: choices[s.index].parallel,
            default=None,
        )
        if widest is None:
            raise FitError(
                f"the model does not fit {target.name} even with one multiplier per layer (estimated "
                f"{current.luts} LUTs of {lut_budget}, {current.dsps} DSPs of {dsp_budget}); choose a larger "
                "target or narrower formats (--bits)"
            )
        parallel = math.ceil(choices[widest.index].parallel / 2)
        choices[widest.index] = StageChoice(FOLDED, parallel)
        current = total(choices)
        log(f"{widest.label}: {parallel} multipliers (total ~{current.luts} LUTs, {current.dsps} DSPs)")
    ordered = [choices[s.index] for s in dense]
    log(
        "plan: "
        + ", ".join(f"{s.label}={c}" for s, c in zip(dense, ordered, strict=True))
        + f"; estimated {current.luts} LUTs, {current.dsps} DSPs"
    )
    return Plan(ordered, {i: st for i, st in prebuilt.items() if choices[i].arch == UNROLLED}, current)


def _parallel_for_reuse(spec: StageSpec, reuse: int) -> int:
    """Multipliers for a reuse factor: each multiplier serves ``reuse`` products per vector."""
    groups = max(1, reuse // spec.n_in)
    return max(1, math.ceil(spec.n_out / groups))
