"""``emu``: the golden integer emulator of the hardware part, followed by the host part."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.build.bundle import Bundle
from gatewright.devices.base import Device, DeviceInfo, Model
from gatewright.errors import BundleError
from gatewright.model.ir import TensorSpec
from gatewright.model.runtime import OnnxRunner
from gatewright.quant.emulator import Emulator
from gatewright.quant.qir import QuantizedModel

log = logging.getLogger("gatewright")


class EmulatedModel(Model):
    """The whole model as the hardware computes it: quantize, integer layers, dequantize, host part."""

    def __init__(
        self,
        name: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        split: dict[str, Any],
        quantized: QuantizedModel,
        host_model: bytes | None,
        fixed_batch: int | None,
    ) -> None:
        super().__init__(name, inputs, outputs)
        hardware = split["hardware"]
        self.emulator = Emulator(quantized)
        self.hw_input = str(hardware["input"])
        self.boundary = str(hardware["output"])
        self.boundary_dtype = np.dtype(hardware["output_dtype"])
        self.transposed = bool(hardware["output_transposed"])
        # One thread: the host part is light (softmax, argmax), and an idle onnxruntime pool would
        # spin on the cores that the emulator's BLAS products need next.
        self.host = OnnxRunner(host_model, fixed_batch, threads=1) if host_model else None
        self.host_inputs = tuple(split["host"].get("inputs", ()))

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> EmulatedModel:
        try:
            return cls(
                bundle.name,
                bundle.inputs,
                bundle.outputs,
                bundle.split,
                bundle.quantized,
                bundle.host_model(),
                bundle.fixed_batch,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{bundle.path}: the bundle is damaged ({type(exc).__name__}: {exc}); rebuild it"
            ) from None

    def hardware_output(self, x: np.ndarray) -> np.ndarray:
        """The hardware part's output tensor, dequantized to the dtype and layout the model declares."""
        value = self.emulator.run(x, dtype=self.boundary_dtype.type)
        return value.T if self.transposed else value

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        boundary = self.hardware_output(feeds[self.hw_input])
        results: dict[str, Any] = {self.boundary: boundary}
        if self.host is not None:
            host_feeds = {name: boundary if name == self.boundary else feeds[name] for name in self.host_inputs}
            results.update(self.host.run(host_feeds))
        return {spec.name: results[spec.name] for spec in self.outputs}


class EmuDevice(Device):
    kind = "emu"

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            uri=self.uri,
            kind=self.kind,
            description="golden integer emulator of the quantized hardware part (bit-exact reference)",
            max_models=None,
            max_batch=None,
            dtypes=("float32", "float64"),
            runs="bundle+onnx",
        )

    def _load(self, source: Bundle | Path) -> Model:
        if isinstance(source, Bundle):
            return EmulatedModel.from_bundle(source)
        # a plain model: quantize it here with the default precision and no calibration data
        from gatewright.build.pipeline import quantize_model  # the build stage owns quantizing a model
        from gatewright.model import intake

        log.warning(
            "%s: quantizing with default formats and no calibration data; for calibrated formats build "
            "a bundle with `gatewright build %s --until quantize --calibration X.npy`",
            source,
            source,
        )
        return quantize_model(intake(source)).emulated()
