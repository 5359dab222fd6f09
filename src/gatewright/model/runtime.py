"""Running ONNX graphs with onnxruntime, and checking inputs against what a model declares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from gatewright.errors import InputDataError, ModelLoadError
from gatewright.model.ir import TensorSpec


class OnnxRunner:
    """An onnxruntime session on the CPU. A model with a fixed batch size runs in slices of that size."""

    def __init__(self, model: bytes, fixed_batch: int | None = None, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes, not exported as a hierarchy
            raise ModelLoadError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.fixed_batch = fixed_batch

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        if self.fixed_batch is None:
            return dict(zip(self.output_names, self._run(feeds), strict=True))
        batch = len(next(iter(feeds.values())))
        if batch == self.fixed_batch:
            return dict(zip(self.output_names, self._run(feeds), strict=True))
        if batch % self.fixed_batch:
            raise InputDataError(
                f"the model takes batches of exactly {self.fixed_batch}; {batch} samples do not divide into them"
            )
        parts = [
            self._run({name: value[start : start + self.fixed_batch] for name, value in feeds.items()})
            for start in range(0, batch, self.fixed_batch)
        ]
        return {name: _concatenate([part[i] for part in parts]) for i, name in enumerate(self.output_names)}

    def _run(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        try:
            return self.session.run(self.output_names, feeds if type(feeds) is dict else dict(feeds))
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
            raise InputDataError(f"onnxruntime rejects the input: {str(exc).splitlines()[0]}") from None


def _concatenate(parts: list[Any]) -> Any:
    if isinstance(parts[0], list):  # sequences (e.g. ZipMap's list of dicts)
        return [item for part in parts for item in part]
    return np.concatenate(parts)


def check_inputs(specs: tuple[TensorSpec, ...], feeds: Mapping[str, Any], where: str = "") -> dict[str, np.ndarray]:
    """Match named arrays to the declared inputs: every name present, ranks and fixed sizes equal,
    one batch size; numbers are cast to the declared dtype (floats may round, integers must be whole)."""
    prefix = f"{where}: " if where else ""
    expected = {spec.name for spec in specs}
    unknown = sorted(set(feeds) - expected)
    missing = sorted(expected - set(feeds))
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(repr(n) for n in missing)}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(repr(n) for n in unknown)}")
        raise InputDataError(f"{prefix}{'; '.join(parts)}; the model's inputs are {', '.join(sorted(expected))}")
    checked: dict[str, np.ndarray] = {}
    batch_sizes: set[int] = set()
    for spec in specs:
        array = np.asarray(feeds[spec.name])
        shape = spec.shape or ()
        if array.ndim != len(shape):
            raise InputDataError(
                f"{prefix}input '{spec.name}' has shape {list(array.shape)}; the model expects {_show(shape)}"
            )
        for axis, (dim, size) in enumerate(zip(shape, array.shape, strict=True)):
            if isinstance(dim, int) and dim != size and not (axis == 0 and dim > 0 and size % dim == 0):
                raise InputDataError(
                    f"{prefix}input '{spec.name}' has shape {list(array.shape)}; the model expects {_show(shape)} "
                    f"(axis {axis} must be {dim})"
                )
        if array.ndim and array.shape[0] == 0:
            raise InputDataError(f"{prefix}input '{spec.name}' holds no samples; give at least one")
        checked[spec.name] = _cast(array, spec, prefix)
        if array.ndim:
            batch_sizes.add(array.shape[0])
    if len(batch_sizes) > 1:
        raise InputDataError(f"{prefix}inputs disagree on the batch size: {sorted(batch_sizes)}")
    return checked


def _cast(array: np.ndarray, spec: TensorSpec, prefix: str) -> np.ndarray:
    if spec.dtype == "str":
        if array.dtype.kind not in "OUS":
            raise InputDataError(f"{prefix}input '{spec.name}' must hold strings, not {array.dtype}")
        return array.astype(object)
    target = np.dtype(spec.dtype)
    if array.dtype == target:
        return array
    if array.dtype.kind not in "biuf":
        raise InputDataError(f"{prefix}input '{spec.name}' is {array.dtype}; the model expects {spec.dtype}")
    if target.kind in "iu" and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputDataError(f"{prefix}input '{spec.name}' holds fractions; the model expects {spec.dtype}")
    return array.astype(target)


def _show(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
