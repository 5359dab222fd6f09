"""The predictor: estimate an FPGA build's resources, Fmax and latency without building it.

Features come from what is known before any tool runs: the quantized model's shape and formats,
the target, the options, and gatewright's own architecture plan for them (the choice per layer of
unrolled or folded, its multipliers, and the planner's analytic LUT, DSP and latency estimates,
which read the adder graph da4ml builds for unrolled layers). Regressors learned from the bench
results stored so far correct those estimates; for each quantity the candidate with the lowest
cross-validated error is kept. Cross-validation holds out whole models (grouped folds), so the
reported error is the error on a model the predictor has never seen.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin, clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gatewright.build.bundle import Bundle
from gatewright.build.hardware import HardwareOptions, clock_mhz, latency_cutoff
from gatewright.errors import GatewrightError
from gatewright.hw.core import StageChoice, stage_specs
from gatewright.hw.plan import Estimate, estimate, plan
from gatewright.hw.stages import FOLDED, UNROLLED, unrolled
from gatewright.quant.qir import QuantizedModel
from gatewright.targets import get_target

QUANTITIES = ("luts", "ffs", "dsps", "fmax_mhz", "latency_cycles")
MIN_RUNS = 6  # fewer measured builds than this give no predictor
FEATURES = (
    "n_in",
    "n_out",
    "layers",
    "macs",
    "max_layer_macs",
    "weight_bits",
    "input_bits",
    "activation_bits",
    "target_luts",
    "target_dsps",
    "family_ecp5",
    "family_ice40",
    "clock_mhz",
    "arch_unrolled",
    "arch_folded",
    "reuse",
    "unrolled_stages",
    "multipliers",
    "adder_cost",
    "plan_luts",
    "plan_dsps",
    "plan_latency",
)


class PredictorError(GatewrightError):
    """Too few measured builds to learn from, or a configuration that cannot be planned."""


def features(quantized: QuantizedModel, n_in: int, target: str, options: HardwareOptions) -> dict[str, float]:
    """The predictor's inputs for building ``quantized`` for ``target`` with ``options`` (no tools run)."""
    info = get_target(target)
    clock = clock_mhz(info, options)
    cutoff = latency_cutoff(info, clock)
    specs = stage_specs(quantized, n_in)
    chosen = plan(specs, info, options.arch, cutoff, options.reuse)
    dense = [s for s in specs if s.dense is not None]
    choices = dict(zip((s.index for s in dense), chosen.choices, strict=True))
    total = Estimate(0, 0, 0)
    cost = 0.0
    for spec in specs:
        choice = choices.get(spec.index, StageChoice(UNROLLED))
        stage_cost = None
        if spec.dense is not None and choice.arch == UNROLLED:
            prebuilt = chosen.prebuilt.get(spec.index)
            stage_cost = (prebuilt or unrolled(spec, cutoff)).cost
            cost += stage_cost
        total = total + estimate(spec, choice, info, stage_cost)
    layers = [s.dense for s in dense if s.dense is not None]
    return {
        "n_in": float(n_in),
        "n_out": float(specs[-1].n_out),
        "layers": float(len(layers)),
        "macs": float(sum(layer.n_in * layer.n_out for layer in layers)),
        "max_layer_macs": float(max((layer.n_in * layer.n_out for layer in layers), default=0)),
        "weight_bits": float(max((layer.weight_format.bits for layer in layers), default=0)),
        "input_bits": float(quantized.input_format.bits),
        "activation_bits": float(max((s.output.bits for s in specs), default=0)),
        "target_luts": float(info.luts),
        "target_dsps": float(info.dsps),
        "family_ecp5": float(info.family == "ecp5"),
        "family_ice40": float(info.family == "ice40"),
        "clock_mhz": float(clock),
        "arch_unrolled": float(options.arch == UNROLLED),
        "arch_folded": float(options.arch == FOLDED),
        "reuse": float(options.reuse or 0),
        "unrolled_stages": float(sum(c.arch == UNROLLED for c in chosen.choices)),
        "multipliers": float(sum(c.parallel for c in chosen.choices if c.arch == FOLDED)),
        "adder_cost": round(cost, 1),
        "plan_luts": float(total.luts),
        "plan_dsps": float(total.dsps),
        "plan_latency": float(total.latency),
    }


