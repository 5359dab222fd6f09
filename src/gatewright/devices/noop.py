"""``noop``: loads anything and answers every inference with zeros of the declared shapes.

For debugging and for measuring what the device layer itself costs (DPDK and vAccel have the same
kind of device): no computation, but the same input checks, counters and queues as every backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gatewright.build.bundle import Bundle
from gatewright.devices.base import Device, DeviceInfo, Model, batch_size
from gatewright.model import load_model
from gatewright.model.ir import TensorSpec


class NoopModel(Model):
    concurrent = True

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        batch = batch_size(feeds)
        return {spec.name: _zeros(spec, batch) for spec in self.outputs}


def _zeros(spec: TensorSpec, batch: int) -> Any:
    if spec.shape is None:  # a sequence of maps and the like: one empty entry per sample
        return [{} for _ in range(batch)]
    shape = [dim if isinstance(dim, int) else 1 for dim in spec.shape]
    if shape and not isinstance(spec.shape[0], int):
        shape[0] = batch
    return np.zeros(shape, dtype=object if spec.dtype == "str" else spec.dtype)


class NoopDevice(Device):
    kind = "noop"

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            uri=self.uri,
            kind=self.kind,
            description="answers with zeros of the declared shapes (debugging, overhead measurements)",
            max_models=None,
            max_batch=None,
            dtypes=("float32", "float64", "int64", "str"),
            runs="bundle+onnx",
        )

    def _load(self, source: Bundle | Path) -> Model:
        if isinstance(source, Bundle):
            return NoopModel(source.name, source.inputs, source.outputs)
        loaded = load_model(source.read_bytes(), str(source))
        return NoopModel(loaded.name, loaded.inputs, loaded.outputs)
