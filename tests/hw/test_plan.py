"""The --arch auto planner: what it chooses for a target, and how it answers a congested routing."""

from __future__ import annotations

from pathlib import Path

from gatewright.build.pipeline import quantize_model
from gatewright.hw.plan import plan
from gatewright.hw.stages import FOLDED, UNROLLED, split_stages
from gatewright.model import intake
from gatewright.targets import TARGETS
from tests import onnx_models as om


def _specs(tmp_path: Path, sizes: list[int]) -> list:
    path = tmp_path / "m.onnx"
    path.write_bytes(om.pytorch_mlp(sizes, seed=1))
    graph = intake(path)
    quantized = quantize_model(graph).quantized
    return split_stages(quantized.layers, quantized.input_format, graph.hardware.n_in)


def test_congestion_folds_every_stage_then_fewer_multipliers(tmp_path: Path) -> None:
    specs = _specs(tmp_path, [16, 24, 8])
    target = TARGETS["ecp5-85k"]
    lines: list[str] = []
    normal = plan(specs, target, "auto", 2.8, log=lines.append)
    assert [c.arch for c in normal.choices] == [UNROLLED, UNROLLED]  # small: unrolled fits easily
    once = plan(specs, target, "auto", 2.8, congestion=1, log=lines.append)
    assert [(c.arch, c.parallel) for c in once.choices] == [(FOLDED, 24), (FOLDED, 8)]  # folded, lowest latency
    assert any("routing congested before: every stage folded" in line for line in lines)
    # each further level halves the LUT budget: on a small target the multipliers shrink
    small = TARGETS["ecp5-25k"]
    level = [plan(specs, small, "auto", 2.8, congestion=c).choices for c in (1, 4)]
    assert sum(c.parallel for c in level[1]) < sum(c.parallel for c in level[0])
    assert all(c.arch == FOLDED for c in level[1])