def bundle_features(bundle: Bundle, target: str, options: HardwareOptions) -> dict[str, float]:
    return features(bundle.quantized, int(bundle.split["hardware"]["n_in"]), target, options)


@dataclass
class Fitted:
    quantity: str
    method: str
    model: Any  # a fitted scikit-learn regressor on log1p(features) -> log1p(quantity); None for "plan"
    cv_mape: float  # mean absolute percentage error, cross-validated (held-out models)
    cv_median_ape: float
    folds: int
    samples: int
    candidates: dict[str, float] = field(default_factory=dict)  # method -> cross-validated MAPE
    held_out: dict[str, float] = field(default_factory=dict)  # build -> its prediction when its model was held out

    def predict(self, row: dict[str, float]) -> float:
        if self.model is None:
            return _plan_estimate(self.quantity, row)
        x = np.log1p(np.array([[max(row.get(name, 0.0), 0.0) for name in FEATURES]]))
        return float(np.expm1(self.model.predict(x)[0]))


def _plan_estimate(quantity: str, row: dict[str, float]) -> float:
    return {"luts": row["plan_luts"], "dsps": row["plan_dsps"], "latency_cycles": row["plan_latency"]}[quantity]


def _candidates() -> dict[str, Callable[[], RegressorMixin]]:
    return {
        "ridge": lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
        "forest": lambda: RandomForestRegressor(n_estimators=200, min_samples_leaf=1, random_state=0),
    }


class Predictor:
    """Regressors per quantity, learned from measured bench runs (their ``features`` and figures)."""

    def __init__(self, fitted: dict[str, Fitted]) -> None:
        self.fitted = fitted
        self.latency_error: dict[str, Any] | None = None  # the FPGA latency (cycles / Fmax), cross-validated

    @classmethod
    def learn(cls, records: list[dict[str, Any]], family: str | None = None) -> Predictor:
        """Learn from bench records (``metrics`` with ``features`` and measured figures). One row per
        distinct build (emu and sim runs of one bundle count once)."""
        rows = training_rows(records, family)
        if len(rows) < MIN_RUNS:
            where = f" for {family}" if family else ""
            raise PredictorError(
                f"the predictor needs at least {MIN_RUNS} measured FPGA builds{where} in the results; it has "
                f"{len(rows)}. Run a bench experiment with emu or sim targets on FPGA builds first."
            )
        fitted = {}
        for quantity in QUANTITIES:
            usable = [r for r in rows if r["figures"].get(quantity) is not None]
            if len(usable) >= MIN_RUNS:
                fitted[quantity] = _fit(quantity, usable)
        predictor = cls(fitted)
        predictor.latency_error = _latency_error(rows, fitted)
        return predictor

    def predict(self, row: dict[str, float]) -> dict[str, float | None]:
        out: dict[str, float | None] = {q: None for q in QUANTITIES}
        for quantity, model in self.fitted.items():
            value = max(model.predict(row), 0.0)
            out[quantity] = round(value, 2) if quantity == "fmax_mhz" else float(round(value))
        cycles, fmax = out["latency_cycles"], out["fmax_mhz"]
        out["hw_latency_us"] = None if not fmax or cycles is None else round(cycles / fmax, 4)
        return out

    def errors(self) -> list[dict[str, Any]]:
        """Cross-validated error per quantity (and of the FPGA latency they give), for reports and RESULTS.md."""
        return [
            {
                "quantity": f.quantity,
                "method": f.method,
                "cv_mape": f.cv_mape,
                "cv_median_ape": f.cv_median_ape,
                "folds": f.folds,
                "samples": f.samples,
                "candidates": f.candidates,
            }
            for f in self.fitted.values()
        ] + ([self.latency_error] if self.latency_error else [])


