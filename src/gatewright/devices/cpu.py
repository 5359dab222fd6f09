"""``cpu``: the reference. onnxruntime runs the original float model, whatever operators it holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gatewright.build.bundle import Bundle
from gatewright.devices.base import Device, DeviceInfo, Model
from gatewright.errors import DeviceError
from gatewright.model import load_model
from gatewright.model.runtime import OnnxRunner

# One intra-op thread per session: the models gatewright serves are small, where onnxruntime's
# thread pool costs more than it saves (digits MLP on 2 cores: 8 µs either way at batch 1, 28 µs
# against 48 µs at batch 256; and under a server's load the pool's second thread waits for a
# core, tripling batch-1 latency). Parallelism comes from batching and from serving many models.
THREADS = 1


class CpuModel(Model):
    concurrent = True  # an onnxruntime session runs calls from several threads at once

    def __init__(self, source: bytes, label: str) -> None:
        loaded = load_model(source, label)
        super().__init__(loaded.name, loaded.inputs, loaded.outputs)
        self.runner = OnnxRunner(source, loaded.fixed_batch, threads=THREADS)

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return self.runner.run(feeds)

    def update_params(self, source: str | Path | bytes) -> None:
        """Run a retrained model with the same inputs and outputs from now on."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        loaded = load_model(data, "update" if isinstance(source, bytes) else str(source))
        if (loaded.inputs, loaded.outputs) != (self.inputs, self.outputs):
            raise DeviceError(
                f"{self.id}: the new model's inputs or outputs differ from the loaded one's; load it as a new model"
            )
        self.runner = OnnxRunner(data, loaded.fixed_batch, threads=THREADS)


class CpuDevice(Device):
    kind = "cpu"

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            uri=self.uri,
            kind=self.kind,
            description="onnxruntime on the float model (the reference)",
            max_models=None,
            max_batch=None,
            dtypes=("float32", "float64", "int64", "str"),
            runs="bundle+onnx",
            extra={"threads": os.cpu_count()},
        )

    def _load(self, source: Bundle | Path) -> Model:
        if isinstance(source, Bundle):
            return CpuModel(source.source_model(), str(source.path / "model.onnx"))
        return CpuModel(source.read_bytes(), str(source))
