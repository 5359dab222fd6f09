"""Bench fixtures: the example models, and bench records of FPGA builds whose figures follow a known law.

The records' features are real (computed from the quantized example models as the bench computes
them); their resources and timing are made up from a simple law, so that the tests know what a
predictor that learned them must answer.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatewright.bench.predictor import features
from gatewright.build.hardware import HardwareOptions
from gatewright.build.pipeline import quantize_model
from gatewright.model import intake
from gatewright.quant import PrecisionConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bench"
LAW_MODELS = ("mlp_8-16-3", "mlp_16-16-4", "mlp_16-32-16-5", "mlp_32-16-6", "mlp_24-24-12-4")


def law(row: dict[str, float]) -> dict[str, float]:
    """The made-up truth: LUTs grow with the planner's estimate, Fmax falls with it."""
    luts = round(1.4 * row["plan_luts"] + 300)
    return {
        "luts": luts,
        "ffs": round(0.8 * luts),
        "dsps": row["plan_dsps"],
        "fmax_mhz": round(120.0 - luts / 500.0, 2),
        "latency_cycles": row["plan_latency"] + 4,
    }


def example(name: str) -> tuple[Path, np.ndarray]:
    stem = name.removesuffix("_mlp")
    return EXAMPLES / f"{name}.onnx", np.load(EXAMPLES / f"{stem}_train.npy")


def quantized(name: str, weight_bits: int) -> tuple[Any, int]:
    model, train = example(name)
    graph = intake(model)
    precision = PrecisionConfig()
    precision.set("weight", weight_bits, "test")
    return quantize_model(graph, train, precision).quantized, graph.hardware.n_in


def law_record(name: str, weight_bits: int, target: str) -> dict[str, Any]:
    q, n_in = quantized(name, weight_bits)
    row = features(q, n_in, target, HardwareOptions())
    figures = law(row)
    return {
        "id": uuid.uuid4().hex[:12],
        "experiment": "law",
        "application": name,
        "target": f"sim-{target}",
        "device": "sim",
        "build_target": target,
        "predicted": False,
        "state": "succeeded",
        "config": {"application": {"model": str(EXAMPLES / f"{name}.onnx")}},
        "metrics": {
            **figures,
            "hw_latency_us": figures["latency_cycles"] / figures["fmax_mhz"],
            "features": row,
            "cache_key": f"{name}-{weight_bits}-{target}",
        },
    }


@pytest.fixture(scope="session")
def law_records() -> list[dict[str, Any]]:
    """Builds of five models at three weight widths on two ECP5 parts (30), figures from ``law``."""
    return [
        law_record(name, bits, target)
        for name in LAW_MODELS
        for bits in (4, 6, 8)
        for target in ("ecp5-25k", "ecp5-85k")
    ]