def training_rows(records: list[dict[str, Any]], family: str | None = None) -> list[dict[str, Any]]:
    seen: set[str] = set()
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        if record.get("state") != "succeeded" or record.get("predicted") or not metrics.get("features"):
            continue
        if metrics.get("luts") is None:  # no place and route: nothing to learn about resources
            continue
        target = record.get("build_target") or ""
        if family and not target.startswith(family):
            continue
        key = str(metrics.get("cache_key") or record.get("id"))
        if key in seen:
            continue
        seen.add(key)
        group = (record.get("config") or {}).get("application", {}).get("model") or record.get("application")
        figures = {q: metrics.get(q) for q in QUANTITIES}
        rows.append({"features": metrics["features"], "figures": figures, "group": str(group), "key": key})
    return rows


def _fit(quantity: str, rows: list[dict[str, Any]]) -> Fitted:
    x = np.log1p(np.array([[max(r["features"].get(name, 0.0), 0.0) for name in FEATURES] for r in rows]))
    y = np.array([float(r["figures"][quantity]) for r in rows])
    groups = [r["group"] for r in rows]
    distinct = len(set(groups))
    if distinct >= 3:  # hold whole models out: the error on a model never seen
        splits = list(GroupKFold(n_splits=min(5, distinct)).split(x, y, groups))
    else:  # one or two models: hold builds out
        splits = list(KFold(n_splits=min(5, len(rows)), shuffle=True, random_state=0).split(x, y))
    scores: dict[str, tuple[float, float]] = {}
    held_out: dict[str, dict[str, float]] = {}
    for name, make in _candidates().items():
        held_out[name] = {}
        for train, test in splits:
            model = make().fit(x[train], np.log1p(y[train]))
            for i, value in zip(test, np.expm1(model.predict(x[test])), strict=True):
                held_out[name][rows[i]["key"]] = float(value)
    if quantity in ("luts", "dsps", "latency_cycles"):  # the planner's own estimate, as a baseline
        held_out["plan"] = {r["key"]: _plan_estimate(quantity, r["features"]) for r in rows}
    for name, predictions in held_out.items():
        errors = _ape(np.array([predictions[r["key"]] for r in rows]), y)
        scores[name] = (statistics.fmean(errors), statistics.median(errors))
    best = min(scores, key=lambda name: scores[name][0])
    model = None if best == "plan" else clone(_candidates()[best]()).fit(x, np.log1p(y))
    return Fitted(
        quantity,
        best,
        model,
        round(scores[best][0], 4),
        round(scores[best][1], 4),
        len(splits),
        len(rows),
        {name: round(score[0], 4) for name, score in scores.items()},
        held_out[best],
    )


def _latency_error(rows: list[dict[str, Any]], fitted: dict[str, Fitted]) -> dict[str, Any] | None:
    """The cross-validated error of the FPGA latency, held-out cycles over held-out Fmax."""
    cycles, fmax = fitted.get("latency_cycles"), fitted.get("fmax_mhz")
    if cycles is None or fmax is None:
        return None
    predicted, actual = [], []
    for row in rows:
        key, figures = row["key"], row["figures"]
        if key in cycles.held_out and key in fmax.held_out and figures["fmax_mhz"]:
            predicted.append(cycles.held_out[key] / max(fmax.held_out[key], 1e-9))
            actual.append(figures["latency_cycles"] / figures["fmax_mhz"])
    if not actual:
        return None
    errors = _ape(np.array(predicted), np.array(actual))
    return {
        "quantity": "hw_latency_us",
        "method": f"{cycles.method} cycles / {fmax.method} Fmax",
        "cv_mape": round(statistics.fmean(errors), 4),
        "cv_median_ape": round(statistics.median(errors), 4),
        "folds": cycles.folds,
        "samples": len(actual),
        "candidates": {},
    }


def _ape(predicted: np.ndarray, actual: np.ndarray) -> list[float]:
    """Absolute percentage errors; an actual 0 counts as exact when the prediction rounds to 0."""
    out = []
    for p, a in zip(predicted, actual, strict=True):
        if a == 0:
            out.append(0.0 if round(float(p)) == 0 else 1.0)
        else:
            out.append(abs(float(p) - float(a)) / abs(float(a)))
    return [e if math.isfinite(e) else 1.0 for e in out]
