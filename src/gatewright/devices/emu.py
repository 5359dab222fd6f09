"""``emu``: the golden integer emulator of the hardware part, followed by the host part."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.build.bundle import Bundle
from gatewright.devices.base import Device, DeviceInfo, Model
from gatewright.errors import BundleError, DeviceError, PrecisionError
from gatewright.model.ir import TensorSpec
from gatewright.model.runtime import OnnxRunner
from gatewright.quant.calibrate import with_new_weights
from gatewright.quant.emulator import Emulator, reject_nan
from gatewright.quant.fixed import FixedFormat
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
        self.golden_vectors: dict[str, np.ndarray] | None = None
        self.host_bytes = host_model

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> EmulatedModel:
        try:
            model = cls(
                bundle.name,
                bundle.inputs,
                bundle.outputs,
                bundle.split,
                bundle.quantized,
                bundle.host_model(),
                bundle.fixed_batch,
            )
            model.golden_vectors = bundle.golden()
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise BundleError(
                f"{bundle.path}: the bundle is damaged ({type(exc).__name__}: {exc}); rebuild it"
            ) from None
        return model

    @property
    def source_kind(self) -> str:
        return "bundle" if self.golden_vectors is not None else "onnx"

    def formats(self) -> dict[str, FixedFormat]:
        return {self.hw_input: self.emulator.input_format, self.boundary: self.emulator.output_format}

    def _quantize_input(self, name: str, values: np.ndarray) -> np.ndarray:
        if name == self.hw_input:  # the device's own path: input affine, then RND and SAT
            return self.emulator.quantize_input(values)
        return super()._quantize_input(name, values)

    def _golden(self) -> dict[str, np.ndarray] | None:
        return self.golden_vectors

    def update_params(self, source: str | Path | bytes) -> None:
        """Take the weights of a retrained model of the same structure, in the formats already chosen."""
        from gatewright.model import intake

        graph = intake(source)
        if graph.host.model != self.host_bytes:
            raise DeviceError(f"{self.id}: the new model's host part differs; rebuild the bundle for it")
        try:
            updated = with_new_weights(self.emulator.model, graph.hardware)
        except PrecisionError as exc:
            raise DeviceError(f"{self.id}: cannot take the new weights in place: {exc}") from None
        with self._lock:
            self.emulator = Emulator(updated)

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


class HardwareModel(EmulatedModel):
    """The emulated model with its hardware part computed elsewhere (the simulated RTL, a board): the
    host quantizes the input exactly as the emulator does, the hardware turns raw integers into raw
    integers (``run_raw``), the host dequantizes them and runs the host part."""

    def run_raw(self, raw: np.ndarray) -> np.ndarray:
        """(batch, n_in) raw inputs to (batch, n_out) raw outputs, on the hardware."""
        raise NotImplementedError

    def hardware_output(self, x: np.ndarray) -> np.ndarray:
        reject_nan(np.asarray(x, dtype=np.float64).reshape(len(x), -1))  # NaN has no fixed-point value
        raw = np.asarray(self.emulator.quantize_input(x), dtype=np.int64).reshape(len(x), -1)
        scale = math.ldexp(1.0, -self.emulator.output_format.frac)
        value = np.multiply(self.run_raw(raw), scale, dtype=np.float64).astype(self.boundary_dtype)
        return value.T if self.transposed else value

    def update_params(self, source: str | Path | bytes) -> None:
        Model.update_params(self, source)  # the weights are constants of the design: rebuild


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
